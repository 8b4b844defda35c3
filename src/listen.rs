//! The addresses pgmld listens on, and startup errors that say which setting moves each one
//! when it cannot be bound (a second pgmld holding 9187 is the usual case).

use std::io::ErrorKind;

/// One listener and the settings that choose its address.
pub struct Listener {
    /// What listens there, for messages.
    pub what: &'static str,
    /// The command-line flag, when there is one.
    pub flag: Option<&'static str>,
    /// The config file key.
    pub setting: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// How to turn it off, when it can be.
    pub off: Option<&'static str>,
}

/// The Postgres protocol listener (`listen`).
pub const CLIENTS: Listener = Listener {
    what: "Postgres clients",
    flag: Some("--listen"),
    setting: "listen",
    env: "PGMLD_LISTEN",
    off: None,
};

/// The Prometheus endpoint (`metrics_listen`); empty turns it off.
pub const METRICS: Listener = Listener {
    what: "the Prometheus metrics endpoint",
    flag: Some("--metrics-listen"),
    setting: "metrics_listen",
    env: "PGMLD_METRICS_LISTEN",
    off: Some("--metrics-listen '' (or metrics_listen = \"\")"),
};

/// The optional OpenAI-compatible endpoint (`openai_listen`); unset turns it off.
pub const OPENAI: Listener = Listener {
    what: "the OpenAI-compatible endpoint",
    flag: None,
    setting: "openai_listen",
    env: "PGMLD_OPENAI_LISTEN",
    off: Some("leaving openai_listen unset"),
};

/// The optional web dashboard (`dashboard_listen`); unset turns it off.
pub const DASHBOARD: Listener = Listener {
    what: "the dashboard",
    flag: Some("--dashboard-listen"),
    setting: "dashboard_listen",
    env: "PGMLD_DASHBOARD_LISTEN",
    off: Some("leaving dashboard_listen unset"),
};

impl Listener {
    /// The startup error for `addr` failing to bind with `e`: what could not listen where,
    /// the OS's reason with what it usually means, and the settings that change it.
    pub fn bind_error(&self, addr: &str, e: &std::io::Error) -> anyhow::Error {
        let why = match e.kind() {
            ErrorKind::AddrInUse => "; another process holds that port (a second pgmld?)",
            ErrorKind::PermissionDenied => "; ports below 1024 need privileges",
            ErrorKind::AddrNotAvailable => "; that address is not one of this machine's",
            _ => "",
        };
        let settings = match self.flag {
            Some(flag) => format!(
                "{flag} HOST:PORT ({} in the config file, {} in the environment)",
                self.setting, self.env
            ),
            None => {
                format!("{} in the config file ({} in the environment)", self.setting, self.env)
            }
        };
        let off = match self.off {
            Some(off) => format!(", or turn it off with {off}"),
            None => String::new(),
        };
        anyhow::anyhow!(
            "cannot listen for {} on {addr}: {e}{why}. Choose another address with {settings}{off}.",
            self.what
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_address_the_reason_and_the_settings() {
        let taken = std::io::Error::from(ErrorKind::AddrInUse);
        let m = METRICS.bind_error("127.0.0.1:9187", &taken).to_string();
        for part in [
            "Prometheus",
            "127.0.0.1:9187",
            "second pgmld",
            "--metrics-listen HOST:PORT",
            "metrics_listen",
            "PGMLD_METRICS_LISTEN",
            "--metrics-listen ''",
        ] {
            assert!(m.contains(part), "{part:?} missing from: {m}");
        }
        let m = CLIENTS
            .bind_error("0.0.0.0:80", &std::io::Error::from(ErrorKind::PermissionDenied))
            .to_string();
        assert!(m.contains("--listen HOST:PORT") && m.contains("below 1024"), "{m}");
        assert!(!m.contains("turn it off"), "{m}");
        let m = OPENAI.bind_error("127.0.0.1:8000", &taken).to_string();
        assert!(m.contains("openai_listen in the config file") && m.contains("unset"), "{m}");
        assert!(!m.contains("--"), "no such flag: {m}");
        let m = DASHBOARD.bind_error("127.0.0.1:8640", &taken).to_string();
        assert!(
            m.contains("--dashboard-listen HOST:PORT") && m.contains("PGMLD_DASHBOARD_LISTEN"),
            "{m}"
        );
    }
}
