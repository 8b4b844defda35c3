//! Why a transform failed, mapped to the SQLSTATE the client sees.

use pgmld_models::ModelError;
use pgmld_sql::{codes, SqlError};

/// Errors of `pgml.transform`. Messages name the bad value.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// A task, argument or input outside what transform accepts (22023).
    #[error("{message}")]
    BadArgument {
        /// What is wrong, naming the value.
        message: String,
        /// How to fix it (empty for none).
        hint: String,
    },
    /// Malformed JSON text (22P02).
    #[error("{0}")]
    InvalidJson(String),
    /// A NULL input (22004).
    #[error("{0}")]
    NullInput(String),
    /// A task pgmld does not serve yet (0A000).
    #[error("{0}")]
    Unsupported(String),
    /// The model exists but was made for another task (22023, with where it came from).
    #[error("{message}")]
    WrongTask {
        /// Which model, which task.
        message: String,
        /// What pgmld found in it.
        detail: String,
        /// Which models fit the task.
        hint: String,
    },
    /// Finding or fetching the model failed (58P01 when it is nowhere, else as reported).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The model's files are there but do not load (XX000).
    #[error("loading model {model} failed: {message}")]
    Load {
        /// The model name.
        model: String,
        /// What went wrong.
        message: String,
    },
    /// The client cancelled or disconnected (57014).
    #[error("pgml.transform cancelled")]
    Cancelled,
    /// A worker or channel broke.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The hint of a text-classification call given a model of another kind.
pub const CLASSIFY_HINT: &str = "Use a model fine-tuned for text classification (pgml.tune with task => 'text-classification').";

impl TransformError {
    /// A 22023 error with a hint.
    pub fn bad(message: impl Into<String>, hint: impl Into<String>) -> Self {
        TransformError::BadArgument { message: message.into(), hint: hint.into() }
    }
}

impl From<TransformError> for SqlError {
    fn from(e: TransformError) -> SqlError {
        let message = e.to_string();
        match e {
            TransformError::BadArgument { hint, .. } => {
                let err = SqlError::new(codes::INVALID_PARAMETER_VALUE, message);
                if hint.is_empty() {
                    err
                } else {
                    err.with_hint(hint)
                }
            }
            TransformError::InvalidJson(_) => {
                SqlError::new(codes::INVALID_TEXT_REPRESENTATION, message)
            }
            TransformError::NullInput(_) => SqlError::new(codes::NULL_VALUE_NOT_ALLOWED, message)
                .with_hint("Filter NULLs out, e.g. WHERE text IS NOT NULL, or COALESCE them."),
            TransformError::Unsupported(_) => SqlError::new(codes::FEATURE_NOT_SUPPORTED, message),
            TransformError::WrongTask { detail, hint, .. } => {
                SqlError::new(codes::INVALID_PARAMETER_VALUE, message)
                    .with_detail(detail)
                    .with_hint(hint)
            }
            TransformError::Model(t) => t.into(),
            TransformError::Load { .. } => SqlError::new(codes::INTERNAL_ERROR, message),
            TransformError::Cancelled => {
                SqlError::new(codes::QUERY_CANCELED, "canceling statement due to user request")
            }
            TransformError::Internal(_) => SqlError::new(codes::INTERNAL_ERROR, message),
        }
    }
}
