//! [`Connector`]: pgmld's own connections to the databases of its upstream, the one place
//! every crate (tune, transform, load_dataset, the model registry) gets them from.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;

use crate::{PostgresError, Upstream};

/// Opens pgmld's own connections to any database of the upstream, and keeps one shared
/// connection per database for short lookups that many sessions make (model names,
/// privileges), so a per-row transform does not log in once per call.
pub struct Connector {
    /// The upstream URL, TLS and password sources.
    upstream: Upstream,
    /// One connection per database for [`Connector::shared`]; replaced once closed.
    shared: tokio::sync::Mutex<HashMap<String, Arc<Client>>>,
}

impl Connector {
    /// A connector for `upstream`'s databases.
    pub fn new(upstream: Upstream) -> Self {
        Connector { upstream, shared: tokio::sync::Mutex::new(HashMap::new()) }
    }

    /// The upstream it connects to.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// A new connection of pgmld's own to `database`, for work that needs a session of its
    /// own (a transaction, `SET ROLE`, a long job).
    pub async fn connect(&self, database: &str) -> Result<Client, PostgresError> {
        self.upstream
            .connect(database)
            .await
            .map_err(|e| PostgresError::new(format!("connecting to database {database}"), e))
    }

    /// A new connection of pgmld's own to `database` whose notifications (after `LISTEN`)
    /// arrive on the returned channel; the channel closes when the connection ends.
    pub async fn listen(
        &self,
        database: &str,
    ) -> Result<
        (Client, tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>),
        PostgresError,
    > {
        self.upstream
            .connect_listening(database)
            .await
            .map_err(|e| PostgresError::new(format!("connecting to database {database}"), e))
    }

    /// The connection to `database` that lookups share. Never use it for a transaction or a
    /// session setting: other sessions' statements interleave on it.
    pub async fn shared(&self, database: &str) -> Result<Arc<Client>, PostgresError> {
        let mut shared = self.shared.lock().await;
        if let Some(c) = shared.get(database).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let client = Arc::new(self.connect(database).await?);
        shared.insert(database.to_string(), client.clone());
        Ok(client)
    }

    /// The databases of the upstream that accept connections.
    pub async fn databases(&self) -> Result<Vec<String>, PostgresError> {
        let client = self.shared(self.upstream.database()).await?;
        let rows = client
            .query(
                "SELECT datname::text FROM pg_database \
                 WHERE datallowconn AND NOT datistemplate ORDER BY 1",
                &[],
            )
            .await
            .map_err(|e| PostgresError::new("listing databases", e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
