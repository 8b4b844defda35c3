//! Whose projects and models a call may use.
//!
//! Projects, models, files and jobs record the role that created them (`owner`). Tuning
//! into, resuming, deploying from or transforming with another role's project or model
//! needs membership in its owner role, as using another role's table would; superusers
//! may use all. Postgres answers the membership question, not pgmld.

use pgmld_sql::{codes, Caller, SqlError};
use tokio_postgres::Client;

use crate::error::{ModelError, Result};

/// Whether `caller` may use what `owner` owns: a superuser, or a member of `owner` (a
/// role that was dropped since counts for nobody but superusers).
pub async fn may_use(client: &Client, caller: &Caller, owner: &str) -> Result<bool> {
    if caller.superuser || caller.role == owner {
        return Ok(true);
    }
    let row = client
        .query_one(&format!("SELECT {}", may_use_sql("$1", "$2")), &[&caller.role, &owner])
        .await
        .map_err(|e| ModelError::pg(format!("checking membership of role {}", caller.role), e))?;
    Ok(row.get(0))
}

/// [`may_use`] as a SQL condition, for filtering lists of projects, models and jobs in one
/// query: true when the role named by the text expression `role` is a superuser or a
/// member of the role named by `owner` (a column or parameter). A role that does not exist
/// (any more) may use nothing; a dropped owner's rows stay visible to superusers only.
pub fn may_use_sql(role: &str, owner: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM pg_catalog.pg_roles me WHERE me.rolname = ({role})::text::name \
           AND (me.rolsuper OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles o \
                WHERE o.rolname = ({owner})::text::name AND pg_catalog.pg_has_role(me.oid, o.oid, 'MEMBER'))))"
    )
}

/// The privileges of `role` as a [`Caller`], for work pgmld does for a role with no
/// session of its own (resuming a job at startup).
pub async fn caller_of(client: &Client, role: &str) -> Result<Caller> {
    let row = client
        .query_opt(
            "SELECT r.rolsuper, pg_catalog.pg_has_role(r.oid, 'pg_read_server_files', 'USAGE') \
               FROM pg_catalog.pg_roles r WHERE r.rolname = $1",
            &[&role],
        )
        .await
        .map_err(|e| ModelError::pg(format!("reading the privileges of role {role}"), e))?;
    Ok(match row {
        Some(r) => {
            Caller { role: role.to_string(), superuser: r.get(0), read_server_files: r.get(1) }
        }
        None => Caller::plain(role),
    })
}

/// The 42501 for using `what` (`project "x"`, `model 7`) that `owner` owns.
pub fn denied(what: &str, owner: &str, caller: &Caller) -> ModelError {
    ModelError::Denied(
        SqlError::new(codes::INSUFFICIENT_PRIVILEGE, format!("permission denied for {what}"))
            .with_detail(format!(
                "It is owned by role \"{owner}\", and role \"{}\" is not a member of it.",
                caller.role
            ))
            .with_hint(format!(
                "Use a project of your own, or ask for membership: GRANT \"{owner}\" TO \"{}\";",
                caller.role
            )),
    )
}

/// Fails with [`denied`] unless `caller` [`may_use`] what `owner` owns.
pub async fn check(client: &Client, caller: &Caller, owner: &str, what: &str) -> Result<()> {
    match may_use(client, caller, owner).await? {
        true => Ok(()),
        false => Err(denied(what, owner, caller)),
    }
}

/// The 42501 for a local model path a role without `pg_read_server_files` named; it
/// never says whether the path exists.
pub fn server_files_denied(caller: &Caller) -> ModelError {
    ModelError::Denied(caller.server_files_denied("a model"))
}
