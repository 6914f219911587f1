use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK};

/// The two encodings of the protocol, chosen by WebSocket subprotocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Encoding {
    /// MessagePack maps with named fields in binary frames (default).
    #[default]
    MsgPack,
    /// JSON objects in text frames.
    Json,
}

impl Encoding {
    /// The subprotocol name that selects this encoding.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::MsgPack => SUBPROTOCOL_MSGPACK,
            Encoding::Json => SUBPROTOCOL_JSON,
        }
    }

    /// The encoding a subprotocol name selects, if it is one of ours.
    pub fn from_subprotocol(name: &str) -> Option<Encoding> {
        match name {
            SUBPROTOCOL_MSGPACK => Some(Encoding::MsgPack),
            SUBPROTOCOL_JSON => Some(Encoding::Json),
            _ => None,
        }
    }
}

/// A frame that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not valid MessagePack for a message.
    #[error("invalid MessagePack message: {0}")]
    MsgPack(#[from] rmp_serde::decode::Error),
    /// A MessagePack message followed by more bytes.
    #[error("trailing bytes after the MessagePack message")]
    TrailingBytes,
    /// Not valid JSON for a message.
    #[error("invalid JSON message: {0}")]
    Json(#[from] serde_json::Error),
}

/// Encodes a message. MessagePack uses named fields (maps), never positional
/// arrays, so clients in other languages read it by field name.
pub fn encode<T: Serialize>(msg: &T, enc: Encoding) -> Vec<u8> {
    // Serializing these types cannot fail: every map key is a string and
    // there are no non-finite floats, so an error here is a bug.
    match enc {
        Encoding::MsgPack => rmp_serde::to_vec_named(msg).expect("message serializes"),
        Encoding::Json => serde_json::to_vec(msg).expect("message serializes"),
    }
}

/// Encodes a message into a buffer pre-sized for `payload_hint` bytes of
/// payload, so a large `output` frame is written without regrowing.
pub fn encode_sized<T: Serialize>(msg: &T, enc: Encoding, payload_hint: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(payload_hint + 256);
    match enc {
        Encoding::MsgPack => {
            let mut ser = rmp_serde::Serializer::new(&mut buf).with_struct_map();
            msg.serialize(&mut ser).expect("message serializes");
        }
        Encoding::Json => serde_json::to_writer(&mut buf, msg).expect("message serializes"),
    }
    buf
}

/// Decodes a message.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], enc: Encoding) -> Result<T, DecodeError> {
    match enc {
        Encoding::MsgPack => {
            let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
            let msg = T::deserialize(&mut de)?;
            if de.get_ref().position() != bytes.len() as u64 {
                return Err(DecodeError::TrailingBytes);
            }
            Ok(msg)
        }
        Encoding::Json => Ok(serde_json::from_slice(bytes)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientMsg, ReqId};

    #[test]
    fn huge_array_header_does_not_allocate() {
        // fixmap{type: "list", id: array32 claiming 2^32-1 elements}
        let mut frame = vec![0x82, 0xa4, b't', b'y', b'p', b'e', 0xa4, b'l', b'i', b's', b't'];
        frame.extend_from_slice(&[0xa2, b'i', b'd', 0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert!(decode::<ClientMsg>(&frame, Encoding::MsgPack).is_err());
    }

    #[test]
    fn list_round_trips_in_both_encodings() {
        let msg = ClientMsg::List { id: ReqId(7), limit: Some(10), cursor: None };
        for enc in [Encoding::MsgPack, Encoding::Json] {
            let back: ClientMsg = decode(&encode(&msg, enc), enc).expect("decodes");
            assert_eq!(back, msg);
        }
    }
}
