//! Other SDKs' wire dialects, one folder each (`compat/<name>/`): routes,
//! the mapping onto the command manager, the vendor's wire types and its
//! error shapes. A dialect translates; it is built on the same pieces as
//! the native protocol and never re-implements them: the connection's
//! writer task, stdin pump and keepalive (`crate::conn`), the one error
//! type (`crate::Error`, mapped to the vendor's shape by the dialect), the
//! auth and Origin checks (a layer on every route) and the limits.
//!
//! - `langsmith`: the LangSmith sandbox client (`protocol/compat/langsmith.md`).

pub(crate) mod langsmith;
