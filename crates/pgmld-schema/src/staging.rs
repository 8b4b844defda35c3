//! Staging tables of `pgml.load_dataset`, and the removal of those a killed pgmld left.
//!
//! A load streams into `pgmld_load_<key>` (over two connections, so the table must be
//! committed before the swap) while its first connection holds the session advisory lock
//! (`STAGING_LOCK_CLASS`, key). A table of that name whose lock can be taken belongs to no
//! running load, whichever pgmld process made it: [`remove_orphans`] drops it. The lock
//! dies with the session, so a `kill -9` leaves only a table that the next pgmld to use
//! the database removes.

use tokio_postgres::Client;

/// First key of the staging advisory locks ("pgld" in hex).
pub const STAGING_LOCK_CLASS: i32 = 0x7067_6c64;

/// The comment a load puts on its staging table. Only tables carrying it are ever
/// dropped, so a user's own table that happens to be named `pgmld_load_<n>` is safe.
pub const STAGING_COMMENT: &str = "pgmld load_dataset staging table";

/// Name prefix of every staging table.
pub const STAGING_PREFIX: &str = "pgmld_load_";

/// A fresh staging key: positive, random enough that concurrent loads never share one.
pub fn new_key() -> i32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    (h.finish() as u32 & 0x7fff_ffff) as i32
}

/// The staging table name for `key` (unquoted; plain lower-case ASCII).
pub fn table_name(key: i32) -> String {
    format!("{STAGING_PREFIX}{key}")
}

/// Marks the staging table of `key` as in use for as long as `client`'s session lives.
pub async fn lock(client: &Client, key: i32) -> Result<(), tokio_postgres::Error> {
    client
        .execute("SELECT pg_advisory_lock($1, $2)", &[&STAGING_LOCK_CLASS, &key])
        .await
        .map(|_| ())
}

/// Releases [`lock`] early (closing the session releases it too).
pub async fn unlock(client: &Client, key: i32) -> Result<(), tokio_postgres::Error> {
    client
        .execute("SELECT pg_advisory_unlock($1, $2)", &[&STAGING_LOCK_CLASS, &key])
        .await
        .map(|_| ())
}

/// Drops every staging table (named and commented as one) of the database no running load
/// holds; returns their names.
/// Tables pgmld may not drop (its role neither owns them nor is a superuser) are logged
/// and kept.
pub async fn remove_orphans(client: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT c.oid::regclass::text, substring(c.relname FROM '^pgmld_load_([0-9]+)$')::int4 \
               FROM pg_catalog.pg_class c WHERE c.relkind = 'r' AND c.relname ~ '^pgmld_load_[0-9]+$' \
                AND pg_catalog.obj_description(c.oid, 'pg_class') = $1",
            &[&STAGING_COMMENT],
        )
        .await?;
    let mut dropped = Vec::new();
    for row in rows {
        let (table, key): (String, Option<i32>) = (row.get(0), row.get(1));
        let Some(k) = key else { continue };
        let free: bool = client
            .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&STAGING_LOCK_CLASS, &k])
            .await?
            .get(0);
        if !free {
            continue;
        }
        match client.batch_execute(&format!("DROP TABLE IF EXISTS {table}")).await {
            Ok(()) => dropped.push(table),
            Err(e) => {
                tracing::warn!(%table, "cannot drop a leftover load_dataset staging table: {e}")
            }
        }
        unlock(client, k).await?;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::TestDb;

    #[tokio::test]
    async fn only_unlocked_staging_tables_are_removed() {
        let db = TestDb::create().await;
        let (a, b) = (db.connect().await, db.connect().await);
        let (busy, orphan) = (new_key(), new_key().wrapping_add(1) & 0x7fff_ffff);
        let (b_name, o_name) = (table_name(busy), table_name(orphan));
        let sql = format!(
            "CREATE TABLE {b_name} (x int); CREATE TABLE {o_name} (x int); CREATE TABLE pgmld_load_123 (x int); CREATE TABLE keep_me (x int);
             COMMENT ON TABLE {b_name} IS '{STAGING_COMMENT}'; COMMENT ON TABLE {o_name} IS '{STAGING_COMMENT}'"
        );
        a.batch_execute(&sql).await.unwrap();
        lock(&a, busy).await.unwrap();
        // A user's table named like a staging table but not commented as one stays.
        assert_eq!(remove_orphans(&b).await.unwrap(), vec![table_name(orphan)]);
        let left: i64 = b
            .query_one(
                "SELECT count(*) FROM pg_class WHERE relname IN ($1, 'keep_me', 'pgmld_load_123')",
                &[&table_name(busy)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 3);
        drop(a); // the load's session ends: its table is an orphan now
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(remove_orphans(&b).await.unwrap(), vec![table_name(busy)]);
    }
}
