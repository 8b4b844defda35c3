//! Applying the embedded migrations to a database, safely from several processes at once.

use crate::migrations::{Migration, MIGRATIONS};
use crate::url::describe;
use crate::SchemaError;
use pgmld_upstream::Upstream;
use std::collections::HashSet;
use tokio_postgres::Client;

/// Key of the session-level advisory lock held while migrating ("pgmld" and 1 in hex), so
/// two pgmld processes starting against one database apply each migration only once.
/// Advisory locks are per database, so migrating different databases never waits.
pub const MIGRATION_LOCK_KEY: i64 = 0x7067_6d6c_6400_0001;

/// Creates the runner's own bookkeeping; idempotent, run under the lock before anything else.
const BOOKKEEPING_SQL: &str = "
    CREATE SCHEMA IF NOT EXISTS pgml;
    CREATE TABLE IF NOT EXISTS pgml.schema_migrations (
        version    integer PRIMARY KEY,
        name       text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    );";

/// Brings the database named by `url` up to date with every embedded migration.
///
/// Connects as the URL says (`sslmode`, password sources: see `pgmld_upstream`), takes
/// [`MIGRATION_LOCK_KEY`], creates `pgml.schema_migrations` when
/// missing, applies each migration not recorded there in its own transaction together with
/// its record row, and unlocks. Returns the versions applied by this call, oldest first;
/// empty when the database was already current.
pub async fn migrate(url: &str) -> Result<Vec<u32>, SchemaError> {
    migrate_with(url, MIGRATIONS).await
}

/// [`migrate`] for `database` on an upstream read once (pgmld's own TLS and password
/// settings).
pub async fn migrate_upstream(
    upstream: &Upstream,
    database: &str,
) -> Result<Vec<u32>, SchemaError> {
    migrate_on(upstream, database, MIGRATIONS).await
}

/// [`migrate`] with an explicit migration list, so tests can exercise failures.
pub(crate) async fn migrate_with(
    url: &str,
    migrations: &[Migration],
) -> Result<Vec<u32>, SchemaError> {
    let upstream = Upstream::from_url(url)?;
    migrate_on(&upstream, upstream.database(), migrations).await
}

/// Migrates `database` of `upstream` over a connection of its own.
async fn migrate_on(
    upstream: &Upstream,
    database: &str,
    migrations: &[Migration],
) -> Result<Vec<u32>, SchemaError> {
    let target = describe(&upstream.config(database));
    let (mut client, driver) = upstream
        .connect_with_task(database)
        .await
        .map_err(|source| SchemaError::Connect { target: target.clone(), source })?;

    let result = match client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY]).await {
        Ok(_) => {
            let applied = apply_pending(&mut client, migrations).await;
            // Staging tables a killed pgmld left behind in this database (see `staging`).
            match crate::staging::remove_orphans(&client).await {
                Ok(dropped) if !dropped.is_empty() => {
                    tracing::info!(%target, ?dropped, "removed leftover load_dataset staging tables")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%target, "cannot look for leftover load_dataset staging tables: {e}")
                }
            }
            // Closing the session would release the lock too; unlocking keeps it short when
            // the caller holds on to nothing else.
            if let Err(e) =
                client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY]).await
            {
                tracing::warn!(error = %e, "cannot release the migration lock; it ends with the session");
            }
            applied
        }
        Err(source) => Err(SchemaError::pg("cannot take the migration lock", source)),
    };
    drop(client);
    if let Err(e) = driver.await {
        tracing::warn!(error = %e, "migration connection task failed");
    }
    if let Ok(applied) = &result {
        if !applied.is_empty() {
            tracing::info!(%target, ?applied, "pgml schema migrated");
        }
    }
    result
}

/// Applies, under the lock, every migration of `migrations` not yet recorded.
async fn apply_pending(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<Vec<u32>, SchemaError> {
    client
        .batch_execute(BOOKKEEPING_SQL)
        .await
        .map_err(|e| SchemaError::pg("cannot create pgml.schema_migrations", e))?;
    let done = recorded_versions(client).await?;
    if let Some(newest) = done.iter().max() {
        let known = migrations.iter().map(|m| m.version).max().unwrap_or(0);
        if *newest > known {
            tracing::warn!(newest, known, "database has migrations newer than this pgmld");
        }
    }

    let mut applied = Vec::new();
    for m in migrations.iter().filter(|m| !done.contains(&m.version)) {
        apply_one(client, m).await?;
        applied.push(m.version);
    }
    Ok(applied)
}

/// The versions recorded in `pgml.schema_migrations`.
async fn recorded_versions(client: &Client) -> Result<HashSet<u32>, SchemaError> {
    let rows = client
        .query("SELECT version FROM pgml.schema_migrations", &[])
        .await
        .map_err(|e| SchemaError::pg("cannot read pgml.schema_migrations", e))?;
    let mut done = HashSet::with_capacity(rows.len());
    for row in rows {
        let version: i32 =
            row.try_get(0).map_err(|e| SchemaError::pg("cannot read pgml.schema_migrations", e))?;
        // Negative versions are not ours; they can never match an embedded migration.
        if let Ok(v) = u32::try_from(version) {
            done.insert(v);
        }
    }
    Ok(done)
}

/// Runs one migration and records it, both in one transaction.
async fn apply_one(client: &mut Client, m: &Migration) -> Result<(), SchemaError> {
    let fail = |source| SchemaError::Migration { version: m.version, name: m.name, source };
    // Fits: `migrations::MIGRATIONS` is checked at compile time to stay within i32.
    let version = m.version as i32;
    let tx = client.transaction().await.map_err(fail)?;
    tx.batch_execute(m.sql).await.map_err(fail)?;
    tx.execute(
        "INSERT INTO pgml.schema_migrations (version, name) VALUES ($1, $2)",
        &[&version, &m.name],
    )
    .await
    .map_err(fail)?;
    tx.commit().await.map_err(fail)?;
    tracing::debug!(version = m.version, name = m.name, "migration applied");
    Ok(())
}

#[cfg(test)]
mod tests;
