//! Why the upstream could not be set up or reached. No message ever holds the URL itself
//! or a password: they name hosts, ports, files and settings only.

/// Errors of [`crate::Upstream`].
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The connection string could not be parsed, or asks for something pgmld cannot do.
    #[error("invalid upstream URL: {0}")]
    InvalidUrl(String),
    /// `sslmode` / `sslrootcert` cannot be honoured (unknown mode, unreadable CA file).
    #[error("upstream TLS settings: {0}")]
    TlsSetup(String),
    /// The TCP connection could not be opened in time.
    #[error("cannot connect to the upstream at {addr}: {message}")]
    Connect {
        /// `host:port` tried.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// The upstream answered the SSLRequest with `N` while `sslmode` demands TLS.
    #[error("the upstream at {addr} does not accept TLS, but sslmode={mode} requires it")]
    TlsRefused {
        /// `host:port` tried.
        addr: String,
        /// The configured mode.
        mode: crate::SslMode,
    },
    /// The TLS handshake failed (certificate not trusted, wrong host name, ...).
    #[error("TLS handshake with the upstream at {addr} failed: {message}")]
    Handshake {
        /// `host:port` tried.
        addr: String,
        /// Why, in words (see `tls::explain`).
        message: String,
    },
    /// The upstream broke the protocol during SSL negotiation.
    #[error("upstream at {addr}: {message}")]
    Protocol {
        /// `host:port` tried.
        addr: String,
        /// What it sent.
        message: String,
    },
    /// Socket trouble after connecting.
    #[error("i/o with the upstream: {0}")]
    Io(#[from] std::io::Error),
}
