//! Why a client session ended abnormally.

/// Errors that end a session (never the daemon).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Socket trouble on either side.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol (garbage bytes, oversized or malformed message).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The upstream Postgres could not be reached or broke the protocol.
    #[error("upstream: {0}")]
    Upstream(String),
    /// TLS set-up or handshake failed.
    #[error("tls: {0}")]
    Tls(String),
    /// The connection did not finish startup and authentication within
    /// `authentication_timeout` (Postgres' wording).
    #[error("canceling authentication due to timeout")]
    AuthTimeout,
    /// A pgwire message could not be decoded or encoded.
    #[error("message codec: {0}")]
    Codec(#[from] pgwire::error::PgWireError),
}
