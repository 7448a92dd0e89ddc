//! The one error type of the model, carrying the class of failure that the
//! API layers map to `extensions.code` (GraphQL) and HTTP statuses (compat).

use std::fmt;

/// Class of a failure, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    NotFound,
    Conflict,
    Unauthenticated,
    /// The request is understood but refused where it comes from (a
    /// foreign `Origin`, a `Host` that does not name the server).
    Forbidden,
    /// What was asked for is no longer kept (e.g. changes older than the
    /// change log holds): re-read the current state.
    Gone,
    /// The shared store (etcd) cannot be reached: the change was not made
    /// (or not acknowledged). Reads still answer from the last known state;
    /// retry later.
    Unavailable,
    /// The shared store stopped answering a change and could not be asked
    /// whether it committed: the message names the revision and commit id
    /// to look for in the change log. Never used for a change known to be
    /// committed or known not to be.
    UnknownOutcome,
    Internal,
}

impl ErrorCode {
    /// The `extensions.code` string of this class.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::Gone => "GONE",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::UnknownOutcome => "UNKNOWN_OUTCOME",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// Every class, in the order of [`ErrorCode::as_str`].
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::BadRequest,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::Gone,
        ErrorCode::Unavailable,
        ErrorCode::UnknownOutcome,
        ErrorCode::Internal,
    ];

    /// The class of an `extensions.code` string (`None` for a code this
    /// server does not send).
    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with its class and a message naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    pub code: ErrorCode,
    pub message: String,
}

impl ModelError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { code: ErrorCode::BadRequest, message: message.into() }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { code: ErrorCode::NotFound, message: message.into() }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self { code: ErrorCode::Conflict, message: message.into() }
    }
    pub fn gone(message: impl Into<String>) -> Self {
        Self { code: ErrorCode::Gone, message: message.into() }
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { code: ErrorCode::Unavailable, message: message.into() }
    }
    pub fn unknown_outcome(message: impl Into<String>) -> Self {
        Self { code: ErrorCode::UnknownOutcome, message: message.into() }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self { code: ErrorCode::Internal, message: message.into() }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ModelError {}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::Forbidden.as_str(), "FORBIDDEN");
        assert_eq!(ErrorCode::parse("NOPE"), None);
    }
}
