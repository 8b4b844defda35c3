//! rustls for tokio-postgres: pgmld's own connections (migrations, logs, weights) use the
//! same TLS settings as client sessions, and offer SCRAM channel binding
//! (`tls-server-end-point`) so a password login is tied to the verified connection.

use crate::tls::{self, Tls};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// Makes one [`Connect`] per host tokio-postgres tries.
#[derive(Clone)]
pub(crate) struct MakeRustls(pub Tls);

/// A handshake towards one host.
pub(crate) struct Connect {
    tls: Tls,
    host: String,
    name: ServerName<'static>,
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = Connect;
    type Error = crate::UpstreamError;

    fn make_tls_connect(&mut self, host: &str) -> Result<Connect, Self::Error> {
        let name = tls::server_name(host, self.0.verify_name)?;
        Ok(Connect { tls: self.0.clone(), host: host.to_string(), name })
    }
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = TlsConnector::from(self.tls.config.clone());
            match connector.connect(self.name, stream).await {
                Ok(s) => Ok(RustlsStream(s)),
                Err(e) => Err(io::Error::other(tls::explain(&e, &self.host, &self.tls))),
            }
        })
    }
}

/// A TLS stream tokio-postgres can use.
pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, conn) = self.0.get_ref();
        match conn.peer_certificates().and_then(|c| c.first()).and_then(|c| end_point_hash(c)) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

/// RFC 5929 `tls-server-end-point`: the server certificate hashed with its signature's
/// hash (SHA-256 for MD5 and SHA-1). `None` for signatures without a single hash
/// (RSA-PSS, Ed25519): the login then goes without channel binding, as with libpq.
pub(crate) fn end_point_hash(cert: &[u8]) -> Option<Vec<u8>> {
    use ring::digest::{digest, SHA256, SHA384, SHA512};
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
    let (0x30, body, _) = der(cert)? else {
        return None;
    };
    let (0x30, _, rest) = der(body)? else {
        return None;
    };
    let (0x30, algorithm, _) = der(rest)? else {
        return None;
    };
    let (0x06, oid, _) = der(algorithm)? else {
        return None;
    };
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    let hash = match oid {
        // md5, sha1, sha256, sha384, sha512 WithRSAEncryption
        [r @ .., 0x04 | 0x05 | 0x0b] if r == RSA => &SHA256,
        [r @ .., 0x0c] if r == RSA => &SHA384,
        [r @ .., 0x0d] if r == RSA => &SHA512,
        // ecdsa-with-SHA1, ecdsa-with-SHA256 / 384 / 512
        [r @ .., 0x01] if r == ECDSA => &SHA256,
        [r @ .., 0x03, 0x02] if r == ECDSA => &SHA256,
        [r @ .., 0x03, 0x03] if r == ECDSA => &SHA384,
        [r @ .., 0x03, 0x04] if r == ECDSA => &SHA512,
        _ => return None,
    };
    Some(digest(hash, cert).as_ref().to_vec())
}

/// One DER element: tag, contents, and what follows.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (usize::from(n), rest),
        n => {
            let count = usize::from(n & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let len = rest[..count].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[count..])
        }
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate skeleton with the given signature algorithm OID.
    fn cert_with(oid: &[u8]) -> Vec<u8> {
        let tbs = [0x30, 0x03, 0x02, 0x01, 0x01];
        let mut alg = vec![0x06, oid.len() as u8];
        alg.extend_from_slice(oid);
        let mut body = tbs.to_vec();
        body.push(0x30);
        body.push(alg.len() as u8);
        body.extend_from_slice(&alg);
        body.extend_from_slice(&[0x03, 0x01, 0x00]);
        let mut cert = vec![0x30, body.len() as u8];
        cert.extend_from_slice(&body);
        cert
    }

    #[test]
    fn hash_follows_the_signature_algorithm() {
        let sha256_rsa = cert_with(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]);
        assert_eq!(end_point_hash(&sha256_rsa).map(|h| h.len()), Some(32));
        let sha384_ecdsa = cert_with(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]);
        assert_eq!(end_point_hash(&sha384_ecdsa).map(|h| h.len()), Some(48));
        let sha1_rsa = cert_with(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05]);
        assert_eq!(end_point_hash(&sha1_rsa).map(|h| h.len()), Some(32), "SHA-1 becomes SHA-256");
        let ed25519 = cert_with(&[0x2b, 0x65, 0x70]);
        assert_eq!(end_point_hash(&ed25519), None);
        assert_eq!(end_point_hash(&[0x30, 0x82, 0xff]), None, "truncated input");
        assert_eq!(end_point_hash(&[]), None);
    }
}
