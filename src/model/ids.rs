//! Identifier rules and interface naming.
//!
//! Ids become file names (`/run/netns/<prefix><id>`) and interface names, so
//! they are restricted: 1 to 64 characters of `A-Z a-z 0-9 _ . -`, not
//! starting with `.` or `-`.

use super::error::{ModelError, Result};

/// Longest id accepted.
pub const MAX_ID_LEN: usize = 64;
/// Longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// Longest tag accepted.
pub const MAX_TAG_LEN: usize = 256;

/// Checks an id; `what` names the field in the error ("CEN id", ...).
pub fn check_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(ModelError::bad_request(format!("invalid {what} '': ids are 1 to 64 characters")));
    }
    if id.len() > MAX_ID_LEN {
        return Err(ModelError::bad_request(format!(
            "invalid {what} '{}…': longer than {MAX_ID_LEN} characters",
            id.chars().take(16).collect::<String>()
        )));
    }
    if let Some(bad) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(ModelError::bad_request(format!(
            "invalid {what} '{}': character {bad:?} is not allowed (use A-Z a-z 0-9 _ . -)",
            id.escape_debug()
        )));
    }
    if id.starts_with('.') || id.starts_with('-') {
        return Err(ModelError::bad_request(format!("invalid {what} '{id}': must not start with '.' or '-'")));
    }
    Ok(())
}

/// Checks a container tag: up to 256 characters, no control characters.
pub fn check_tag(tag: &str) -> Result<()> {
    if tag.len() > MAX_TAG_LEN {
        return Err(ModelError::bad_request(format!("invalid tag: longer than {MAX_TAG_LEN} bytes")));
    }
    if tag.chars().any(char::is_control) {
        return Err(ModelError::bad_request(format!(
            "invalid tag '{}': control characters are not allowed",
            tag.escape_debug()
        )));
    }
    Ok(())
}

/// 64-bit FNV-1a: small, stable across builds and platforms.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The interface name of a CEN inside a container: the CEN id itself when it
/// fits the kernel's 15 characters, else the first 9 characters, `_`, and 5
/// hex digits of a hash of the whole id (deterministic, and distinct ids that
/// share a prefix get distinct names with overwhelming probability).
pub fn interface_name(cen_id: &str) -> String {
    if cen_id.len() <= MAX_IFNAME_LEN && !RESERVED_IFNAMES.contains(&cen_id) {
        return cen_id.to_string();
    }
    let hash = fnv1a(cen_id.as_bytes()) & 0xf_ffff;
    format!("{}_{hash:05x}", &cen_id[..cen_id.len().min(9)])
}

/// Names every namespace already has: a CEN called so gets the hashed form.
pub const RESERVED_IFNAMES: [&str; 1] = ["lo"];

/// Container ids that cannot be realized: the fabric namespace is
/// `<prefix>fabric`, beside the containers' `<prefix><id>`.
pub const RESERVED_CONTAINER_IDS: [&str; 1] = ["fabric"];

/// Checks a container id: the id rules, and not a reserved name.
pub fn check_container_id(id: &str) -> Result<()> {
    check_id("container id", id)?;
    if RESERVED_CONTAINER_IDS.contains(&id) {
        return Err(ModelError::bad_request(format!(
            "invalid container id '{id}': the name is reserved (it would share the fabric namespace's name)"
        )));
    }
    Ok(())
}

/// Resolves an optional `hostId` argument to a checked host id.
pub fn check_host_arg<'a>(given: Option<&'a str>, default: &'a str) -> Result<&'a str> {
    let host = given.unwrap_or(default);
    check_id("host id", host)?;
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids() {
        for id in ["a", "cen1", "A-b_c.d", "0", "x".repeat(64).as_str(), "c.-_"] {
            assert!(check_id("id", id).is_ok(), "{id} should be valid");
        }
    }

    #[test]
    fn invalid_ids_are_named() {
        for id in ["", ".a", "-a", "a b", "a/b", "é", "a:b", &"x".repeat(65)] {
            let e = check_id("CEN id", id).unwrap_err();
            assert_eq!(e.code, super::super::error::ErrorCode::BadRequest);
            assert!(e.message.contains("CEN id"), "{}", e.message);
        }
    }

    #[test]
    fn interface_names_fit_and_are_deterministic() {
        assert_eq!(interface_name("cen1"), "cen1");
        assert_eq!(interface_name("abcdefghijklmno"), "abcdefghijklmno");
        let long = interface_name("abcdefghijklmnop");
        assert_eq!(long.len(), 15);
        assert!(long.starts_with("abcdefghi_"));
        assert_eq!(long, interface_name("abcdefghijklmnop"));
        assert_ne!(interface_name("abcdefghijklmnop"), interface_name("abcdefghijklmnoq"));
        let lo = interface_name("lo");
        assert!(lo.starts_with("lo_") && lo.len() == 8, "{lo}");
        assert!(check_container_id("fabric").is_err());
        assert!(check_container_id("fabric2").is_ok());
    }

    #[test]
    fn tags() {
        assert!(check_tag("web tier").is_ok());
        assert!(check_tag("a\nb").is_err());
        assert!(check_tag(&"t".repeat(257)).is_err());
    }
}
