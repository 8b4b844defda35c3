//! Migrating each database a client uses, once per process.

use crate::{migrate_upstream, SchemaError};
use pgmld_upstream::Upstream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::OnceCell;

/// Migrates databases of one server on first use and remembers which are done.
///
/// Clients may connect to any database of the upstream server; pgmld needs its tables in
/// each before serving `pgml.*` there. One `Migrator` per process keeps that to one
/// migration run per database: concurrent [`Migrator::ensure`] calls for a database wait for
/// the same run, and a failed run is retried by the next call.
#[derive(Debug)]
pub struct Migrator {
    /// The server; each call connects to the database it names.
    upstream: Upstream,
    /// Per database, a cell set once its migration succeeded. The std mutex is only held to
    /// look up or insert a cell, never across an await.
    done: Mutex<HashMap<String, Arc<OnceCell<()>>>>,
}

impl Migrator {
    /// A migrator for the databases of `upstream`.
    pub fn new(upstream: Upstream) -> Self {
        Migrator { upstream, done: Mutex::new(HashMap::new()) }
    }

    /// The upstream this migrator connects to.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Makes sure `database` carries every embedded migration, migrating it on the first call
    /// in this process (the database itself must exist).
    pub async fn ensure(&self, database: &str) -> Result<(), SchemaError> {
        let cell = {
            let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
            done.entry(database.to_string()).or_default().clone()
        };
        cell.get_or_try_init(|| async {
            migrate_upstream(&self.upstream, database).await.map(|_| ())
        })
        .await
        .map(|_| ())
    }

    /// Applies again whatever `database` lacks, whether or not this process migrated it
    /// before: after `DROP SCHEMA pgml CASCADE` the bookkeeping table went with the schema,
    /// so every migration is applied anew. Returns the versions applied (empty when the
    /// database was current).
    pub async fn repair(&self, database: &str) -> Result<Vec<u32>, SchemaError> {
        migrate_upstream(&self.upstream, database).await
    }

    /// Whether `database` was already migrated by this migrator.
    pub fn is_done(&self, database: &str) -> bool {
        let done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        done.get(database).is_some_and(|cell| cell.initialized())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::{admin_url, TestDb};

    #[tokio::test]
    async fn ensure_migrates_each_database_once() {
        let db = TestDb::create().await;
        let migrator = Migrator::new(Upstream::from_url(&admin_url()).expect("admin URL"));
        assert!(!migrator.is_done(db.name()));
        let (a, b) = tokio::join!(migrator.ensure(db.name()), migrator.ensure(db.name()));
        a.expect("first ensure");
        b.expect("second ensure");
        assert!(migrator.is_done(db.name()));

        // Once done, ensure does not touch the database again: drop the bookkeeping and see
        // that nothing recreates it.
        let client = db.connect().await;
        client.batch_execute("DROP TABLE pgml.schema_migrations").await.expect("drop");
        migrator.ensure(db.name()).await.expect("cached ensure");
        let left: i64 = client
            .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'pgml' AND tablename = 'schema_migrations'", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(left, 0);
        drop(client);
        db.drop_now().await;
    }

    #[tokio::test]
    async fn repair_recreates_a_dropped_schema() {
        let db = TestDb::create().await;
        let migrator = Migrator::new(Upstream::from_url(&admin_url()).expect("admin URL"));
        migrator.ensure(db.name()).await.expect("ensure");
        assert!(migrator.repair(db.name()).await.expect("repair").is_empty(), "nothing missing");
        db.connect().await.batch_execute("DROP SCHEMA pgml CASCADE").await.expect("drop");
        let applied = migrator.repair(db.name()).await.expect("repair after drop");
        assert_eq!(applied.len(), crate::migrations::MIGRATIONS.len(), "all re-applied");
        let client = db.connect().await;
        let row = client.query_one("SELECT count(*) FROM pgml.projects", &[]).await.expect("table");
        assert_eq!(row.get::<_, i64>(0), 0);
        drop(client);
        db.drop_now().await;
    }

    #[tokio::test]
    async fn failure_is_not_cached() {
        let migrator = Migrator::new(Upstream::from_url(&admin_url()).expect("admin URL"));
        let missing = "pgmld_t_does_not_exist";
        assert!(migrator.ensure(missing).await.is_err());
        assert!(!migrator.is_done(missing));
        assert!(migrator.ensure(missing).await.is_err(), "a failed database is tried again");
    }
}
