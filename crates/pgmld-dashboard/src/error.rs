//! Errors: [`StartError`] for starting the dashboard, [`Error`] for what one request is
//! answered with (an error page with the right HTTP status, or the login page).

use axum::http::StatusCode;

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("binding the dashboard on {addr}: {source}")]
    Bind {
        /// The address from `dashboard_listen`.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// What went wrong while answering one request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No valid session: the answer is the login page (or 401 for live data).
    #[error("log in to see this page")]
    LoggedOut,
    /// The thing does not exist or the viewer may not use it (never told apart).
    #[error("{0} does not exist, or your role may not use it")]
    NotFound(String),
    /// The viewer's role may not look here at all.
    #[error("{0}")]
    Forbidden(String),
    /// The database has no pgml schema yet.
    #[error(
        "database \"{0}\" has no pgml schema yet: pgmld creates it the first time a client \
         connects to that database through pgmld"
    )]
    NoSchema(String),
    /// A statement of the dashboard's own failed.
    #[error("{0}")]
    Postgres(#[from] pgmld_upstream::PostgresError),
    /// A page template failed to render (a bug).
    #[error("rendering {page}: {message}")]
    Render {
        /// The template.
        page: String,
        /// minijinja's message.
        message: String,
    },
}

impl Error {
    /// A failed statement, with what the dashboard was doing.
    pub fn postgres(context: &str, e: tokio_postgres::Error) -> Self {
        Error::Postgres(pgmld_upstream::PostgresError::new(context, e))
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::LoggedOut => StatusCode::UNAUTHORIZED,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NoSchema(_) => StatusCode::NOT_FOUND,
            Error::Postgres(_) => StatusCode::BAD_GATEWAY,
            Error::Render { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A request's result.
pub type Result<T> = std::result::Result<T, Error>;
