//! Errors raised while migrating pgmld's tables or running the private cluster.

use std::path::PathBuf;

/// Why a migration or a private-cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A connection string could not be parsed or rewritten. The string itself is left out
    /// because it may hold a password.
    #[error("invalid database URL: {message}")]
    InvalidUrl {
        /// What is wrong with it.
        message: String,
    },
    /// The upstream URL's TLS or password settings cannot be honoured (see
    /// `pgmld_upstream`); the message names no password.
    #[error(transparent)]
    Upstream(#[from] pgmld_upstream::UpstreamError),
    /// The server named by the URL could not be reached or refused the login.
    #[error("cannot connect to {target}: {}", chain(source))]
    Connect {
        /// Host, port and database tried (no credentials), so the operator knows which.
        target: String,
        /// What tokio-postgres said.
        source: tokio_postgres::Error,
    },
    /// A statement of the runner itself (lock, bookkeeping) failed.
    #[error("{context}: {}", chain(source))]
    Postgres {
        /// What the runner was doing.
        context: String,
        /// What the server or driver said.
        source: tokio_postgres::Error,
    },
    /// One embedded migration failed; its transaction was rolled back.
    #[error("migration {version} ({name}) failed: {}", chain(source))]
    Migration {
        /// The migration's version number.
        version: u32,
        /// The migration's name, for finding its file under `migrations/`.
        name: &'static str,
        /// What the server said.
        source: tokio_postgres::Error,
    },
    /// No directory holding `initdb` and `pg_ctl` was found.
    #[error("Postgres server binaries (initdb, pg_ctl) not found; tried: {tried}")]
    BinariesNotFound {
        /// Every place looked at, so the operator can set `pg_bin_dir`.
        tried: String,
    },
    /// A file or directory operation for the private cluster failed.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An external command could not be started or exited unsuccessfully.
    #[error(
        "command `{command}` failed ({status}){}{}",
        fmt_section("output", output),
        fmt_section("server log tail", log_tail)
    )]
    Command {
        /// The command line, so it can be rerun by hand.
        command: String,
        /// Exit status, or why it could not be started.
        status: String,
        /// What it printed (stdout and stderr), trimmed.
        output: String,
        /// The last lines of the server log file, empty when there is none.
        log_tail: String,
    },
    /// A running cluster was found but its state does not fit what was asked.
    #[error("private cluster in {data_dir}: {message}")]
    Cluster {
        /// The cluster's data directory.
        data_dir: PathBuf,
        /// What does not fit.
        message: String,
    },
}

/// An error with all its causes, `a: b: c`. tokio-postgres shows only its kind ("db error")
/// in its own message and keeps the server's words in the cause.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// Formats an optional multi-line section of a [`SchemaError::Command`] message.
fn fmt_section(title: &str, body: &str) -> String {
    if body.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- {title} ---\n{}", body.trim_end())
    }
}

impl SchemaError {
    /// Builds an [`SchemaError::Io`] from a context, a path and the error.
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        SchemaError::Io { context, path: path.into(), source }
    }

    /// Builds a [`SchemaError::Postgres`] for a runner statement.
    pub(crate) fn pg(context: impl Into<String>, source: tokio_postgres::Error) -> Self {
        SchemaError::Postgres { context: context.into(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn postgres_errors_show_their_cause() {
        let source = match tokio_postgres::Config::from_str("port=notanumber") {
            Err(e) => e,
            Ok(_) => panic!("must not parse"),
        };
        let text = SchemaError::pg("parsing", source).to_string();
        assert!(text.starts_with("parsing: invalid connection string: "), "{text}");
        assert!(text.contains("port"), "{text}");
    }

    #[test]
    fn command_error_shows_output_and_log_tail_only_when_present() {
        let bare = SchemaError::Command {
            command: "pg_ctl start".into(),
            status: "exit status: 1".into(),
            output: "  ".into(),
            log_tail: String::new(),
        };
        assert_eq!(bare.to_string(), "command `pg_ctl start` failed (exit status: 1)");
        let full = SchemaError::Command {
            command: "pg_ctl start".into(),
            status: "exit status: 1".into(),
            output: "boom\n".into(),
            log_tail: "FATAL: x".into(),
        };
        let text = full.to_string();
        assert!(text.contains("--- output ---\nboom"), "{text}");
        assert!(text.contains("--- server log tail ---\nFATAL: x"), "{text}");
    }
}
