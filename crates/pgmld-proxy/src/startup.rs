//! Connection start: SSL/GSS negotiation with the client, the startup packet, and the
//! authentication exchange relayed between client and upstream, so the upstream alone
//! decides who gets in (trust, cleartext, md5, SCRAM-SHA-256 all pass through unchanged).

use crate::error::ProxyError;
use crate::wire::{self, split_message};
use bytes::{Bytes, BytesMut};
use pgwire::messages::startup::Startup;
use std::collections::BTreeMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client stream, plain or TLS.
pub enum ClientStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// After SSLRequest + handshake.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Boxed halves of a client stream.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// Boxed write half.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

impl ClientStream {
    /// Splits into independently owned halves (TcpStream's split needs no lock).
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            ClientStream::Plain(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            ClientStream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (Box::new(r), Box::new(w))
            }
        }
    }

    async fn read_packet(&mut self) -> Result<BytesMut, ProxyError> {
        match self {
            ClientStream::Plain(s) => wire::read_startup_packet(s).await,
            ClientStream::Tls(s) => wire::read_startup_packet(s).await,
        }
    }

    /// Writes `b` and flushes (TLS keeps records queued until then).
    pub(crate) async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.write_all(b).await,
            ClientStream::Tls(s) => {
                s.write_all(b).await?;
                s.flush().await
            }
        }
    }

    async fn read_buf(&mut self, b: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.read_buf(b).await,
            ClientStream::Tls(s) => s.read_buf(b).await,
        }
    }
}

/// What a new connection turned out to be.
pub enum FirstContact {
    /// A session to start.
    Session {
        /// The client's stream, TLS already negotiated.
        stream: ClientStream,
        /// The startup packet as sent (forwarded upstream unchanged).
        packet: BytesMut,
        /// Its parameters (user, database, options...).
        params: BTreeMap<String, String>,
    },
    /// A CancelRequest: pid and key.
    Cancel(i32, Vec<u8>),
}

/// Reads SSLRequest / GSSENCRequest / CancelRequest / StartupMessage from a new client.
pub async fn first_contact(
    tcp: TcpStream,
    tls: Option<&tokio_rustls::TlsAcceptor>,
) -> Result<FirstContact, ProxyError> {
    let mut stream = ClientStream::Plain(tcp);
    loop {
        let packet = stream.read_packet().await?;
        match wire::startup_code(&packet) {
            wire::SSL_REQUEST => match (tls, stream) {
                (Some(acceptor), ClientStream::Plain(mut tcp)) => {
                    tcp.write_all(b"S").await?;
                    let s =
                        acceptor.accept(tcp).await.map_err(|e| ProxyError::Tls(e.to_string()))?;
                    stream = ClientStream::Tls(Box::new(s));
                }
                (_, mut s) => {
                    s.write_all(b"N").await?;
                    stream = s;
                }
            },
            wire::GSSENC_REQUEST => stream.write_all(b"N").await?,
            wire::CANCEL_REQUEST if packet.len() >= 16 => {
                let pid = i32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
                return Ok(FirstContact::Cancel(pid, packet[12..].to_vec()));
            }
            code if code >> 16 == 3 => {
                let startup: Startup = wire::decode_startup(&packet)?;
                return Ok(FirstContact::Session { stream, packet, params: startup.parameters });
            }
            code => return Err(ProxyError::Protocol(format!("unsupported startup code {code}"))),
        }
    }
}

/// Sends a FATAL error to a client still in the startup phase.
pub async fn refuse(stream: &mut ClientStream, code: &str, message: &str) {
    let mut b = BytesMut::new();
    wire::fatal_response(code, message, &mut b);
    let _ = stream.write_all(&b).await;
}

/// The upstream side after a successful start.
pub struct Upstream {
    /// The connection (plain or TLS, as `sslmode` asked), ready for queries.
    pub stream: pgmld_upstream::UpstreamStream,
    /// Bytes already read from the client past the startup exchange (pipelined queries).
    pub client_leftover: BytesMut,
    /// The upstream's last startup messages, ending with ReadyForQuery, not yet sent: the
    /// client may send a query (and a cancel for it) as soon as it reads them, so they go
    /// out only once the session is ready to forward that query.
    pub ready: BytesMut,
}

/// Outcome of relaying authentication.
pub enum AuthOutcome {
    /// Authenticated; the session can start.
    Ready(Upstream),
    /// The upstream refused (its ErrorResponse was forwarded to the client).
    Refused,
}

/// Connects to the upstream (TLS as its `sslmode` asks), sends the client's startup
/// packet, and relays the authentication exchange. `give_key` turns the upstream's key
/// into the client's key.
pub async fn authenticate(
    client: &mut ClientStream,
    upstream: &pgmld_upstream::Upstream,
    packet: &[u8],
    connect_timeout: std::time::Duration,
    mut give_key: impl FnMut(i32, Vec<u8>) -> (i32, Vec<u8>),
) -> Result<AuthOutcome, ProxyError> {
    let mut up = upstream
        .connect_raw(connect_timeout)
        .await
        .map_err(|e| ProxyError::Upstream(e.to_string()))?;
    // Over TLS, written bytes wait in the TLS layer until flushed.
    up.write_all(packet).await?;
    up.flush().await?;
    let mut from_up = BytesMut::with_capacity(4096);
    let mut from_client = BytesMut::new();
    let mut to_client = BytesMut::new();
    loop {
        let msg = match split_message(&mut from_up, 1 << 24)? {
            Some(m) => m,
            None => {
                if !to_client.is_empty() {
                    client.write_all(&to_client).await?;
                    to_client.clear();
                }
                if up.read_buf(&mut from_up).await? == 0 {
                    return Err(ProxyError::Upstream(
                        "upstream closed during authentication".into(),
                    ));
                }
                continue;
            }
        };
        match msg[0] {
            b'R' => {
                let code = msg
                    .get(5..9)
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(-1);
                // SCRAM channel binding cannot cross pgmld (see sasl.rs).
                match (code == 10).then(|| crate::sasl::without_plus(&msg)).flatten() {
                    Some(offer) => to_client.extend_from_slice(&offer),
                    None => to_client.extend_from_slice(&msg),
                }
                // Cleartext, MD5, SASL start / continue, GSS / SSPI continue wait for an answer.
                if matches!(code, 3 | 5 | 7 | 8 | 9 | 10 | 11) {
                    client.write_all(&to_client).await?;
                    to_client.clear();
                    let answer = read_client_message(client, &mut from_client).await?;
                    if code == 10 && up.is_tls() && crate::sasl::says_it_could_bind(&answer) {
                        refuse(client, "28000", crate::sasl::BINDING_REFUSED).await;
                        return Ok(AuthOutcome::Refused);
                    }
                    up.write_all(&answer).await?;
                    up.flush().await?;
                }
            }
            b'K' => {
                let pid = msg
                    .get(5..9)
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                let upstream_key = msg.get(9..).unwrap_or(&[]).to_vec();
                let (cpid, ckey) = give_key(pid, upstream_key);
                to_client.extend_from_slice(b"K");
                to_client.extend_from_slice(&((8 + ckey.len()) as u32).to_be_bytes());
                to_client.extend_from_slice(&cpid.to_be_bytes());
                to_client.extend_from_slice(&ckey);
            }
            b'E' => {
                to_client.extend_from_slice(&msg);
                client.write_all(&to_client).await?;
                return Ok(AuthOutcome::Refused);
            }
            b'Z' => {
                to_client.extend_from_slice(&msg);
                if !from_up.is_empty() {
                    return Err(ProxyError::Upstream(
                        "upstream sent data after ReadyForQuery during startup".into(),
                    ));
                }
                return Ok(AuthOutcome::Ready(Upstream {
                    stream: up,
                    client_leftover: from_client,
                    ready: to_client,
                }));
            }
            _ => to_client.extend_from_slice(&msg),
        }
    }
}

async fn read_client_message(
    client: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<Bytes, ProxyError> {
    loop {
        if let Some(m) = split_message(buf, 1 << 20)? {
            if m[0] != b'p' {
                return Err(ProxyError::Protocol(format!(
                    "expected a password message during authentication, got {:?}",
                    char::from(m[0])
                )));
            }
            return Ok(m);
        }
        if client.read_buf(buf).await? == 0 {
            return Err(ProxyError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}
