//! Bearer-token, Host and Origin checks.

use std::fmt;
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::accept::ConnHandle;

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

/// The token the daemon accepts, replaceable while it serves (a rotated
/// token file). Cheap to clone: clones share it, so a configuration cloned
/// for a restart in the same process follows a later rotation too.
#[derive(Clone)]
pub struct Tokens(Arc<RwLock<Epoch>>);

/// One token's time of validity.
struct Epoch {
    /// `None`: every request is refused.
    token: Option<Token>,
    /// Cancelled when this token is replaced: connections and event streams
    /// that authenticated with it end.
    revoked: CancellationToken,
}

/// In an authenticated request's extensions: cancelled when the token it
/// authenticated with is revoked. Long-lived connections select on it and
/// close with 1008.
#[derive(Clone, Debug)]
pub(crate) struct Revocation(pub(crate) CancellationToken);

impl Tokens {
    /// Accepts `token`.
    pub fn new(token: Token) -> Tokens {
        Tokens(Arc::new(RwLock::new(Epoch { token: Some(token), revoked: CancellationToken::new() })))
    }

    /// Accepts `token` from now on instead of the current one, which is
    /// refused at once; connections and event streams that authenticated
    /// with it are ended (WebSockets with close code 1008). `false` (and
    /// nothing revoked) if `token` is the one accepted already.
    pub fn set(&self, token: Token) -> bool {
        self.replace(Some(token))
    }

    /// Refuses every request (and ends everything authenticated) until
    /// [`Tokens::set`].
    pub fn revoke(&self) {
        self.replace(None);
    }

    fn replace(&self, token: Option<Token>) -> bool {
        let old = {
            let mut e = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let same = match (&e.token, &token) {
                (Some(a), Some(b)) => a.matches(b.expose()),
                (None, None) => true,
                _ => false,
            };
            if same {
                return false;
            }
            std::mem::replace(&mut *e, Epoch { token, revoked: CancellationToken::new() })
        };
        old.revoked.cancel();
        true
    }

    /// The revocation of the current token, if one of `candidates` is it.
    fn check<'a>(&self, mut candidates: impl Iterator<Item = &'a str>) -> Option<Revocation> {
        let e = self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let token = e.token.as_ref()?;
        candidates.any(|c| token.matches(c)).then(|| Revocation(e.revoked.clone()))
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tokens(<redacted>)")
    }
}

/// Middleware on every route: the `Host` header must name this daemon (see
/// [`check_host`]), so a page on a rebound DNS name cannot reach it.
pub(crate) async fn require_host(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Err(why) = check_host(req.headers(), &st.cfg.allowed_hosts) {
        tracing::warn!(why, "refused: bad Host");
        metrics::counter!("tether_auth_rejected_total", "reason" => "host").increment(1);
        return refuse(req.uri().path(), StatusCode::FORBIDDEN, "forbidden", why);
    }
    next.run(req).await
}

/// Middleware: Origin allow-list, then the bearer token. An authenticated
/// request marks its connection authenticated (it is no longer subject to
/// the limits on unauthenticated connections) and carries the token's
/// [`Revocation`]; an event stream it answers ends when that fires.
pub(crate) async fn require(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    if let Err(why) = check_origin(headers, &st.cfg.allowed_origins) {
        tracing::warn!(why, "refused: bad Origin");
        metrics::counter!("tether_auth_rejected_total", "reason" => "origin").increment(1);
        return refuse(req.uri().path(), StatusCode::FORBIDDEN, "forbidden", why);
    }
    let Some(revocation) = st.cfg.token.check(presented_tokens(headers)) else {
        tracing::warn!(path = %req.uri().path(), "refused: missing or wrong token");
        metrics::counter!("tether_auth_rejected_total", "reason" => "token").increment(1);
        return refuse(
            req.uri().path(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
        );
    };
    if let Some(conn) = req.extensions().get::<ConnHandle>() {
        conn.authenticated();
    }
    req.extensions_mut().insert(revocation.clone());
    let resp = next.run(req).await;
    let is_stream = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(b"text/event-stream") || v.as_bytes() == b"application/connect+json"
    });
    if !is_stream {
        return resp;
    }
    // An event stream lives as long as a WebSocket: it ends with its token.
    let revoked = revocation.0.cancelled_owned();
    resp.map(|body| axum::body::Body::from_stream(body.into_data_stream().take_until(revoked)))
}

fn refuse(path: &str, status: StatusCode, code: &str, message: &str) -> Response {
    // A dialect's SDK raises its own typed error only for its own shape.
    let mut resp = crate::compat::refusal(path, status, message).unwrap_or_else(|| {
        (status, axum::Json(serde_json::json!({ "code": code, "message": message }))).into_response()
    });
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    resp
}

/// Tokens offered in `Authorization: Bearer`, in the WebSocket subprotocol
/// list (`tether.token.<TOKEN>`), in `X-Api-Key` or in `X-Access-Token`.
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
    // The LangSmith sandbox client's and the E2B control plane's header.
    let api_key = headers.get_all("x-api-key").iter().filter_map(|v| v.to_str().ok()).map(str::trim);
    // E2B's envd access token (`/compat/e2b`).
    let access = headers.get_all("x-access-token").iter().filter_map(|v| v.to_str().ok()).map(str::trim);
    bearer.chain(proto).chain(api_key).chain(access)
}

/// A request without `Origin` (a non-browser client) passes. With one, its
/// host must equal the `Host` header (same origin) or the origin must be in
/// the allow-list (normalised by `config::normalize_origin`). More than
/// one `Origin` is refused: no browser sends that.
fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), &'static str> {
    let mut all = headers.get_all(header::ORIGIN).iter();
    let Some(origin) = all.next() else {
        return Ok(());
    };
    if all.next().is_some() {
        return Err("more than one Origin header");
    }
    let origin = origin.to_str().map_err(|_| "Origin is not text")?;
    let bare = origin.strip_suffix('/').unwrap_or(origin);
    if allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(bare)) {
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

/// A request's `Host` (its name, without the port) must be an IP literal,
/// `localhost`, or in the allow-list (`*`: any): a browser on a page whose
/// DNS name was rebound to this host sends that name, and is refused. A
/// request without `Host` passes (browsers always send one); more than one
/// is refused.
fn check_host(headers: &HeaderMap, allowed: &[String]) -> Result<(), &'static str> {
    let mut all = headers.get_all(header::HOST).iter();
    let Some(host) = all.next() else {
        return Ok(());
    };
    if all.next().is_some() {
        return Err("more than one Host header");
    }
    let host = host.to_str().map_err(|_| "Host is not text")?;
    let name = host_name(host).ok_or("Host is malformed")?;
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.parse::<std::net::IpAddr>().is_ok()
        || name == "localhost"
        || allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(&name))
    {
        Ok(())
    } else {
        Err("Host is not an IP address, localhost or an allowed host (--allow-host)")
    }
}

/// The name in a `Host` value: without a port, an IPv6 literal without its
/// brackets.
fn host_name(host: &str) -> Option<&str> {
    if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        return (after.is_empty() || after.strip_prefix(':').is_some_and(is_port)).then_some(v6);
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return None,
        None => host,
    };
    (!name.is_empty()).then_some(name)
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
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
        // Every Origin counts: a second one is refused, whatever the first.
        let two = headers(&[
            (header::ORIGIN, "http://127.0.0.1:7070"),
            (header::ORIGIN, "http://evil.example"),
            (header::HOST, "127.0.0.1:7070"),
        ]);
        assert!(check_origin(&two, &[]).is_err());
        // A browser's Origin never has a path; a trailing slash still matches.
        let slash = headers(&[(header::ORIGIN, "http://app.example/"), (header::HOST, "127.0.0.1")]);
        assert!(check_origin(&slash, &["http://app.example".to_owned()]).is_ok());
    }

    #[test]
    fn host_must_be_an_ip_localhost_or_allowed() {
        let host = |h: &str| headers(&[(header::HOST, h)]);
        for ok in
            ["127.0.0.1:7070", "127.0.0.1", "[::1]:7070", "[::1]", "localhost:7070", "LOCALHOST.", "10.1.2.3"]
        {
            assert!(check_host(&host(ok), &[]).is_ok(), "{ok}");
        }
        for bad in ["evil.example:7070", "evil.example", "127.0.0.1.evil.example", "[::1", "a:b", ":7070"] {
            assert!(check_host(&host(bad), &[]).is_err(), "{bad}");
        }
        assert!(check_host(&host("box.internal:7070"), &["box.internal".to_owned()]).is_ok());
        assert!(check_host(&host("anything"), &["*".to_owned()]).is_ok());
        assert!(check_host(&HeaderMap::new(), &[]).is_ok());
        let two = headers(&[(header::HOST, "127.0.0.1"), (header::HOST, "evil.example")]);
        assert!(check_host(&two, &[]).is_err());
    }

    #[test]
    fn a_new_token_revokes_the_old_one() {
        let tokens = Tokens::new(Token::new("old-token-0123456789"));
        let old = tokens.check(["old-token-0123456789"].into_iter()).unwrap();
        assert!(!tokens.set(Token::new("old-token-0123456789")), "the same token is no rotation");
        assert!(!old.0.is_cancelled());
        assert!(tokens.set(Token::new("new-token-0123456789")));
        assert!(old.0.is_cancelled());
        assert!(tokens.check(["old-token-0123456789"].into_iter()).is_none());
        assert!(tokens.check(["new-token-0123456789"].into_iter()).is_some());
        tokens.revoke();
        assert!(tokens.check(["new-token-0123456789"].into_iter()).is_none());
    }
}
