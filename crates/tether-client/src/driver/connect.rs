//! Opening a connection (the WebSocket URL, the token, the `hello`) and
//! sending one frame on it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tether_proto::{self as proto, ClientMsg, ServerMsg};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::Ws;
use crate::client::ClientOptions;
use crate::error::ClientError;

/// The WebSocket URL for a daemon URL: `http://h:p` -> `ws://h:p/v1/ws`,
/// and behind a proxy's path prefix `https://h/s/a` -> `wss://h/s/a/v1/ws`;
/// a URL that already ends in `/v1/ws` is taken as it is.
pub(crate) fn ws_url(url: &str) -> Result<String, ClientError> {
    let bad = |why: &str| ClientError::BadUrl { url: url.to_owned(), why: why.to_owned() };
    let mut u = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let scheme = match u.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return Err(bad("scheme must be http, https, ws or wss")),
    };
    u.set_scheme(scheme).map_err(|()| bad("cannot set scheme"))?;
    if !u.path().trim_end_matches('/').ends_with("/v1/ws") {
        let path = format!("{}/v1/ws", u.path().trim_end_matches('/'));
        u.set_path(&path);
    }
    Ok(u.to_string())
}

/// Opens a connection and waits for the daemon's `hello`.
pub(crate) async fn connect(url: &str, token: &str, opts: &ClientOptions) -> Result<Ws, ClientError> {
    let conn_err = |why: String| ClientError::Connect { url: url.to_owned(), why };
    let mut req = url.into_client_request().map_err(|e| conn_err(e.to_string()))?;
    let auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ClientError::BadUrl { url: url.to_owned(), why: "token is not header-safe".into() })?;
    req.headers_mut().insert(header::AUTHORIZATION, auth);
    req.headers_mut()
        .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(proto::SUBPROTOCOL_MSGPACK));
    let mut cfg = WebSocketConfig::default();
    cfg.max_message_size = Some(64 << 20);
    cfg.max_frame_size = Some(64 << 20);
    let tls = if url.starts_with("wss:") {
        Some(tokio_tungstenite::Connector::Rustls(crate::client_config(opts.ca_cert.as_deref())?))
    } else {
        None
    };
    let fut = tokio_tungstenite::connect_async_tls_with_config(req, Some(cfg), true, tls);
    let (mut ws, _) = match tokio::time::timeout(opts.connect_timeout, fut).await {
        Err(_) => return Err(conn_err("timed out".into())),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            return Err(match resp.status() {
                StatusCode::UNAUTHORIZED => ClientError::Unauthorized,
                StatusCode::FORBIDDEN => ClientError::Forbidden,
                s => conn_err(format!("HTTP {s}")),
            });
        }
        Ok(Err(e)) => return Err(conn_err(e.to_string())),
        Ok(Ok(x)) => x,
    };
    let hello = tokio::time::timeout(opts.connect_timeout, ws.next()).await;
    match hello {
        Ok(Some(Ok(Message::Binary(b)))) => match proto::decode::<ServerMsg>(&b, proto::Encoding::MsgPack) {
            Ok(ServerMsg::Hello { version, .. }) if version == proto::PROTOCOL_VERSION => Ok(ws),
            Ok(ServerMsg::Hello { version, .. }) => {
                Err(ClientError::Protocol(format!("daemon speaks protocol v{version}")))
            }
            _ => Err(ClientError::Protocol("first frame is not hello".into())),
        },
        Err(_) => Err(conn_err("no hello from the daemon".into())),
        Ok(_) => Err(conn_err("connection closed before hello".into())),
    }
}

/// A default `Duration` for options.
pub(crate) const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub(super) async fn send(ws: &mut Ws, msg: &ClientMsg) -> Result<(), tungstenite::Error> {
    ws.send(Message::Binary(proto::encode(msg, proto::Encoding::MsgPack).into())).await
}

#[cfg(test)]
mod tests {
    use super::ws_url;

    #[test]
    fn ws_urls_keep_a_path_prefix() {
        for (given, want) in [
            ("http://h:7070", "ws://h:7070/v1/ws"),
            ("http://h:7070/", "ws://h:7070/v1/ws"),
            ("https://h/s/a", "wss://h/s/a/v1/ws"),
            ("https://h/s/a/", "wss://h/s/a/v1/ws"),
            ("ws://h/s/a/v1/ws", "ws://h/s/a/v1/ws"),
            ("wss://h/v1/ws?x=1", "wss://h/v1/ws?x=1"),
        ] {
            assert_eq!(ws_url(given).ok().as_deref(), Some(want), "{given}");
        }
        assert!(ws_url("ftp://h").is_err());
    }
}
