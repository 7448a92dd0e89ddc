//! Token checks shared by the HTTP routes and the websocket handshakes.

use subtle::ConstantTimeEq;

/// Constant-time token comparison.
pub fn token_matches(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}
