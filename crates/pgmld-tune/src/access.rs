//! Reading user data as the caller: the training relation is read on pgmld's own
//! connection acting as the calling role (`SET LOCAL ROLE`), so Postgres checks SELECT,
//! column privileges and row security. Who may use which project or model is
//! [`pgmld_models::access`].

use std::future::Future;

use pgmld_schema::roles;
use tokio_postgres::Client;

use crate::error::{Result, TuneError};

/// Runs `read` in a transaction on `client` acting as `role`, so every query in it is
/// checked by Postgres as that role; the transaction only reads, and is rolled back.
pub async fn read_as<T>(
    client: &Client,
    role: &str,
    read: impl Future<Output = Result<T>>,
) -> Result<T> {
    roles::begin_as(client, role).await.map_err(|e| TuneError::pg(roles::acting_as(role), e))?;
    let result = read.await;
    client
        .batch_execute("ROLLBACK")
        .await
        .map_err(|e| TuneError::pg("ending the read as the calling role", e))?;
    result
}
