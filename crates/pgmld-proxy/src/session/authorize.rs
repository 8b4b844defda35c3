//! Who may call what: before pgmld runs any pgml call, it asks the caller's own upstream
//! session who it is and whether it may call those functions.
//!
//! The functions pgmld serves have real catalog entries (migration 0003), so Postgres's
//! own privilege model applies: USAGE on schema `pgml` and EXECUTE on the function,
//! granted and revoked with GRANT / REVOKE. The question runs on the client's session,
//! inside its transaction, so `SET ROLE` there counts exactly as it would for a function
//! Postgres ran. The query itself reads only world-readable catalogs and never fails on a
//! missing privilege: pgmld raises the refusal with Postgres's wording.

use super::per_row::Captured;
use super::Session;
use crate::error::ProxyError;
use pgmld_schema::roles::quote_role;
use pgmld_sql::{codes, Caller, SqlError};
use std::collections::BTreeSet;
use tokio::io::AsyncWrite;

/// Columns: role, superuser, read_server_files, schema exists, schema usage, the pgml
/// functions that exist among those asked for, and those the role may execute.
const PROBE_SQL: &str = "SELECT current_user::text, r.rolsuper, \
       pg_catalog.pg_has_role('pg_read_server_files', 'USAGE'), \
       n.oid IS NOT NULL, \
       n.oid IS NOT NULL AND pg_catalog.has_schema_privilege(n.oid, 'USAGE'), \
       ARRAY(SELECT DISTINCT p.proname::text FROM pg_catalog.pg_proc p \
             WHERE p.pronamespace = n.oid AND p.proname = ANY($1::text[])), \
       ARRAY(SELECT DISTINCT p.proname::text FROM pg_catalog.pg_proc p \
             WHERE p.pronamespace = n.oid AND p.proname = ANY($1::text[]) \
               AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE')) \
  FROM pg_catalog.pg_roles r LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = 'pgml' \
 WHERE r.rolname = current_user";

/// What the probe found, before it is judged against the called functions.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Probe {
    pub caller: Caller,
    pub schema_exists: bool,
    pub schema_usage: bool,
    pub existing: BTreeSet<String>,
    pub executable: BTreeSet<String>,
}

impl Probe {
    /// Reads the probe's one row (text values, as `run_captured` returns them).
    fn from_row(row: &[Option<String>]) -> Option<Probe> {
        let text = |i: usize| row.get(i).cloned().flatten();
        let flag = |i: usize| text(i).as_deref() == Some("t");
        Some(Probe {
            caller: Caller { role: text(0)?, superuser: flag(1), read_server_files: flag(2) },
            schema_exists: flag(3),
            schema_usage: flag(4),
            existing: text_array(&text(5)?),
            executable: text_array(&text(6)?),
        })
    }

    /// Whether the schema and every function asked for exist (whatever the privileges).
    fn is_whole(&self, functions: &[&str]) -> bool {
        self.schema_exists
            && functions.iter().all(|f| self.existing.contains(&f.to_ascii_lowercase()))
    }

    /// The caller, or the error Postgres would raise for the first function it may not
    /// call. Schema first, as Postgres resolves the name before it checks EXECUTE.
    pub(super) fn judge(self, functions: &[&str]) -> Result<Caller, SqlError> {
        if !self.schema_exists {
            return Err(SqlError::new(codes::INVALID_SCHEMA_NAME, "schema \"pgml\" does not exist")
                .with_hint("pgmld creates it when it migrates a database, and again on the next pgml call after it was dropped; pgmld's upstream role could not create it."));
        }
        if !self.schema_usage {
            return Err(SqlError::new(
                codes::INSUFFICIENT_PRIVILEGE,
                "permission denied for schema pgml",
            )
            .with_hint(format!(
                "An administrator can GRANT USAGE ON SCHEMA pgml TO {};",
                quote_role(&self.caller.role)
            )));
        }
        for f in functions {
            let f = f.to_ascii_lowercase();
            if !self.existing.contains(&f) {
                return Err(SqlError::new(codes::UNDEFINED_FUNCTION, format!("function pgml.{f} does not exist in the catalog"))
                    .with_hint(format!("pgmld creates its functions when it migrates a database; this entry was dropped. Create it again from the CREATE FUNCTION pgml.{f} of pgmld's migrations/0003_caller_privileges.sql.")));
            }
            if !self.executable.contains(&f) {
                return Err(SqlError::new(
                    codes::INSUFFICIENT_PRIVILEGE,
                    format!("permission denied for function {f}"),
                )
                .with_hint(format!(
                    "An administrator can GRANT EXECUTE ON FUNCTION pgml.{f} TO {};",
                    quote_role(&self.caller.role)
                )));
            }
        }
        Ok(self.caller)
    }
}

/// The elements of a Postgres text array of plain names (`{tune,version}`).
fn text_array(s: &str) -> BTreeSet<String> {
    s.trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .map(|e| e.trim_matches('"').to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

impl<W: AsyncWrite + Unpin> Session<W> {
    /// Asks the caller's session whether it may call `functions`, and as whom. The outer
    /// error ends the session; the inner one is the statement's. When the upstream itself
    /// failed the probe (an aborted transaction: 25P02), its error already went to the
    /// client and the upstream skips to Sync, so the inner error is not reported again.
    pub(super) async fn authorize(
        &mut self,
        functions: &[&str],
    ) -> Result<Result<Caller, SqlError>, ProxyError> {
        let probe = match self.probe(functions).await? {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        if probe.is_whole(functions) {
            return Ok(probe.judge(functions));
        }
        // The schema (or a function of it) was dropped, e.g. DROP SCHEMA pgml CASCADE:
        // pgmld applies its migrations again, as it would at startup, and asks again.
        let Some(migrator) = self.migrator.clone() else { return Ok(probe.judge(functions)) };
        let database = self.info.database.clone();
        let span = self.info.span.clone();
        match tracing::Instrument::instrument(migrator.repair(&database), span.clone()).await {
            Ok(applied) if !applied.is_empty() => {
                span.in_scope(|| {
                    tracing::info!(database = %database, ?applied, "re-created the dropped pgml schema")
                });
                let mut b = bytes::BytesMut::new();
                crate::wire::notice_response(
                    "NOTICE",
                    &format!("the pgml schema was missing; pgmld created it again (migrations {applied:?})"),
                    &mut b,
                );
                self.shared.local(b.freeze());
            }
            Ok(_) => return Ok(probe.judge(functions)),
            Err(e) => {
                span.in_scope(|| {
                    tracing::warn!(database = %database, "cannot re-create the pgml schema: {e}")
                });
                return Ok(probe.judge(functions));
            }
        }
        Ok(match self.probe(functions).await? {
            Ok(p) => p.judge(functions),
            Err(e) => Err(e),
        })
    }

    /// Runs the probe on the caller's session.
    async fn probe(&mut self, functions: &[&str]) -> Result<Result<Probe, SqlError>, ProxyError> {
        let names: Vec<String> = functions.iter().map(|f| f.to_ascii_lowercase()).collect();
        let list = format!("{{{}}}", names.join(","));
        let sql =
            PROBE_SQL.replace("$1::text[]", &format!("'{}'::text[]", list.replace('\'', "''")));
        match self.run_captured(&sql, None).await? {
            Captured::Rows(_, rows) => match rows.first().and_then(|r| Probe::from_row(r)) {
                Some(probe) => Ok(Ok(probe)),
                None => Ok(Err(SqlError::new(
                    codes::INTERNAL_ERROR,
                    "could not read the calling role from the upstream session",
                ))),
            },
            Captured::Failed => Ok(Err(SqlError::new(
                codes::INTERNAL_ERROR,
                "the upstream refused the privilege check",
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn judges_schema_then_functions() {
        let full = row(&[
            Some("app"),
            Some("f"),
            Some("f"),
            Some("t"),
            Some("t"),
            Some("{transform,tune}"),
            Some("{transform}"),
        ]);
        let p = Probe::from_row(&full).unwrap();
        assert_eq!(p.caller, Caller::plain("app"));
        assert_eq!(p.clone().judge(&["transform"]).unwrap().role, "app");
        let e = p.clone().judge(&["transform", "tune"]).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), ("42501", "permission denied for function tune"));
        assert_eq!(p.clone().judge(&["embed"]).unwrap_err().code, "42883");
        let no_usage = Probe { schema_usage: false, ..p.clone() };
        let e = no_usage.judge(&["transform"]).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), ("42501", "permission denied for schema pgml"));
        assert!(e.hint.unwrap().contains("GRANT USAGE ON SCHEMA pgml TO \"app\""));
        let no_schema = Probe { schema_exists: false, schema_usage: false, ..p };
        assert_eq!(no_schema.judge(&["version"]).unwrap_err().code, "3F000");
    }

    #[test]
    fn reads_flags() {
        let su = row(&[
            Some("Admin"),
            Some("t"),
            Some("t"),
            Some("t"),
            Some("t"),
            Some("{}"),
            Some("{}"),
        ]);
        let p = Probe::from_row(&su).unwrap();
        assert!(p.caller.superuser && p.caller.read_server_files && p.existing.is_empty());
        assert!(Probe::from_row(&row(&[None])).is_none());
    }
}
