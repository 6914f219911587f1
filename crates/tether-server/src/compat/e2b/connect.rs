//! The Connect protocol as the E2B SDKs speak it (`protocol/compat/e2b.md`
//! §6): the JSON codec only, unary calls as a bare JSON body, streams as
//! envelopes (`flags: u8`, `length: u32` big-endian, JSON) ending with one
//! end-of-stream envelope that carries the error, if any. Errors are
//! `{"code": "<connect code>", "message"}`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

/// The content type of a stream, exactly (Python compares it raw).
pub(crate) const STREAM_CONTENT_TYPE: &str = "application/connect+json";

/// An envelope's flag: the end of the stream.
const END_STREAM: u8 = 0x02;
/// An envelope's flag: a compressed message (never negotiated here).
const COMPRESSED: u8 = 0x01;

/// A Connect error code (the ones tether sends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    /// A malformed request, a bad argument.
    InvalidArgument,
    /// No such process, file or method target.
    NotFound,
    /// The thing exists already.
    AlreadyExists,
    /// Not allowed (a path outside the root, another user).
    PermissionDenied,
    /// A daemon limit.
    ResourceExhausted,
    /// Not in a state for this (stdin closed...).
    FailedPrecondition,
    /// A feature tether does not have.
    Unimplemented,
    /// Anything unexpected.
    Internal,
    /// The daemon is stopping or restarting.
    Unavailable,
    /// Output lost (a stream fell a whole ring behind).
    DataLoss,
    /// The deadline passed.
    DeadlineExceeded,
}

impl Code {
    /// The name on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::DeadlineExceeded => "deadline_exceeded",
        }
    }

    /// The HTTP status of a unary error with this code (Connect's table).
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// A Connect error: a code and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RpcError {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl RpcError {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> RpcError {
        RpcError { code, message: message.into() }
    }

    /// `{"code", "message"}`.
    pub(crate) fn to_json(&self) -> Value {
        json!({ "code": self.code.as_str(), "message": self.message })
    }
}

impl IntoResponse for RpcError {
    /// A unary error: the code's status and the JSON body.
    fn into_response(self) -> Response {
        let status = self.code.status();
        (status, [(header::CONTENT_TYPE, "application/json")], self.to_json().to_string()).into_response()
    }
}

/// A unary success: exactly 200, `application/json`, a JSON object.
pub(crate) fn unary_ok(message: Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], message.to_string()).into_response()
}

/// One message envelope.
pub(crate) fn envelope(message: &Value) -> Bytes {
    frame(0, message.to_string().as_bytes())
}

/// The end-of-stream envelope: `{}`, or `{"error": ...}`.
pub(crate) fn end_stream(error: Option<&RpcError>) -> Bytes {
    let body = match error {
        None => json!({}),
        Some(e) => json!({ "error": e.to_json() }),
    };
    frame(END_STREAM, body.to_string().as_bytes())
}

fn frame(flags: u8, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + data.len());
    b.put_u8(flags);
    b.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
    b.put_slice(data);
    b.freeze()
}

/// Reads envelopes out of a request body as it arrives: whole messages
/// (their JSON) as they complete, at most `max` bytes each.
#[derive(Debug, Default)]
pub(crate) struct EnvelopeReader {
    buf: BytesMut,
}

impl EnvelopeReader {
    /// Adds bytes of the body.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole message: `Ok(None)` until one is complete; the end of
    /// stream and compressed messages are errors from a client.
    pub(crate) fn next(&mut self, max: usize) -> Result<Option<Value>, RpcError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > max {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                format!("a request message of {len} bytes is over the limit of {max}"),
            ));
        }
        if flags & COMPRESSED != 0 {
            return Err(RpcError::new(Code::Internal, "compressed messages are not supported"));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let data = self.buf.split_to(5 + len).split_off(5);
        if flags & END_STREAM != 0 {
            return Err(RpcError::new(Code::InvalidArgument, "a client sent an end-of-stream envelope"));
        }
        serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| RpcError::new(Code::InvalidArgument, format!("a request message is not JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn envelopes_are_flag_length_json() {
        // The doc's example (§6.3): lengths are exact.
        let start = envelope(&json!({"event": {"start": {"pid": 4242}}}));
        assert_eq!(&start[..5], &[0, 0, 0, 0, 0x20]);
        assert_eq!(&start[5..], br#"{"event":{"start":{"pid":4242}}}"#);
        assert_eq!(&end_stream(None)[..], &[2, 0, 0, 0, 2, b'{', b'}']);
        let e = RpcError::new(Code::NotFound, "process with pid 4242 not found");
        let end = end_stream(Some(&e));
        assert_eq!(end[0], 2);
        let v: Value = serde_json::from_slice(&end[5..]).unwrap();
        assert_eq!(v, json!({"error": {"code": "not_found", "message": "process with pid 4242 not found"}}));
        assert_eq!(u32::from_be_bytes([end[1], end[2], end[3], end[4]]) as usize, end.len() - 5);
    }

    #[test]
    fn the_reader_takes_split_and_joined_envelopes() {
        let a = envelope(&json!({"a": 1}));
        let b = envelope(&json!({"b": [1, 2]}));
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        let mut r = EnvelopeReader::default();
        for byte in &all[..7] {
            r.feed(&[*byte]);
            assert_eq!(r.next(1024).unwrap(), None);
        }
        r.feed(&all[7..]);
        assert_eq!(r.next(1024).unwrap(), Some(json!({"a": 1})));
        assert_eq!(r.next(1024).unwrap(), Some(json!({"b": [1, 2]})));
        assert_eq!(r.next(1024).unwrap(), None);
        assert!(r.buf.is_empty());
    }

    #[test]
    fn the_reader_refuses_what_a_client_must_not_send() {
        let mut r = EnvelopeReader::default();
        r.feed(&[1, 0, 0, 0, 2, b'{', b'}']);
        assert_eq!(r.next(1024).unwrap_err().code, Code::Internal);
        let mut r = EnvelopeReader::default();
        r.feed(&[0, 0, 1, 0, 0]);
        assert_eq!(r.next(1024).unwrap_err().code, Code::ResourceExhausted);
        let mut r = EnvelopeReader::default();
        r.feed(&[0, 0, 0, 0, 3, b'n', b'o', b'!']);
        assert_eq!(r.next(1024).unwrap_err().code, Code::InvalidArgument);
    }

    #[test]
    fn unary_errors_take_connects_statuses() {
        let r = RpcError::new(Code::NotFound, "x").into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(Code::ResourceExhausted.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(Code::Unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
