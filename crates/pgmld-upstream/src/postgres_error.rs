//! [`PostgresError`]: a statement of pgmld's own that Postgres refused, kept with what pgmld
//! was doing, for every crate that talks to Postgres on its own connections.

/// A statement of pgmld's own (a lookup, a log row, a file part) that Postgres refused.
/// The message is Postgres' own; the context says what pgmld was doing, so the client's
/// error reads e.g. "storing config.json part 0: permission denied for table files".
#[derive(Debug, Clone, thiserror::Error)]
#[error("{context}: {message}")]
pub struct PostgresError {
    /// What pgmld was doing.
    pub context: String,
    /// Postgres' message (or the driver's, when the connection broke).
    pub message: String,
    /// Postgres' SQLSTATE when it sent one.
    pub code: Option<String>,
}

impl PostgresError {
    /// Keeps `e`'s message and SQLSTATE under `context`.
    pub fn new(context: impl Into<String>, e: tokio_postgres::Error) -> Self {
        let code = e.code().map(|c| c.code().to_string());
        let message = match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        };
        PostgresError { context: context.into(), message, code }
    }

    /// The SQLSTATE a client sees: the codes that mean the same to the caller as they did
    /// to pgmld (privileges, resources, a missing relation or column, dependent objects)
    /// pass through; any other refusal of pgmld's own statement is an internal error.
    pub fn client_code(&self) -> &'static str {
        match self.code.as_deref() {
            Some("42501") => "42501",
            Some("53100") => "53100",
            Some("42P01") => "42P01",
            Some("42703") => "42703",
            Some("2BP01") => "2BP01",
            _ => "XX000",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_codes_that_mean_the_same_to_the_client_pass_through() {
        let e = |code: Option<&str>| PostgresError {
            context: "storing x".into(),
            message: "m".into(),
            code: code.map(str::to_string),
        };
        assert_eq!(e(Some("42501")).client_code(), "42501");
        assert_eq!(e(Some("2BP01")).client_code(), "2BP01");
        assert_eq!(e(Some("23505")).client_code(), "XX000");
        assert_eq!(e(None).client_code(), "XX000");
        assert_eq!(e(None).to_string(), "storing x: m");
    }
}
