//! [`Upstream`]: the parsed upstream URL and the two ways of connecting to it.

use crate::error::UpstreamError;
use crate::passfile::{self, Entry};
use crate::pgtls::MakeRustls;
use crate::raw::{UpstreamStream, SSL_REQUEST};
use crate::tls::{self, SslMode, Tls};
use crate::{conninfo, Env};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio_postgres::config::{Host, SslNegotiation};
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

/// How long forwarding a CancelRequest may take to connect.
const CANCEL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The upstream Postgres, as the URL describes it. Cheap to clone (shared).
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    /// tokio-postgres settings: the URL without pgmld's TLS keys, `ssl_mode` set from
    /// [`Inner::mode`], and the password when one was found outside the password file.
    config: tokio_postgres::Config,
    mode: SslMode,
    /// `None` for `sslmode=disable`.
    tls: Option<Tls>,
    /// First host, as written (checked against the certificate).
    host: String,
    /// Where to connect: `hostaddr` when given, else `host`.
    connect_host: String,
    port: u16,
    user: String,
    /// The URL's database (else the user's name).
    database: String,
    /// `sslnegotiation=direct`: TLS from the first byte, no SSLRequest (Postgres 17+).
    direct: bool,
    /// Where pgmld's own password comes from, for the startup log.
    password_source: &'static str,
    /// Password file lines, consulted per database when no other source gave a password.
    passfile: Vec<Entry>,
}

impl Upstream {
    /// Reads `url` (`postgres://…` or `key=value`), with `configured_password` (pgmld's
    /// `upstream_password`) and libpq's environment `env` as further password and TLS
    /// sources. Errors never contain the URL or a password.
    pub fn new(
        url: &str,
        configured_password: Option<&str>,
        env: &Env,
    ) -> Result<Upstream, UpstreamError> {
        let split = conninfo::split(url)?;
        let mut config: tokio_postgres::Config =
            split.rest.parse().map_err(|e| UpstreamError::InvalidUrl(chain(&e)))?;
        let direct = config.get_ssl_negotiation() == SslNegotiation::Direct;
        let (mode, tls) =
            tls::settings(split.sslmode.as_deref(), split.sslrootcert.as_deref(), direct, env)?;
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        if direct && tls.is_none() {
            return Err(UpstreamError::TlsSetup(
                "sslnegotiation=direct needs TLS, but sslmode=disable".into(),
            ));
        }
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(_) => {
                return Err(UpstreamError::InvalidUrl(
                    "pgmld connects to the upstream over TCP; give a host name or address, not a socket directory".into(),
                ))
            }
            None => {
                config.host("127.0.0.1");
                "127.0.0.1".to_string()
            }
        };
        let connect_host =
            config.get_hostaddrs().first().map_or_else(|| host.clone(), |a| a.to_string());
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or_default().to_string();
        let database = config.get_dbname().unwrap_or(&user).to_string();
        let mut passfile = Vec::new();
        let nonempty = |p: &&str| !p.is_empty();
        let password_source = if config.get_password().is_some() {
            "the URL"
        } else if let Some(p) = configured_password.filter(nonempty) {
            config.password(p);
            "upstream_password"
        } else if let Some(p) = env.pgpassword.as_deref().filter(nonempty) {
            config.password(p);
            "PGPASSWORD"
        } else {
            let path =
                env.pgpassfile.clone().or_else(|| env.home.as_ref().map(|h| h.join(".pgpass")));
            passfile = path.map(|p| passfile::load(&p)).unwrap_or_default();
            if passfile.is_empty() {
                "none"
            } else {
                "the password file"
            }
        };
        let inner = Inner {
            config,
            mode,
            tls,
            host,
            connect_host,
            port,
            user,
            database,
            direct,
            password_source,
            passfile,
        };
        Ok(Upstream { inner: Arc::new(inner) })
    }

    /// [`Upstream::new`] with this process's environment and no configured password.
    pub fn from_url(url: &str) -> Result<Upstream, UpstreamError> {
        Upstream::new(url, None, &Env::from_process())
    }

    /// `host:port`, for logs and errors.
    pub fn addr(&self) -> String {
        let host = &self.inner.host;
        match host.contains(':') {
            true => format!("[{host}]:{}", self.inner.port),
            false => format!("{host}:{}", self.inner.port),
        }
    }

    /// The TLS mode in force.
    pub fn ssl_mode(&self) -> SslMode {
        self.inner.mode
    }

    /// The URL's user (pgmld's own logins).
    pub fn user(&self) -> &str {
        &self.inner.user
    }

    /// The URL's database, else the user's name.
    pub fn database(&self) -> &str {
        &self.inner.database
    }

    /// Where pgmld's own password comes from: `the URL`, `upstream_password`,
    /// `PGPASSWORD`, `the password file` or `none`. Never the password itself.
    pub fn password_source(&self) -> &'static str {
        self.inner.password_source
    }

    /// Where a connection to `database` goes, without credentials, for messages.
    pub fn describe(&self, database: &str) -> String {
        format!(
            "host={} port={} dbname={database} sslmode={}",
            self.inner.host, self.inner.port, self.inner.mode
        )
    }

    /// tokio-postgres settings for `database` as the URL's user, password included.
    pub fn config(&self, database: &str) -> tokio_postgres::Config {
        let i = &self.inner;
        let mut config = i.config.clone();
        config.dbname(database);
        if config.get_password().is_none() {
            if let Some(p) =
                passfile::lookup(&i.passfile, &i.host, &i.port.to_string(), database, &i.user)
            {
                config.password(p);
            }
        }
        config
    }

    /// A connection of pgmld's own to `database`; its connection task runs in the
    /// background and ends when the client is dropped.
    pub async fn connect(&self, database: &str) -> Result<Client, tokio_postgres::Error> {
        self.connect_with_task(database).await.map(|(client, _)| client)
    }

    /// [`Upstream::connect`], also returning the connection task, for callers that wait
    /// until the connection is closed.
    pub async fn connect_with_task(
        &self,
        database: &str,
    ) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        self.connect_config(self.config(database)).await
    }

    /// A connection to `database` as `user` with `password` and nothing of pgmld's own
    /// credentials (neither the URL's password nor the password file), over the same TLS:
    /// the upstream decides whether that role may log in, as it would for a client. For
    /// logins that pgmld checks on a user's behalf (the dashboard).
    pub async fn connect_as(
        &self,
        database: &str,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let mut config = self.inner.config.clone();
        config.dbname(database).user(user).password(password);
        self.connect_config(config).await.map(|(client, _)| client)
    }

    async fn connect_config(
        &self,
        config: tokio_postgres::Config,
    ) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        match &self.inner.tls {
            None => {
                let (client, conn) = config.connect(NoTls).await?;
                Ok((client, tokio::spawn(drive(conn))))
            }
            Some(tls) => {
                let (client, conn) = config.connect(MakeRustls(tls.clone())).await?;
                Ok((client, tokio::spawn(drive(conn))))
            }
        }
    }

    /// A connection of pgmld's own to `database` whose notifications (after `LISTEN`)
    /// arrive on the returned channel, which closes when the connection ends; for the job
    /// queue's LISTEN/NOTIFY.
    pub async fn connect_listening(
        &self,
        database: &str,
    ) -> Result<(Client, UnboundedReceiver<Notification>), tokio_postgres::Error> {
        let config = self.config(database);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = match &self.inner.tls {
            None => {
                let (client, conn) = config.connect(NoTls).await?;
                tokio::spawn(forward_notifications(conn, tx));
                client
            }
            Some(tls) => {
                let (client, conn) = config.connect(MakeRustls(tls.clone())).await?;
                tokio::spawn(forward_notifications(conn, tx));
                client
            }
        };
        Ok((client, rx))
    }

    /// A bare connection for a client session: TCP, then TLS as `sslmode` asks, all within
    /// `timeout`. Nothing is sent after the handshake.
    pub async fn connect_raw(&self, timeout: Duration) -> Result<UpstreamStream, UpstreamError> {
        let addr = self.addr();
        tokio::time::timeout(timeout, self.open()).await.map_err(|_| UpstreamError::Connect {
            addr,
            message: format!("timed out after {} s", timeout.as_secs_f32()),
        })?
    }

    /// Forwards a CancelRequest `packet` over a fresh connection (TLS as for sessions).
    pub async fn send_cancel(&self, packet: &[u8]) -> Result<(), UpstreamError> {
        let mut s = self.connect_raw(CANCEL_CONNECT_TIMEOUT).await?;
        s.write_all(packet).await?;
        s.flush().await?;
        let _ = s.shutdown().await;
        Ok(())
    }

    async fn open(&self) -> Result<UpstreamStream, UpstreamError> {
        let i = &self.inner;
        let mut tcp = TcpStream::connect((i.connect_host.as_str(), i.port))
            .await
            .map_err(|e| UpstreamError::Connect { addr: self.addr(), message: e.to_string() })?;
        tcp.set_nodelay(true)?;
        let Some(tls) = &i.tls else {
            return Ok(UpstreamStream::Plain(tcp));
        };
        if !i.direct {
            tcp.write_all(&SSL_REQUEST).await?;
            let mut answer = [0u8; 1];
            tcp.read_exact(&mut answer).await?;
            match answer[0] {
                b'S' => {}
                b'N' if !i.mode.requires_tls() => return Ok(UpstreamStream::Plain(tcp)),
                b'N' => return Err(UpstreamError::TlsRefused { addr: self.addr(), mode: i.mode }),
                other => {
                    return Err(UpstreamError::Protocol {
                        addr: self.addr(),
                        message: format!(
                            "unexpected answer {:?} to the SSL request",
                            char::from(other)
                        ),
                    })
                }
            }
        }
        let name = tls::server_name(&i.host, tls.verify_name)?;
        match tokio_rustls::TlsConnector::from(tls.config.clone()).connect(name, tcp).await {
            Ok(s) => Ok(UpstreamStream::Tls(Box::new(s))),
            Err(e) => Err(UpstreamError::Handshake {
                addr: self.addr(),
                message: tls::explain(&e, &i.host, tls),
            }),
        }
    }
}

impl std::fmt::Debug for Upstream {
    /// Where and how, never the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr())
            .field("sslmode", &self.inner.mode)
            .field("user", &self.inner.user)
            .field("database", &self.inner.database)
            .field("password_source", &self.inner.password_source)
            .finish()
    }
}

/// Drives a tokio-postgres connection until it closes.
/// Drives `conn`, sending its notifications to `tx` (other messages, notices included,
/// are dropped as [`drive`] drops them).
async fn forward_notifications<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    tx: UnboundedSender<Notification>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                let _ = tx.send(n);
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!("upstream listening connection ended: {e}");
                return;
            }
            None => return,
        }
    }
}

async fn drive(conn: impl Future<Output = Result<(), tokio_postgres::Error>>) {
    if let Err(e) = conn.await {
        tracing::debug!("upstream connection ended: {e}");
    }
}

/// An error and its causes, `a: b`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn env() -> Env {
        Env { home: Some(PathBuf::from("/nonexistent-pgmld-home")), ..Env::default() }
    }

    #[test]
    fn password_precedence() {
        let e = Env { pgpassword: Some("from-env".into()), ..env() };
        let up = Upstream::new("postgres://u:from-url@h/db", Some("from-config"), &e).unwrap();
        assert_eq!(up.config("db").get_password(), Some(&b"from-url"[..]));
        assert_eq!(up.password_source(), "the URL");
        let up = Upstream::new("postgres://u@h/db", Some("from-config"), &e).unwrap();
        assert_eq!(up.config("x").get_password(), Some(&b"from-config"[..]));
        let up = Upstream::new("postgres://u@h/db", Some(""), &e).unwrap();
        assert_eq!(
            (up.config("x").get_password(), up.password_source()),
            (Some(&b"from-env"[..]), "PGPASSWORD")
        );
        let up = Upstream::new("postgres://u@h/db", None, &env()).unwrap();
        assert_eq!((up.config("x").get_password(), up.password_source()), (None, "none"));
    }

    #[test]
    fn password_file_is_matched_per_database() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("pgmld-up-pgpass-{}", std::process::id()));
        std::fs::write(&path, "h:5433:app:u:app-pw\nh:5433:*:u:any-pw\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Env { pgpassfile: Some(path.clone()), ..env() };
        let up = Upstream::new("postgres://u@h:5433/app", None, &e).unwrap();
        assert_eq!(up.password_source(), "the password file");
        assert_eq!(up.config("app").get_password(), Some(&b"app-pw"[..]));
        assert_eq!(up.config("other").get_password(), Some(&b"any-pw"[..]));
        let up = Upstream::new("postgres://v@h:5433/app", None, &e).unwrap();
        assert_eq!(up.config("app").get_password(), None);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn url_shapes() {
        let up = Upstream::new(
            "postgres://u:pw@db.example:6000/app?sslmode=verify-full&sslrootcert=system",
            None,
            &env(),
        );
        // Either the system has roots (verify-full against them) or the error says why.
        match up {
            Ok(up) => assert_eq!(
                (up.ssl_mode(), up.addr()),
                (SslMode::VerifyFull, "db.example:6000".to_string())
            ),
            Err(e) => assert!(e.to_string().contains("sslrootcert=system"), "{e}"),
        }
        let up = Upstream::new("host=::1 port=7 user=u sslmode=disable", None, &env()).unwrap();
        assert_eq!(
            (up.addr(), up.database(), up.ssl_mode()),
            ("[::1]:7".to_string(), "u", SslMode::Disable)
        );
        assert!(!format!("{up:?}").contains("pw"));
        let e =
            Upstream::new("host=/var/run/postgresql user=u", None, &env()).unwrap_err().to_string();
        assert!(e.contains("over TCP"), "{e}");
        let e = Upstream::new("postgres://u:hunter2@h/db?bogus=1", None, &env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus") && !e.contains("hunter2"), "{e}");
        let up = Upstream::new("postgres://u@h/db", None, &env()).unwrap();
        assert_eq!(
            (up.ssl_mode(), up.describe("d")),
            (SslMode::Prefer, "host=h port=5432 dbname=d sslmode=prefer".to_string())
        );
    }
}
