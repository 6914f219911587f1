//! PTY sessions (`protocol/compat/daytona.md` §10).
use super::Refusal;
use axum::response::IntoResponse;
use axum::response::Response;
fn todo() -> Response {
    Refusal::not_implemented("not yet").into_response()
}
pub(super) async fn list() -> Response {
    todo()
}
pub(super) async fn create_connect() -> Response {
    todo()
}
pub(super) async fn info() -> Response {
    todo()
}
pub(super) async fn kill() -> Response {
    todo()
}
pub(super) async fn connect() -> Response {
    todo()
}
pub(super) async fn resize() -> Response {
    todo()
}
