//! `CREATE EXTENSION [IF NOT EXISTS] pgml`, answered by pgmld (see
//! `pgmld_sql::extension`): the schema is made whole again if it was dropped, and the
//! client gets what Postgres sends for a created extension.

use super::per_row::Captured;
use super::stream::Served;
use super::Session;
use crate::error::ProxyError;
use crate::wire;
use bytes::BytesMut;
use pgmld_sql::{codes, CreateExtension, SqlError};
use tokio::io::AsyncWrite;

impl<W: AsyncWrite + Unpin> Session<W> {
    /// Serves one `CREATE EXTENSION pgml` of a Query, after the statements before it ran.
    pub(super) async fn create_extension(
        &mut self,
        ce: &CreateExtension,
    ) -> Result<Served, ProxyError> {
        // The upstream judges the transaction first: in an aborted block it answers 25P02,
        // as it would to the statement itself, and that error goes to the client.
        if let Captured::Failed = self.run_captured("SELECT 1", None).await? {
            return Ok(Served::Failed);
        }
        if let Some(schema) = ce.schema.as_deref().filter(|s| *s != "pgml") {
            let e = SqlError::new(
                codes::FEATURE_NOT_SUPPORTED,
                format!("pgmld serves extension \"pgml\" in schema pgml, not in schema {schema}"),
            )
            .with_hint("Leave SCHEMA out, or write SCHEMA pgml.");
            self.report_error(&e);
            return Ok(Served::Failed);
        }
        let database = self.info.database.clone();
        let applied = match &self.migrator {
            Some(m) => m.repair(&database).await,
            None => Ok(vec![]),
        };
        let applied = match applied {
            Ok(a) => a,
            Err(e) => {
                let e = SqlError::new(
                    codes::INTERNAL_ERROR,
                    format!("the pgml schema could not be created in database \"{database}\": {e}"),
                );
                self.report_error(&e);
                return Ok(Served::Failed);
            }
        };
        let mut out = BytesMut::new();
        match (applied.is_empty(), ce.if_not_exists) {
            // Exactly Postgres' answer to IF NOT EXISTS for an installed extension.
            (true, true) => wire::notice_with_code(
                "NOTICE",
                "42710",
                "extension \"pgml\" already exists, skipping",
                &mut out,
            ),
            (true, false) => wire::notice_response(
                "NOTICE",
                &format!(
                    "extension \"pgml\" is served by pgmld {}; its schema is ready",
                    env!("CARGO_PKG_VERSION")
                ),
                &mut out,
            ),
            (false, _) => wire::notice_response(
                "NOTICE",
                &format!("pgmld created the pgml schema (migrations {applied:?})"),
                &mut out,
            ),
        }
        if let Some(v) = &ce.version {
            wire::notice_response(
                "NOTICE",
                &format!(
                    "VERSION '{v}' is ignored: pgmld serves its own version ({})",
                    env!("CARGO_PKG_VERSION")
                ),
                &mut out,
            );
        }
        wire::command_complete("CREATE EXTENSION", &mut out);
        self.shared.local(out.freeze());
        Ok(Served::Done)
    }
}
