//! Why a load failed, mapped to the SQLSTATE the client sees.

use pgmld_sql::{codes, SqlError};
use pgmld_upstream::PostgresError;

/// Errors of `pgml.load_dataset`. Messages name the source and what was tried.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The hub could not give us the dataset.
    #[error(transparent)]
    Hub(#[from] pgmld_hub::HubError),
    /// A local path that does not exist or holds no readable file.
    #[error("{0}")]
    MissingFile(String),
    /// A file that is not what its extension says, or that does not parse.
    #[error("{0}")]
    Malformed(String),
    /// A column type with no Postgres equivalent.
    #[error("{0}")]
    Unsupported(String),
    /// A bad argument or kwargs value.
    #[error("{0}")]
    BadArgument(String),
    /// A bad or missing argument, with a hint naming the kwargs that settle it (22023).
    #[error("{message}")]
    Invalid {
        /// What is wrong, naming the value.
        message: String,
        /// What to pass instead.
        hint: String,
    },
    /// The target table exists and `if_exists` is `error`, or cannot be replaced.
    #[error("{0}")]
    TableExists(String),
    /// Postgres refused something while loading.
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    /// The calling role may not do this (server files, `dataset_dirs`); says what it needs.
    #[error("{0}")]
    Denied(SqlError),
    /// The client cancelled the load.
    #[error("load_dataset cancelled by the client; the previous table is unchanged")]
    Cancelled,
    /// A reader thread or channel broke.
    #[error("internal error while loading: {0}")]
    Internal(String),
}

impl DatasetError {
    /// A 22023 with a hint.
    pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Self {
        DatasetError::Invalid { message: message.into(), hint: hint.into() }
    }

    /// A Postgres error with context.
    pub fn pg(context: impl Into<String>, e: tokio_postgres::Error) -> Self {
        DatasetError::Postgres(PostgresError::new(context, e))
    }
}

impl From<DatasetError> for SqlError {
    fn from(e: DatasetError) -> SqlError {
        let message = e.to_string();
        match e {
            DatasetError::Hub(h) => h.into(),
            DatasetError::MissingFile(_) => SqlError::new("58P01", message),
            DatasetError::Malformed(_) => SqlError::new("22P04", message),
            DatasetError::Unsupported(_) => SqlError::new(codes::FEATURE_NOT_SUPPORTED, message),
            DatasetError::BadArgument(_) => SqlError::new(codes::INVALID_PARAMETER_VALUE, message),
            DatasetError::Invalid { hint, .. } => {
                SqlError::new(codes::INVALID_PARAMETER_VALUE, message).with_hint(hint)
            }
            DatasetError::TableExists(_) => SqlError::new("42P07", message).with_hint(
                "Pass kwargs => '{\"if_exists\": \"replace\"}' or '{\"if_exists\": \"append\"}'.",
            ),
            DatasetError::Postgres(p) => SqlError::new(p.client_code(), message),
            DatasetError::Denied(e) => e,
            DatasetError::Cancelled => SqlError::new(codes::QUERY_CANCELED, message),
            DatasetError::Internal(_) => SqlError::new(codes::INTERNAL_ERROR, message),
        }
    }
}
