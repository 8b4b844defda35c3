//! The endpoint's way to the models: a Postgres client of pgmld itself, running the same
//! statements as the Python client (`clients/python`) and PostgresML's SDK, so it shares
//! pgmld's model cache, cancel handling and errors:
//!
//! - answer: `SELECT pgml.transform(task => $1::jsonb, inputs => $2::jsonb[], args => $3::jsonb)`;
//! - stream: `BEGIN`, `DECLARE … CURSOR FOR SELECT pgml.transform_stream(…)`, `FETCH 1` until
//!   no row is left, `COMMIT`.
//!
//! Each request has its own connection. One dropped before its statement finished (the
//! HTTP client went away) sends pgmld a cancel request and closes, which stops generation.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_postgres::{CancelToken, Client, NoTls, SimpleQueryMessage};

use crate::error::ApiError;
use crate::request::ChatRequest;
use crate::response::{Completion, ModelEntry, StreamRow};

/// The non-streaming statement.
pub const TRANSFORM_SQL: &str =
    "SELECT pgml.transform(task => $1::jsonb, inputs => $2::jsonb[], args => $3::jsonb)";
/// The cursor a stream reads from (one per connection, so the name never clashes).
const CURSOR: &str = "pgmld_openai_stream";
/// Project tasks whose models can chat.
const CHAT_TASKS: &str = "('conversation', 'conversational', 'text-generation')";
/// How long connecting to pgmld may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection settings for reaching pgmld's own Postgres listener.
///
/// `listen` is the address pgmld listens on (an unspecified address is reached over
/// loopback); user, password and database default to those of `upstream` (pgmld's own
/// upstream settings, password sources applied), since pgmld passes a client's
/// credentials through to the upstream.
pub fn pgmld_target(
    listen: SocketAddr,
    upstream: &tokio_postgres::Config,
    user: Option<&str>,
    password: Option<&str>,
    database: Option<&str>,
) -> tokio_postgres::Config {
    let host = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "::1".to_string(),
        ip => ip.to_string(),
    };
    let mut config = tokio_postgres::Config::new();
    config
        .host(&host)
        .port(listen.port())
        .application_name("pgmld-openai")
        .connect_timeout(CONNECT_TIMEOUT);
    let user = user.filter(|u| !u.is_empty()).or(upstream.get_user()).unwrap_or("postgres");
    config.user(user);
    let password = match password {
        Some(p) => Some(p.as_bytes().to_vec()),
        // The upstream's password belongs to the upstream's user only.
        None if Some(user) == upstream.get_user() => upstream.get_password().map(<[u8]>::to_vec),
        None => None,
    };
    if let Some(p) = password {
        config.password(p);
    }
    config.dbname(database.filter(|d| !d.is_empty()).or(upstream.get_dbname()).unwrap_or(user));
    config
}

/// Runs the endpoint's statements on pgmld.
#[derive(Clone)]
pub struct Backend {
    config: tokio_postgres::Config,
}

impl std::fmt::Debug for Backend {
    /// Shows where it connects, never the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("user", &self.config.get_user())
            .field("dbname", &self.config.get_dbname())
            .finish()
    }
}

/// A connection to pgmld that, dropped while a statement may still run, cancels it.
struct Session {
    client: Client,
    cancel: CancelToken,
    connection: JoinHandle<()>,
    finished: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.finished {
            return; // dropping the client ends the connection cleanly (Terminate)
        }
        let cancel = self.cancel.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = cancel.cancel_query(NoTls).await;
            });
        }
        // Closing the socket stops the work too, should the cancel request not arrive.
        self.connection.abort();
    }
}

impl Backend {
    /// A backend connecting with `config` (see [`pgmld_target`]).
    pub fn new(config: tokio_postgres::Config) -> Self {
        Backend { config }
    }

    async fn connect(&self) -> Result<Session, ApiError> {
        let (client, connection) =
            self.config.connect(NoTls).await.map_err(|e| match e.as_db_error() {
                // pgmld answered but refused the endpoint's credentials: a configuration
                // problem, not the caller's.
                Some(db) => ApiError::unavailable(format!(
                    "pgmld refused the endpoint's connection: {}",
                    db.message()
                )),
                None => ApiError::unavailable(format!("cannot connect to pgmld: {e}")),
            })?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("openai endpoint connection to pgmld ended: {e}");
            }
        });
        Ok(Session { cancel: client.cancel_token(), client, connection, finished: false })
    }

    /// One chat completion through `pgml.transform`.
    pub async fn complete(&self, req: &ChatRequest) -> Result<Completion, ApiError> {
        let mut session = self.connect().await?;
        let row = session
            .client
            .query_one(TRANSFORM_SQL, &[&req.task(), &req.inputs(), &req.args()])
            .await?;
        session.finished = true;
        let answer: Value = row.try_get(0)?;
        Completion::from_transform(&answer)
    }

    /// Starts a streamed chat completion: declares the cursor over `pgml.transform_stream`
    /// and reads its first row, so that a bad request fails before any event is sent.
    pub async fn stream(&self, req: &ChatRequest) -> Result<CursorStream, ApiError> {
        let session = self.connect().await?;
        session.client.batch_execute("BEGIN").await?;
        let declare = format!(
            "DECLARE {CURSOR} CURSOR FOR SELECT pgml.transform_stream(task => $1::jsonb, inputs => $2::jsonb[], args => $3::jsonb)"
        );
        session
            .client
            .execute(declare.as_str(), &[&req.task(), &req.inputs(), &req.args()])
            .await?;
        let mut stream = CursorStream { session, first: None };
        stream.first = stream.fetch().await?.map(Ok);
        Ok(stream)
    }

    /// Chat-capable models of the endpoint's database: deployed projects by name (the
    /// deployment's time) and each successful model as `pgml:<id>`, newest first. A
    /// database without the pgml schema has none.
    pub async fn models(&self) -> Result<Vec<ModelEntry>, ApiError> {
        let mut session = self.connect().await?;
        let sql = format!(
            "SELECT p.name, extract(epoch FROM d.created_at)::bigint, p.name \
             FROM pgml.projects p \
             JOIN LATERAL (SELECT created_at FROM pgml.deployments WHERE project_id = p.id ORDER BY id DESC LIMIT 1) d ON true \
             WHERE p.task IN {CHAT_TASKS} \
             UNION ALL \
             SELECT 'pgml:' || m.id, extract(epoch FROM m.created_at)::bigint, p.name \
             FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id \
             WHERE m.status = 'successful' AND p.task IN {CHAT_TASKS} \
             ORDER BY 2 DESC, 1"
        );
        let rows = match session.client.query(sql.as_str(), &[]).await {
            Ok(rows) => rows,
            // No pgml schema here (yet): nothing was tuned in this database.
            Err(e) if e.code().is_some_and(|c| matches!(c.code(), "42P01" | "3F000")) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        session.finished = true;
        rows.iter()
            .map(|r| {
                Ok(ModelEntry {
                    id: r.try_get(0)?,
                    created: r.try_get(1)?,
                    owned_by: r.try_get(2)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(ApiError::from)
    }
}

/// The rows of a streamed completion, read one `FETCH` at a time.
pub struct CursorStream {
    session: Session,
    first: Option<Result<StreamRow, ApiError>>,
}

impl CursorStream {
    /// `FETCH 1`: the next row, or `None` once the cursor is exhausted (then the
    /// transaction is committed and the connection closes cleanly).
    async fn fetch(&mut self) -> Result<Option<StreamRow>, ApiError> {
        let messages = self.session.client.simple_query(&format!("FETCH 1 FROM {CURSOR}")).await?;
        let text = messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0)),
            _ => None,
        });
        match text {
            Some(Some(text)) => {
                let json: Value = serde_json::from_str(text).map_err(|e| {
                    ApiError::unavailable(format!(
                        "pgml.transform_stream sent a row that is not JSON: {e}"
                    ))
                })?;
                StreamRow::from_json(&json).map(Some)
            }
            Some(None) => Err(ApiError::unavailable("pgml.transform_stream sent a NULL row")),
            None => {
                self.session.client.batch_execute("COMMIT").await?;
                self.session.finished = true;
                Ok(None)
            }
        }
    }

    /// Reads past the last row so the transaction commits and the connection closes
    /// cleanly (instead of being cancelled when dropped).
    pub async fn finish(&mut self) {
        while let Some(Ok(_)) = self.next().await {}
    }

    /// The next row of the stream; `None` at its end.
    pub async fn next(&mut self) -> Option<Result<StreamRow, ApiError>> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.session.finished {
            return None;
        }
        self.fetch().await.transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> tokio_postgres::Config {
        s.parse().unwrap()
    }

    #[test]
    fn target_takes_the_upstream_credentials_by_default() {
        let listen: SocketAddr = "0.0.0.0:6432".parse().unwrap();
        let c = pgmld_target(
            listen,
            &url("postgres://alice:s3cret@db.internal:5433/app"),
            None,
            None,
            None,
        );
        assert_eq!(c.get_hosts(), &[tokio_postgres::config::Host::Tcp("127.0.0.1".into())]);
        assert_eq!(c.get_ports(), &[6432]);
        assert_eq!((c.get_user(), c.get_dbname()), (Some("alice"), Some("app")));
        assert_eq!(c.get_password(), Some(&b"s3cret"[..]));

        let c = pgmld_target(
            "127.0.0.2:7000".parse().unwrap(),
            &url("postgres://alice:s3cret@h/app"),
            Some("bob"),
            None,
            Some("chat"),
        );
        assert_eq!(
            (c.get_user(), c.get_dbname(), c.get_password()),
            (Some("bob"), Some("chat"), None),
            "alice's password is not bob's"
        );
        assert_eq!(c.get_hosts(), &[tokio_postgres::config::Host::Tcp("127.0.0.2".into())]);
        let c = pgmld_target(
            "[::]:7000".parse().unwrap(),
            &url("postgres://h"),
            Some("bob"),
            Some("pw"),
            None,
        );
        assert_eq!((c.get_password(), c.get_dbname()), (Some(&b"pw"[..]), Some("bob")));
        assert_eq!(c.get_hosts(), &[tokio_postgres::config::Host::Tcp("::1".into())]);
    }

    #[test]
    fn debug_hides_the_password() {
        let c = pgmld_target(
            "127.0.0.1:1".parse().unwrap(),
            &url("postgres://a:topsecret@h/d"),
            None,
            None,
            None,
        );
        assert!(!format!("{:?}", Backend::new(c)).contains("topsecret"));
    }

    #[tokio::test]
    async fn unreachable_pgmld_is_503() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = pgmld_target(
            format!("127.0.0.1:{port}").parse().unwrap(),
            &url("postgres://u@h/d"),
            None,
            None,
            None,
        );
        let e = Backend::new(c).models().await.unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::SERVICE_UNAVAILABLE, "{e}");
        assert!(e.message.contains("cannot connect to pgmld"), "{}", e.message);
    }
}
