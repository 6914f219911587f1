//! Sessions (`protocol/compat/daytona.md` §8, §9).
use super::Refusal;
use axum::response::IntoResponse;
use axum::response::Response;
fn todo() -> Response {
    Refusal::not_implemented("not yet").into_response()
}
pub(super) async fn list() -> Response {
    todo()
}
pub(super) async fn create() -> Response {
    todo()
}
pub(super) async fn get() -> Response {
    todo()
}
pub(super) async fn delete() -> Response {
    todo()
}
pub(super) async fn exec() -> Response {
    todo()
}
pub(super) async fn command() -> Response {
    todo()
}
pub(super) async fn logs() -> Response {
    todo()
}
pub(super) async fn input() -> Response {
    todo()
}
