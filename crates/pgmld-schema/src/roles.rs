//! Acting as the calling role on pgmld's own connections.
//!
//! pgmld reads and writes user data on its own connections (a tune outlives the call's
//! statement; a load streams over two connections at once), but with the caller's
//! privileges: `SET ROLE` makes Postgres check every read, write, ownership and row-level
//! security policy as that role. pgmld's upstream role must be a superuser or a member of
//! the calling roles for this (on managed Postgres: `GRANT app_role TO pgmld_role`).

use tokio_postgres::Client;

/// A role name quoted as an SQL identifier.
pub fn quote_role(role: &str) -> String {
    format!("\"{}\"", role.replace('"', "\"\""))
}

/// `SET ROLE` (or `SET LOCAL ROLE`, which ends with the transaction) to `role`.
pub fn set_role_sql(role: &str, local: bool) -> String {
    let scope = if local { "LOCAL " } else { "" };
    format!("SET {scope}ROLE {}", quote_role(role))
}

/// What pgmld was doing when `SET ROLE` failed, for error messages: it names the role and
/// says what pgmld's own role needs.
pub fn acting_as(role: &str) -> String {
    format!(
        "acting as role \"{role}\" (pgmld's upstream role must be a superuser or a member of it)"
    )
}

/// Makes the rest of `client`'s session act as `role`.
pub async fn set_role(client: &Client, role: &str) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(&set_role_sql(role, false)).await
}

/// Opens a transaction on `client` acting as `role` until it ends; the caller commits or
/// rolls back.
pub async fn begin_as(client: &Client, role: &str) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(&format!("BEGIN; {}", set_role_sql(role, true))).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::TestDb;

    #[test]
    fn quotes_every_role() {
        assert_eq!(set_role_sql("app", false), "SET ROLE \"app\"");
        assert_eq!(set_role_sql("a\"b", true), "SET LOCAL ROLE \"a\"\"b\"");
    }

    #[tokio::test]
    async fn a_local_role_ends_with_its_transaction() {
        let db = TestDb::create().await;
        let client = db.connect().await;
        let role = format!("pgmld_roles_{:08x}", rand::random::<u32>());
        client
            .batch_execute(&format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role}"))
            .await
            .unwrap();
        begin_as(&client, &role).await.unwrap();
        let inside: String =
            client.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
        let denied = client.batch_execute("CREATE SCHEMA pgmld_roles_nope").await.unwrap_err();
        assert_eq!(denied.code().map(|c| c.code()), Some("42501"));
        client.batch_execute("ROLLBACK").await.unwrap();
        let after: String =
            client.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
        client.batch_execute(&format!("DROP ROLE {role}")).await.unwrap();
        assert_eq!(inside, role);
        assert_ne!(after, role);
    }
}
