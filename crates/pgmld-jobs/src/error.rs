//! Why a queue operation failed.

use pgmld_upstream::PostgresError;

/// Errors of the job queue.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Postgres refused one of the queue's statements, or the connection broke.
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    /// A job's device request is not one of `any`, `cpu`, `cuda` (22023 for the caller).
    #[error("device must be \"any\", \"cpu\" or \"cuda\", not {0:?}")]
    BadDevice(String),
}

/// The queue's result type.
pub type Result<T, E = JobError> = std::result::Result<T, E>;

/// Wraps a driver error with what the queue was doing.
pub(crate) fn pg(context: &str) -> impl FnOnce(tokio_postgres::Error) -> JobError + '_ {
    move |e| JobError::Postgres(PostgresError::new(context, e))
}
