//! Non-superuser roles for privilege tests: a fresh LOGIN role per test, and connections
//! through pgmld as that role.

use super::{psql_direct, Pgmld, TestDb};

/// A LOGIN role of the test's own, dropped with everything it owns at the end.
pub struct Role {
    pub name: String,
    db: String,
}

impl Role {
    /// `CREATE ROLE <prefix>_<random> LOGIN`, nothing else granted.
    pub fn create(db: &TestDb, prefix: &str) -> Role {
        let name = format!("{prefix}_{:08x}", rand::random::<u32>());
        psql_direct("postgres", &format!("CREATE ROLE {name} LOGIN"));
        Role { name, db: db.name.clone() }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", &self.db, "-qAtc"])
            .arg(format!("DROP OWNED BY {0} CASCADE; DROP ROLE IF EXISTS {0}", self.name))
            .output();
    }
}

/// A tokio-postgres session through pgmld as `role`.
pub async fn connect_as(p: &Pgmld, db: &str, role: &str) -> tokio_postgres::Client {
    let conn = format!("host=127.0.0.1 port={} user={role} dbname={db}", p.addr.port());
    let (client, c) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(c);
    client
}
