//! TLS towards clients: answers SSLRequest with `S` when a certificate is configured.

use crate::error::ProxyError;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Builds the acceptor from PEM files; errors name the file.
pub fn acceptor(cert: &Path, key_path: &Path) -> Result<TlsAcceptor, ProxyError> {
    let key = key_path;
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| ProxyError::Tls(format!("cannot read {}: {e}", p.display())))
    };
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &read(cert)?[..])
        .collect::<Result<_, _>>()
        .map_err(|e| ProxyError::Tls(format!("bad certificate in {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ProxyError::Tls(format!("no certificate in {}", cert.display())));
    }
    let key_der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &read(key)?[..])
        .map_err(|e| ProxyError::Tls(format!("bad key in {}: {e}", key.display())))?
        .ok_or_else(|| ProxyError::Tls(format!("no private key in {}", key.display())))?;
    // Name the provider: with several rustls backends linked (hf-hub brings aws-lc-rs),
    // rustls cannot pick a process default by itself.
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Tls(format!("TLS protocol set-up: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            ProxyError::Tls(format!(
                "certificate {} and key {} do not fit: {e}",
                cert.display(),
                key_path.display()
            ))
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
