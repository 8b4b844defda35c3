//! Why a model could not be found, read, stored or used, mapped to the SQLSTATE the client
//! sees. pgml.tune and pgml.transform wrap it unchanged, so the same failure reads the same
//! from both.

use pgmld_sql::{codes, SqlError};
use pgmld_upstream::PostgresError;

/// Errors of the model registry.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model reference written wrongly, e.g. `pgml:abc` (22023).
    #[error("{message}")]
    BadArgument {
        /// What is wrong, naming the value.
        message: String,
        /// How to write it.
        hint: String,
    },
    /// The calling role may not use this project, model or server file (42501).
    #[error("{}", .0.message)]
    Denied(SqlError),
    /// The model could not be found anywhere pgmld looked (58P01).
    #[error("{message}")]
    NotFound {
        /// The model name.
        message: String,
        /// Where pgmld looked and what each place said.
        detail: String,
    },
    /// Postgres refused one of pgmld's own statements.
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    /// A file operation broke, or stored files are inconsistent (XX000).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ModelError {
    /// A 22023 error with a hint.
    pub fn bad(message: impl Into<String>, hint: impl Into<String>) -> Self {
        ModelError::BadArgument { message: message.into(), hint: hint.into() }
    }

    /// A Postgres error with what pgmld was doing.
    pub fn pg(context: impl Into<String>, e: tokio_postgres::Error) -> Self {
        ModelError::Postgres(PostgresError::new(context, e))
    }
}

/// The hint of every 58P01: the four ways to name a model.
pub const NAMING_HINT: &str = "Pass a Hugging Face model id, a local directory holding config.json, a pgml project name, or pgml:<model id>.";

impl From<ModelError> for SqlError {
    fn from(e: ModelError) -> SqlError {
        let message = e.to_string();
        match e {
            ModelError::BadArgument { hint, .. } => {
                SqlError::new(codes::INVALID_PARAMETER_VALUE, message).with_hint(hint)
            }
            ModelError::Denied(e) => e,
            ModelError::NotFound { detail, .. } => {
                SqlError::new("58P01", message).with_detail(detail).with_hint(NAMING_HINT)
            }
            ModelError::Postgres(p) => SqlError::new(p.client_code(), message),
            ModelError::Internal(_) => SqlError::new(codes::INTERNAL_ERROR, message),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
