//! [`Http`]: authorised requests to a daemon's HTTP routes (files,
//! one-shot runs), each bounded by [`LIMIT`](crate::LIMIT).

use tether_proto::Encoding;

use crate::bounded;

/// A daemon's HTTP routes, reached with its token.
pub struct Http {
    c: reqwest::Client,
    base: String,
    token: String,
}

/// A plain `reqwest::Client`. The workspace builds reqwest without a TLS
/// provider of its own (tether's is rustls' ring, installed by the CLI at
/// start), and reqwest wants one even for `http://`: this installs it first.
pub fn http_client() -> reqwest::Client {
    http_client_builder().build().expect("a plain HTTP client")
}

/// [`http_client`]'s builder.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

impl Http {
    /// The daemon at `base` (`http://host:port`), with `token`.
    pub fn new(base: &str, token: &str) -> Http {
        Http { c: http_client(), base: base.to_owned(), token: token.to_owned() }
    }

    /// The underlying client, for requests without the token.
    pub fn client(&self) -> &reqwest::Client {
        &self.c
    }

    /// A request to `route` with the query `q` and the bearer token.
    pub fn req(&self, m: reqwest::Method, route: &str, q: &[(&str, &str)]) -> reqwest::RequestBuilder {
        self.c.request(m, format!("{}{route}", self.base)).bearer_auth(&self.token).query(q)
    }

    /// Writes a file (`PUT /v1/files`, making parents); returns the status.
    pub async fn put(&self, path: &str, data: Vec<u8>) -> u16 {
        let r =
            self.req(reqwest::Method::PUT, "/v1/files", &[("path", path), ("parents", "true")]).body(data);
        bounded(r.send()).await.unwrap().status().as_u16()
    }

    /// Reads a file (`GET /v1/files`): the status and the body.
    pub async fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let r = bounded(self.req(reqwest::Method::GET, "/v1/files", &[("path", path)]).send()).await.unwrap();
        (r.status().as_u16(), bounded(r.bytes()).await.unwrap().to_vec())
    }

    /// The status and the JSON body (`null` if it is not JSON).
    pub async fn json(
        &self,
        m: reqwest::Method,
        route: &str,
        q: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let r = bounded(self.req(m, route, q).send()).await.unwrap();
        let status = r.status().as_u16();
        let body = bounded(r.bytes()).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    /// Status, headers and the whole body (a body cut mid-way is an error).
    pub async fn fetch(
        &self,
        route: &str,
        q: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, reqwest::Result<bytes::Bytes>) {
        let r = bounded(self.req(reqwest::Method::GET, route, q).send()).await.unwrap();
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        (status, headers, bounded(r.bytes()).await)
    }

    /// Posts `body` encoded as `enc`; returns the status, the raw body and
    /// its content type.
    pub async fn post<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
        enc: Encoding,
    ) -> (u16, Vec<u8>, String) {
        let ct = match enc {
            Encoding::Json => "application/json",
            Encoding::MsgPack => "application/msgpack",
        };
        let r = bounded(
            self.c
                .post(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .header("content-type", ct)
                .body(tether_proto::encode(body, enc))
                .send(),
        )
        .await
        .unwrap();
        let status = r.status().as_u16();
        let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        (status, bounded(r.bytes()).await.unwrap().to_vec(), ct)
    }
}
