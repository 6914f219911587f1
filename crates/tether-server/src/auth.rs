//! Bearer-token and Origin checks.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::AppState;

/// A secret bearer token. Its `Debug` and `Display` never show it, so it
/// cannot end up in a log line by accident.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl Token {
    /// Wraps a token string.
    pub fn new(s: impl Into<String>) -> Token {
        Token(Arc::from(s.into()))
    }

    /// The secret itself, for writing to the token file or a client header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison.
    fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Middleware: Origin allow-list, then the bearer token.
pub(crate) async fn require(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if let Err(why) = check_origin(headers, &st.cfg.allowed_origins) {
        tracing::warn!(why, "refused: bad Origin");
        return refuse(StatusCode::FORBIDDEN, "forbidden", why);
    }
    if !presented_tokens(headers).any(|t| st.cfg.token.matches(t)) {
        tracing::warn!(path = %req.uri().path(), "refused: missing or wrong token");
        return refuse(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token");
    }
    next.run(req).await
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let mut resp =
        (status, axum::Json(serde_json::json!({ "code": code, "message": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    resp
}

/// Tokens offered in `Authorization: Bearer`, in the WebSocket subprotocol
/// list (`tether.token.<TOKEN>`) or in `X-Api-Key`.
fn presented_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let proto = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter_map(|p| p.strip_prefix(tether_proto::TOKEN_SUBPROTOCOL_PREFIX));
    // The LangSmith sandbox client's header (`/compat/langsmith`).
    let api_key = headers.get_all("x-api-key").iter().filter_map(|v| v.to_str().ok()).map(str::trim);
    bearer.chain(proto).chain(api_key)
}

/// A request without `Origin` (a non-browser client) passes. With one, its
/// host must equal the `Host` header (same origin) or the origin must be in
/// the allow-list.
fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), &'static str> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| "Origin is not text")?;
    if allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin)) {
        return Ok(());
    }
    let (origin_host, default_port) = match origin.strip_prefix("http://") {
        Some(h) => (h, "80"),
        None => (origin.strip_prefix("https://").ok_or("Origin is not http(s)")?, "443"),
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or("no Host header to compare the Origin with")?;
    // Compare host and port, filling in the scheme's default port where
    // either side leaves it out.
    let with_port = |h: &str| {
        let has_port = h.rsplit_once(':').is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
            && !h.ends_with(']');
        if has_port { h.to_ascii_lowercase() } else { format!("{}:{default_port}", h.to_ascii_lowercase()) }
    };
    if with_port(origin_host) == with_port(host) {
        Ok(())
    } else {
        Err("Origin does not match the daemon's host or the allow-list")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn tokens_from_header_and_subprotocol() {
        let h = headers(&[
            (header::AUTHORIZATION, "Bearer abc"),
            (header::SEC_WEBSOCKET_PROTOCOL, "tether.v1, tether.token.xyz"),
        ]);
        let got: Vec<&str> = presented_tokens(&h).collect();
        assert_eq!(got, ["abc", "xyz"]);
        assert!(Token::new("xyz").matches("xyz"));
        assert!(!Token::new("xyz").matches("xy"));
        assert_eq!(format!("{:?}", Token::new("secret")), "Token(<redacted>)");
    }

    #[test]
    fn origin_must_be_same_host_or_allowed() {
        let same = headers(&[(header::ORIGIN, "http://127.0.0.1:7070"), (header::HOST, "127.0.0.1:7070")]);
        assert!(check_origin(&same, &[]).is_ok());
        let evil = headers(&[(header::ORIGIN, "http://evil.example"), (header::HOST, "127.0.0.1:7070")]);
        assert!(check_origin(&evil, &[]).is_err());
        assert!(check_origin(&evil, &["http://evil.example".to_owned()]).is_ok());
        assert!(check_origin(&headers(&[(header::HOST, "x")]), &[]).is_ok());
        let default_port =
            headers(&[(header::ORIGIN, "http://example.com"), (header::HOST, "example.com:80")]);
        assert!(check_origin(&default_port, &[]).is_ok());
        let other_port =
            headers(&[(header::ORIGIN, "http://example.com:8080"), (header::HOST, "example.com")]);
        assert!(check_origin(&other_port, &[]).is_err());
    }
}
