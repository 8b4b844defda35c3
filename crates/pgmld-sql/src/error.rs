//! The error every pgml call reports: a Postgres error with SQLSTATE, message, detail, hint.

use std::fmt;

/// A Postgres-style error. The proxy turns it into an `ErrorResponse`, so its fields follow
/// the protocol's: a five-character SQLSTATE, a one-line message, optional detail and hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    /// SQLSTATE, e.g. `42883` (undefined function). Clients branch on it.
    pub code: &'static str,
    /// Primary message naming the bad value.
    pub message: String,
    /// Optional detail: what was tried, where it looked.
    pub detail: Option<String>,
    /// Optional hint: how to fix it.
    pub hint: Option<String>,
    /// 1-based character position in the statement the error points at (psql shows it
    /// as `LINE 1: ... ^`).
    pub position: Option<usize>,
}

impl SqlError {
    /// An error with code and message only.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        SqlError { code, message: message.into(), detail: None, hint: None, position: None }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Points the error at a 1-based character position.
    pub fn at(mut self, position: usize) -> Self {
        self.position = Some(position);
        self
    }

    /// Adds a detail line.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for SqlError {}

/// SQLSTATE codes pgmld raises, named as in Postgres' errcodes.txt.
pub mod codes {
    /// A function with this name or these arguments does not exist.
    pub const UNDEFINED_FUNCTION: &str = "42883";
    /// Statement syntax pgmld could not read around a pgml call.
    pub const SYNTAX_ERROR: &str = "42601";
    /// A form of call pgmld does not serve (yet).
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// Bad text for a typed value (json, integer, array).
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    /// An argument value outside what the function accepts.
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    /// A NULL where a value is required.
    pub const NULL_VALUE_NOT_ALLOWED: &str = "22004";
    /// A value that cannot be converted to the parameter's type.
    pub const DATATYPE_MISMATCH: &str = "42804";
    /// A parameter placeholder with no bound value.
    pub const UNDEFINED_PARAMETER: &str = "42P02";
    /// Wire-level trouble with a parameter's binary value.
    pub const INVALID_BINARY_REPRESENTATION: &str = "22P03";
    /// A cursor cannot do that in its state (backward fetch on a NO SCROLL cursor).
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
    /// The job was cancelled by the client.
    pub const QUERY_CANCELED: &str = "57014";
    /// Something inside pgmld failed.
    pub const INTERNAL_ERROR: &str = "XX000";
    /// The calling role lacks a privilege (schema USAGE, function EXECUTE, a project's
    /// owner role, server files).
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    /// A schema that does not exist (`pgml` dropped).
    pub const INVALID_SCHEMA_NAME: &str = "3F000";
}
