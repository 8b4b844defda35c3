//! Rewriting a connection string so it names another database on the same server.

use crate::error::chain;
use crate::SchemaError;
use std::fmt::Write as _;
use std::str::FromStr;
use tokio_postgres::config::{ChannelBinding, Host, LoadBalanceHosts, SslMode, TargetSessionAttrs};
use tokio_postgres::Config;

/// Returns a connection string for the server, user and settings of `url` but database `db`.
///
/// `url` may be a `postgres://` URL or a libpq `key=value` string; both are parsed by
/// tokio-postgres, and the result is a `key=value` string that tokio-postgres accepts (values
/// quoted, so passwords and paths with spaces or quotes survive).
pub fn url_with_database(url: &str, db: &str) -> Result<String, SchemaError> {
    let mut config = parse(url)?;
    config.dbname(db);
    to_key_value(&config)
}

/// Parses a connection string, hiding the string itself from the error (it may hold a
/// password).
pub(crate) fn parse(url: &str) -> Result<Config, SchemaError> {
    Config::from_str(url).map_err(|e| SchemaError::InvalidUrl { message: chain(&e) })
}

/// Describes where a config points (hosts, ports, database), without credentials, for
/// error messages and logs.
pub(crate) fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config.get_hosts().iter().map(host_text).collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "host={} port={} dbname={}",
        if hosts.is_empty() { "localhost".to_string() } else { hosts.join(",") },
        if ports.is_empty() { "5432".to_string() } else { ports.join(",") },
        config.get_dbname().or(config.get_user()).unwrap_or("?"),
    )
}

/// The text form of one host entry.
fn host_text(host: &Host) -> String {
    match host {
        Host::Tcp(name) => name.clone(),
        Host::Unix(path) => path.display().to_string(),
    }
}

/// Writes every setting of `config` as a `key=value` connection string.
fn to_key_value(config: &Config) -> Result<String, SchemaError> {
    let mut out = String::new();
    let mut push = |key: &str, value: &str| {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{key}={}", quote(value));
    };
    let hosts: Vec<String> = config.get_hosts().iter().map(host_text).collect();
    if hosts.iter().any(|h| h.contains(',')) {
        return Err(invalid("a host or socket path contains ','"));
    }
    if !hosts.is_empty() {
        push("host", &hosts.join(","));
    }
    if !config.get_hostaddrs().is_empty() {
        let addrs: Vec<String> = config.get_hostaddrs().iter().map(|a| a.to_string()).collect();
        push("hostaddr", &addrs.join(","));
    }
    if !config.get_ports().is_empty() {
        let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
        push("port", &ports.join(","));
    }
    if let Some(user) = config.get_user() {
        push("user", user);
    }
    if let Some(password) = config.get_password() {
        let text = std::str::from_utf8(password).map_err(|_| invalid("password is not UTF-8"))?;
        push("password", text);
    }
    if let Some(db) = config.get_dbname() {
        push("dbname", db);
    }
    if let Some(options) = config.get_options() {
        push("options", options);
    }
    if let Some(name) = config.get_application_name() {
        push("application_name", name);
    }
    push("sslmode", ssl_mode(config.get_ssl_mode())?);
    if let Some(t) = config.get_connect_timeout() {
        push("connect_timeout", &t.as_secs().max(1).to_string());
    }
    if let Some(t) = config.get_tcp_user_timeout() {
        push("tcp_user_timeout", &t.as_secs().max(1).to_string());
    }
    push("keepalives", if config.get_keepalives() { "1" } else { "0" });
    push("keepalives_idle", &config.get_keepalives_idle().as_secs().max(1).to_string());
    if let Some(t) = config.get_keepalives_interval() {
        push("keepalives_interval", &t.as_secs().max(1).to_string());
    }
    if let Some(n) = config.get_keepalives_retries() {
        push("keepalives_retries", &n.to_string());
    }
    push("target_session_attrs", session_attrs(config.get_target_session_attrs())?);
    push("channel_binding", channel_binding(config.get_channel_binding())?);
    push("load_balance_hosts", load_balance(config.get_load_balance_hosts())?);
    Ok(out)
}

/// Quotes a value for a `key=value` string: `'…'` with `\` and `'` backslash-escaped.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// An [`SchemaError::InvalidUrl`] with a fixed message.
fn invalid(message: &str) -> SchemaError {
    SchemaError::InvalidUrl { message: message.to_string() }
}

/// The `sslmode` keyword for a mode.
fn ssl_mode(mode: SslMode) -> Result<&'static str, SchemaError> {
    match mode {
        SslMode::Disable => Ok("disable"),
        SslMode::Prefer => Ok("prefer"),
        SslMode::Require => Ok("require"),
        _ => Err(invalid("unsupported sslmode")),
    }
}

/// The `target_session_attrs` keyword for a setting.
fn session_attrs(attrs: TargetSessionAttrs) -> Result<&'static str, SchemaError> {
    match attrs {
        TargetSessionAttrs::Any => Ok("any"),
        TargetSessionAttrs::ReadWrite => Ok("read-write"),
        TargetSessionAttrs::ReadOnly => Ok("read-only"),
        _ => Err(invalid("unsupported target_session_attrs")),
    }
}

/// The `channel_binding` keyword for a setting.
fn channel_binding(binding: ChannelBinding) -> Result<&'static str, SchemaError> {
    match binding {
        ChannelBinding::Disable => Ok("disable"),
        ChannelBinding::Prefer => Ok("prefer"),
        ChannelBinding::Require => Ok("require"),
        _ => Err(invalid("unsupported channel_binding")),
    }
}

/// The `load_balance_hosts` keyword for a setting.
fn load_balance(setting: LoadBalanceHosts) -> Result<&'static str, SchemaError> {
    match setting {
        LoadBalanceHosts::Disable => Ok("disable"),
        LoadBalanceHosts::Random => Ok("random"),
        _ => Err(invalid("unsupported load_balance_hosts")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses the rewritten string back, failing the test when it does not parse.
    fn reparse(s: &str) -> Config {
        match Config::from_str(s) {
            Ok(c) => c,
            Err(e) => panic!("rewritten string {s:?} does not parse: {e}"),
        }
    }

    #[test]
    fn url_form_keeps_server_and_credentials() {
        let out = url_with_database(
            "postgres://alice:s3cr%27t@db.example:6000/first?sslmode=require",
            "second",
        )
        .expect("rewrite");
        let c = reparse(&out);
        assert_eq!(c.get_hosts(), &[Host::Tcp("db.example".into())]);
        assert_eq!(c.get_ports(), &[6000]);
        assert_eq!(c.get_user(), Some("alice"));
        assert_eq!(c.get_password(), Some(&b"s3cr't"[..]));
        assert_eq!(c.get_dbname(), Some("second"));
        assert_eq!(c.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn key_value_form_with_quotes_and_spaces() {
        let input = r"host=127.0.0.1 port=5432 user=postgres password='a b\'c\\d' dbname=postgres application_name=pgmld";
        let out = url_with_database(input, "my db").expect("rewrite");
        let c = reparse(&out);
        assert_eq!(c.get_password(), Some(&br"a b'c\d"[..]));
        assert_eq!(c.get_dbname(), Some("my db"));
        assert_eq!(c.get_application_name(), Some("pgmld"));
        assert_eq!(c.get_ports(), &[5432]);
    }

    #[test]
    fn unix_socket_and_several_hosts_survive() {
        let out = url_with_database("host=/var/run/postgresql,10.0.0.2 port=5432,5433 user=u", "d")
            .expect("rewrite");
        let c = reparse(&out);
        assert_eq!(
            c.get_hosts(),
            &[Host::Unix("/var/run/postgresql".into()), Host::Tcp("10.0.0.2".into())]
        );
        assert_eq!(c.get_ports(), &[5432, 5433]);
        assert_eq!(c.get_dbname(), Some("d"));
    }

    #[test]
    fn url_without_database_gets_one() {
        let out = url_with_database("postgresql://postgres@localhost", "test").expect("rewrite");
        assert_eq!(reparse(&out).get_dbname(), Some("test"));
    }

    #[test]
    fn garbage_is_rejected_without_echoing_it() {
        let err = url_with_database("host=x password=hunter2 bogus=1", "d").expect_err("must fail");
        assert!(matches!(err, SchemaError::InvalidUrl { .. }));
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("bogus"), "the cause is shown: {err}");
    }

    #[test]
    fn describe_has_no_password() {
        let c = parse("postgres://u:topsecret@h:1/db").expect("parse");
        let text = describe(&c);
        assert_eq!(text, "host=h port=1 dbname=db");
    }
}
