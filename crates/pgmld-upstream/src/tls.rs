//! `sslmode` and `sslrootcert` with libpq's meaning, turned into one rustls client
//! configuration shared by every upstream connection.
//!
//! | sslmode | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | – |
//! | `prefer` (default) | when the server accepts it | not checked, unless a root file exists (then as `verify-ca`) |
//! | `require` | always | as `prefer` |
//! | `verify-ca` | always | signed by a CA of the root file |
//! | `verify-full` | always | signed by a CA of the root file, and valid for the host name |
//!
//! The root file is `sslrootcert`, else `PGSSLROOTCERT`, else `~/.postgresql/root.crt`.
//! `sslrootcert=system` uses the system's trusted roots and needs `verify-full` (its default
//! then), as in libpq 16.

use crate::error::UpstreamError;
use crate::Env;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
};

/// libpq's `sslmode` values pgmld honours (`allow` is not one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the upstream accepts it, else plain (libpq's default).
    Prefer,
    /// TLS or no connection; the certificate is not checked (unless a root file exists).
    Require,
    /// TLS with a certificate signed by a trusted CA.
    VerifyCa,
    /// TLS with a trusted certificate that is valid for the host name.
    VerifyFull,
}

impl SslMode {
    /// Parses a libpq `sslmode` keyword.
    pub fn parse(text: &str) -> Result<SslMode, UpstreamError> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(UpstreamError::TlsSetup(
                    "sslmode=allow is not supported; use prefer or disable".into(),
                ))
            }
            other => {
                return Err(UpstreamError::TlsSetup(format!(
                    "unknown sslmode {other:?} (disable, prefer, require, verify-ca or verify-full)"
                )))
            }
        })
    }

    /// Whether a connection without TLS is refused.
    pub fn requires_tls(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Prefer)
    }

    /// The keyword, as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TLS side of an upstream, built once at startup.
#[derive(Clone)]
pub(crate) struct Tls {
    /// The rustls configuration every connection uses.
    pub config: Arc<ClientConfig>,
    /// Whether the host name is checked (`verify-full`); otherwise any valid name form does.
    pub verify_name: bool,
    /// Where trusted roots came from, for error messages (`/path/ca.pem`, `the system`).
    pub roots: Option<String>,
}

/// The mode and, unless it is `disable`, the TLS configuration for the given URL settings
/// (falling back on `PGSSLMODE` / `PGSSLROOTCERT` as libpq does).
pub(crate) fn settings(
    sslmode: Option<&str>,
    sslrootcert: Option<&str>,
    sslnegotiation_direct: bool,
    env: &Env,
) -> Result<(SslMode, Option<Tls>), UpstreamError> {
    let root_setting = sslrootcert.or(env.pgsslrootcert.as_deref()).filter(|r| !r.is_empty());
    let mode = match sslmode.or(env.pgsslmode.as_deref()).filter(|m| !m.is_empty()) {
        Some(m) => SslMode::parse(m)?,
        None if root_setting == Some("system") => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    if mode == SslMode::Disable {
        return Ok((mode, None));
    }
    let provider = Arc::new(crypto::ring::default_provider());
    let (store, roots) = if root_setting == Some("system") {
        if mode != SslMode::VerifyFull {
            return Err(UpstreamError::TlsSetup(format!(
                "sslrootcert=system needs sslmode=verify-full, not {mode}: any certificate the system trusts would do for any host"
            )));
        }
        (Some(system_roots()?), Some("the system's trusted roots".to_string()))
    } else {
        let path = root_setting
            .map(PathBuf::from)
            .or_else(|| env.home.as_ref().map(|h| h.join(".postgresql/root.crt")));
        match path {
            Some(p) if p.is_file() => (Some(file_roots(&p)?), Some(p.display().to_string())),
            p if mode == SslMode::VerifyCa || mode == SslMode::VerifyFull => {
                let shown = p.map_or_else(
                    || "~/.postgresql/root.crt".to_string(),
                    |p| p.display().to_string(),
                );
                return Err(UpstreamError::TlsSetup(format!(
                    "root certificate file \"{shown}\" does not exist; sslmode={mode} needs one: set sslrootcert to a PEM file of CA certificates (or sslrootcert=system), or use sslmode=require"
                )));
            }
            _ => (None, None),
        }
    };
    let webpki = match store {
        Some(store) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| UpstreamError::TlsSetup(format!("certificate verifier: {e}")))?,
        ),
        None => None,
    };
    let verify_name = mode == SslMode::VerifyFull;
    let verifier = Arc::new(Verifier { webpki, verify_name, provider: provider.clone() });
    // Name the provider: with several rustls backends linked, rustls cannot pick one itself.
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::TlsSetup(format!("TLS protocol set-up: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    if sslnegotiation_direct {
        // Direct TLS (Postgres 17+) requires the `postgresql` ALPN protocol.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    Ok((mode, Some(Tls { config: Arc::new(config), verify_name, roots })))
}

/// The CA certificates of a PEM file; errors name the file.
fn file_roots(path: &Path) -> Result<RootCertStore, UpstreamError> {
    let bad =
        |what: String| UpstreamError::TlsSetup(format!("sslrootcert {}: {what}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let mut store = RootCertStore::empty();
    for cert in certs {
        store.add(cert).map_err(|e| bad(format!("unusable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// The operating system's trusted roots (rustls-native-certs).
fn system_roots() -> Result<RootCertStore, UpstreamError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
        return Err(UpstreamError::TlsSetup(format!(
            "sslrootcert=system: no trusted root certificates found on this system{why}"
        )));
    }
    Ok(store)
}

/// The server name a handshake presents and checks: the host, or (when names are not
/// checked and the host is not a valid name) a placeholder.
pub(crate) fn server_name(
    host: &str,
    verify_name: bool,
) -> Result<ServerName<'static>, UpstreamError> {
    match ServerName::try_from(host.to_string()) {
        Ok(n) => Ok(n),
        Err(_) if !verify_name => Ok(ServerName::try_from("localhost")
            .map_err(|e| UpstreamError::TlsSetup(e.to_string()))?),
        Err(e) => Err(UpstreamError::TlsSetup(format!(
            "host {host:?} cannot be checked against a certificate: {e}"
        ))),
    }
}

/// Turns a handshake failure into words an operator can act on.
pub(crate) fn explain(e: &std::io::Error, host: &str, tls: &Tls) -> String {
    let roots = tls.roots.as_deref().unwrap_or("the root file");
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => format!(
            "the server certificate is not valid for host name \"{host}\" (sslmode=verify-full checks the certificate's subjectAltName entries against the host)"
        ),
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            format!("the server certificate is not signed by a CA in {roots}")
        }
        Some(Error::InvalidCertificate(c)) => format!("the server certificate was refused: {c:?} (trusted roots: {roots})"),
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

/// Checks the server certificate as the mode asks: nothing, the chain, or the chain and
/// the name. Handshake signatures are always verified.
#[derive(Debug)]
struct Verifier {
    /// Chain (and name) checks; `None` accepts any certificate.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// Whether a name mismatch fails the handshake.
    verify_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            // The chain is checked before the name, so only the name was wrong.
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.verify_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env { home: Some(PathBuf::from("/nonexistent-pgmld-home")), ..Env::default() }
    }

    #[test]
    fn modes_and_defaults() {
        let (m, tls) = settings(None, None, false, &env()).unwrap();
        assert_eq!(m, SslMode::Prefer);
        assert!(tls.is_some_and(|t| t.roots.is_none() && !t.verify_name));
        assert!(settings(Some("disable"), None, false, &env()).unwrap().1.is_none());
        let (m, _) = settings(Some("require"), None, false, &env()).unwrap();
        assert!(m.requires_tls());
        let e = Env { pgsslmode: Some("disable".into()), ..env() };
        assert_eq!(settings(None, None, false, &e).unwrap().0, SslMode::Disable);
        assert_eq!(
            settings(Some("require"), None, false, &e).unwrap().0,
            SslMode::Require,
            "the URL wins"
        );
    }

    #[test]
    fn verification_needs_a_root_file() {
        for mode in ["verify-ca", "verify-full"] {
            let e = settings(Some(mode), None, false, &env())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains("/nonexistent-pgmld-home/.postgresql/root.crt")
                    && e.contains("does not exist"),
                "{e}"
            );
        }
        let e = settings(Some("verify-ca"), Some("/nope/ca.pem"), false, &env())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("/nope/ca.pem"), "{e}");
        assert!(settings(Some("allow"), None, false, &env()).is_err());
        assert!(settings(Some("bogus"), None, false, &env()).is_err());
        let e = settings(Some("require"), Some("system"), false, &env())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("verify-full"), "{e}");
    }

    #[test]
    fn a_root_file_that_is_not_pem_is_named() {
        let path = std::env::temp_dir().join(format!("pgmld-notpem-{}.crt", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = settings(Some("verify-full"), path.to_str(), false, &env())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(&path.display().to_string()) && e.contains("no certificate"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }
}
