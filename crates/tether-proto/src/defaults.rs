//! Serde defaults and skip predicates the message types share, so that a
//! frame leaves out what the other side assumes when a field is absent.

use crate::ReqId;

pub(crate) fn yes() -> bool {
    true
}

pub(crate) fn is_true(b: &bool) -> bool {
    *b
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn is_zero_id(id: &ReqId) -> bool {
    id.0 == 0
}
