//! How pgmld reaches its upstream Postgres, in one place.
//!
//! The upstream URL is read once into an [`Upstream`]: its host and port, `sslmode` and
//! `sslrootcert` with libpq's meaning (see [`SslMode`]; TLS is rustls), and where pgmld's
//! own logins find a password. Two kinds of connection come out of it:
//!
//! * [`Upstream::connect_raw`]: a bare stream (SSLRequest and TLS handshake done, nothing
//!   else) for a client session, whose startup and authentication the proxy relays; the
//!   client's own credentials log in. CancelRequests go the same way
//!   ([`Upstream::send_cancel`]).
//! * [`Upstream::connect`]: a tokio-postgres client for pgmld's own work (migrations, logs,
//!   weights), logging in as the URL's user with the first password found in: the URL,
//!   pgmld's `upstream_password` setting, `PGPASSWORD`, the password file (`PGPASSFILE`,
//!   else `~/.pgpass`, libpq's format). Other crates get these through one [`Connector`],
//!   which also shares one connection per database for lookups; a statement Postgres
//!   refuses becomes a [`PostgresError`].
//!
//! [`redact`] shows a connection string without its password.

mod connector;
mod conninfo;
mod error;
mod passfile;
mod pgtls;
mod postgres_error;
mod raw;
mod tls;
mod upstream;

pub use connector::Connector;
pub use conninfo::{redact, REDACTED};
pub use error::UpstreamError;
pub use postgres_error::PostgresError;
pub use raw::{UpstreamReader, UpstreamStream, UpstreamWriter};
pub use tls::SslMode;
pub use upstream::Upstream;

use std::path::PathBuf;

/// The libpq environment variables pgmld honours, read once so tests can supply their own.
#[derive(Clone, Default)]
pub struct Env {
    /// `PGPASSWORD`: the password when neither the URL nor `upstream_password` has one.
    pub pgpassword: Option<String>,
    /// `PGPASSFILE`: the password file, instead of `~/.pgpass`.
    pub pgpassfile: Option<PathBuf>,
    /// `PGSSLMODE`: the mode when the URL names none.
    pub pgsslmode: Option<String>,
    /// `PGSSLROOTCERT`: the root file when the URL names none.
    pub pgsslrootcert: Option<String>,
    /// `HOME`: where `~/.pgpass` and `~/.postgresql/root.crt` are.
    pub home: Option<PathBuf>,
}

impl Env {
    /// The variables of this process; empty ones count as unset, as in libpq.
    pub fn from_process() -> Env {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Env {
            pgpassword: var("PGPASSWORD"),
            pgpassfile: var("PGPASSFILE").map(PathBuf::from),
            pgsslmode: var("PGSSLMODE"),
            pgsslrootcert: var("PGSSLROOTCERT"),
            home: var("HOME").map(PathBuf::from),
        }
    }
}

impl std::fmt::Debug for Env {
    /// Everything but the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("pgpassword", &self.pgpassword.as_ref().map(|_| REDACTED))
            .field("pgpassfile", &self.pgpassfile)
            .field("pgsslmode", &self.pgsslmode)
            .field("pgsslrootcert", &self.pgsslrootcert)
            .field("home", &self.home)
            .finish()
    }
}
