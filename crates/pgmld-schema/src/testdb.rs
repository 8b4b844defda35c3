//! Test helper: a fresh, randomly named database on the test server, dropped afterwards.

use crate::url_with_database;
use tokio_postgres::{Client, NoTls};

/// URL of the test server's maintenance database; `PGMLD_TEST_PG_URL` overrides it.
pub(crate) fn admin_url() -> String {
    std::env::var("PGMLD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Connects to `url`, driving the connection on a task; panics on failure (tests only).
pub(crate) async fn connect(url: &str) -> Client {
    let (client, conn) = match tokio_postgres::connect(url, NoTls).await {
        Ok(pair) => pair,
        Err(e) => panic!("test Postgres not reachable ({e}); set PGMLD_TEST_PG_URL"),
    };
    tokio::spawn(conn);
    client
}

/// A database created for one test.
pub(crate) struct TestDb {
    /// Its name, `pgmld_t_<random>`.
    name: String,
    /// Set once dropped, so `Drop` does not try again.
    dropped: bool,
}

impl TestDb {
    /// Creates a new empty database.
    pub(crate) async fn create() -> TestDb {
        let name = format!("pgmld_t_{:016x}", rand::random::<u64>());
        let admin = connect(&admin_url()).await;
        if let Err(e) = admin.batch_execute(&format!("CREATE DATABASE {name}")).await {
            panic!("cannot create test database {name}: {e}");
        }
        TestDb { name, dropped: false }
    }

    /// The database's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// A connection string for it.
    pub(crate) fn url(&self) -> String {
        match url_with_database(&admin_url(), &self.name) {
            Ok(url) => url,
            Err(e) => panic!("bad PGMLD_TEST_PG_URL: {e}"),
        }
    }

    /// Connects to it.
    pub(crate) async fn connect(&self) -> Client {
        connect(&self.url()).await
    }

    /// Drops it now, ending any session still using it.
    pub(crate) async fn drop_now(mut self) {
        drop_database(&self.name).await;
        self.dropped = true;
    }
}

/// Drops a test database, ignoring failures (a leftover database is harmless).
async fn drop_database(name: &str) {
    if let Ok((admin, conn)) = tokio_postgres::connect(&admin_url(), NoTls).await {
        tokio::spawn(conn);
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    }
}

impl Drop for TestDb {
    /// Drops the database of a test that panicked before `drop_now`, from a side thread with
    /// its own runtime because `Drop` cannot await.
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(drop_database(&name));
            }
        })
        .join();
    }
}
