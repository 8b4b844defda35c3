//! What the private cluster is asked to be, and the paths and URL derived from it.

use std::path::{Path, PathBuf};

/// Longest socket directory path that still leaves room for `/.s.PGSQL.65535` within the
/// 107 usable bytes of a Unix socket address.
const MAX_SOCKET_DIR_LEN: usize = 107 - "/.s.PGSQL.65535".len();

/// Settings of the private Postgres cluster pgmld starts when no upstream answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Cluster data directory; created and initialised (initdb) when it has no `PG_VERSION`,
    /// reused as it is otherwise.
    pub data_dir: PathBuf,
    /// TCP port the server listens on, on 127.0.0.1 only.
    pub port: u16,
    /// Directory of `initdb`/`pg_ctl`/`postgres`; `None` looks them up (`pg_config --bindir`,
    /// then the newest `/usr/lib/postgresql/*/bin`).
    pub bin_dir: Option<PathBuf>,
    /// Password of the `postgres` superuser, set at initdb (an existing cluster keeps its
    /// own) and put into [`super::EmbeddedCluster::url`]. `None`: no password.
    pub superuser_password: Option<String>,
    /// Extra `pg_hba.conf` lines, placed before the defaults so they win (first match
    /// counts), e.g. `host all all 127.0.0.1/32 scram-sha-256`.
    pub hba: Vec<String>,
    /// Authentication method of the default local and loopback `pg_hba.conf` lines and of
    /// initdb's `--auth`. Default `"trust"`: only local processes can reach the cluster.
    pub auth_default: String,
}

impl ClusterOptions {
    /// Options for a cluster in `data_dir` on `port`, with every other setting at its
    /// default (binaries looked up, no password, no extra hba lines, trust).
    pub fn new(data_dir: impl Into<PathBuf>, port: u16) -> Self {
        ClusterOptions {
            data_dir: data_dir.into(),
            port,
            bin_dir: None,
            superuser_password: None,
            hba: Vec::new(),
            auth_default: "trust".to_string(),
        }
    }
}

/// Picks the server's Unix socket directory: `<data_dir>-sock` beside the data directory when
/// that path is short enough for a socket address, else `/tmp/pgmld-<port>`.
pub(crate) fn socket_dir(data_dir: &Path, port: u16) -> PathBuf {
    if let (Some(parent), Some(name)) = (data_dir.parent(), data_dir.file_name()) {
        let mut dir_name = name.to_os_string();
        dir_name.push("-sock");
        let candidate = parent.join(dir_name);
        if candidate.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
            return candidate;
        }
    }
    PathBuf::from(format!("/tmp/pgmld-{port}"))
}

/// `postgres://postgres[:password]@127.0.0.1:<port>/postgres`, the password percent-encoded.
pub(crate) fn url(port: u16, password: Option<&str>) -> String {
    match password {
        Some(pw) => format!("postgres://postgres:{}@127.0.0.1:{port}/postgres", percent_encode(pw)),
        None => format!("postgres://postgres@127.0.0.1:{port}/postgres"),
    }
}

/// Percent-encodes every byte but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Quotes `value` for the shell command line `pg_ctl` builds from its `-o` option.
pub(crate) fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn defaults_are_trust_and_lookup() {
        let o = ClusterOptions::new("/var/lib/pgmld/data", 6543);
        assert_eq!(o.auth_default, "trust");
        assert!(o.bin_dir.is_none() && o.superuser_password.is_none() && o.hba.is_empty());
    }

    #[test]
    fn socket_dir_sits_beside_data_or_falls_back_to_tmp() {
        assert_eq!(
            socket_dir(Path::new("/srv/pgmld-data"), 1),
            PathBuf::from("/srv/pgmld-data-sock")
        );
        let long = PathBuf::from(format!("/{}/data", "x".repeat(120)));
        assert_eq!(socket_dir(&long, 6543), PathBuf::from("/tmp/pgmld-6543"));
    }

    #[test]
    fn url_password_round_trips_through_tokio_postgres() {
        let pw = "p@ss:w/rd %?#'\"é";
        let text = url(6543, Some(pw));
        let config = tokio_postgres::Config::from_str(&text).expect("parses");
        assert_eq!(config.get_password(), Some(pw.as_bytes()));
        assert_eq!(config.get_user(), Some("postgres"));
        assert_eq!(config.get_ports(), &[6543]);
        assert_eq!(url(5, None), "postgres://postgres@127.0.0.1:5/postgres");
    }

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
