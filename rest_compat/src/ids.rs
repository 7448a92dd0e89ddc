//! The id rule of the legacy contract: 1 to 64 characters of
//! `A-Z a-z 0-9 _ . -`, not starting with `.` or `-` (ids become file and
//! interface names). Checked here for path segments and body fields, so
//! that an invalid id is a 400 naming the field even where the GraphQL
//! operation is a lookup that would just answer null.

use crate::error::CompatError;

/// Longest id accepted.
pub const MAX_ID_LEN: usize = 64;

/// Checks an id; `what` names it in the message ("CEN id", "cenList[0].cenID").
pub fn check_id(what: &str, id: &str) -> Result<(), CompatError> {
    if id.is_empty() {
        return Err(CompatError::bad_request(format!("invalid {what} '': ids are 1 to {MAX_ID_LEN} characters")));
    }
    if id.len() > MAX_ID_LEN {
        let head: String = id.chars().take(16).collect();
        return Err(CompatError::bad_request(format!(
            "invalid {what} '{}…': longer than {MAX_ID_LEN} characters",
            head.escape_debug()
        )));
    }
    if let Some(bad) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(CompatError::bad_request(format!(
            "invalid {what} '{}': character {bad:?} is not allowed (use A-Z a-z 0-9 _ . -)",
            id.escape_debug()
        )));
    }
    if id.starts_with('.') || id.starts_with('-') {
        return Err(CompatError::bad_request(format!("invalid {what} '{id}': must not start with '.' or '-'")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid() {
        for id in ["a", "cen1", "A-b_c.d", "0", &"x".repeat(64), "make"] {
            assert!(check_id("id", id).is_ok(), "{id}");
        }
    }

    #[test]
    fn invalid_named() {
        for id in ["", ".a", "-a", "a b", "a/b", "é", "a:b", &"x".repeat(65), "a\"b"] {
            let e = check_id("CEN id", id).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(e.message.contains("CEN id"), "{}", e.message);
        }
    }
}
