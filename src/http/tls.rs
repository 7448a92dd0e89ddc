//! HTTPS: the server's certificate and key (`--tls-cert`, `--tls-key`,
//! PEM), read into a rustls configuration (ring; no OpenSSL) that offers
//! HTTP/2 and HTTP/1.1 by ALPN on the same port.
//!
//! Invariants: a configuration is only ever built whole from both files
//! and checked (a certificate, a key that is the certificate's) before it
//! replaces the one in use; [`Tls::reload`] (SIGHUP) swaps it for new
//! connections only, so connections already open keep theirs, and a bad
//! new file leaves the old configuration in place and says why.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// ALPN names, best first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The certificate in use and the files it comes from.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    config: parking_lot::RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("cert", &self.cert).field("key", &self.key).finish()
    }
}

impl Tls {
    /// Reads and checks the certificate chain and the key.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Tls>, String> {
        let config = server_config(cert, key)?;
        Ok(Arc::new(Tls { cert: cert.into(), key: key.into(), config: parking_lot::RwLock::new(Arc::new(config)) }))
    }

    /// Reads both files again; on success new connections get the new
    /// certificate, on failure the old one stays (the error says why).
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.cert, &self.key)?;
        *self.config.write() = Arc::new(config);
        Ok(())
    }

    /// The acceptor of the next connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config.read()))
    }
}

/// The rustls configuration of a certificate chain and key file.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, String> {
    let cert_shown = cert.display();
    let key_shown = key.display();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("--tls-cert {cert_shown}: {}", pem_error(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--tls-cert {cert_shown}: {}", pem_error(&e)))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {cert_shown}: no certificate in it (a PEM file with '-----BEGIN CERTIFICATE-----', the \
             server's certificate first, then its intermediates)"
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "--tls-key {key_shown}: {} (a PEM private key: PKCS#8 '-----BEGIN PRIVATE KEY-----', RSA or EC)",
            pem_error(&e)
        )
    })?;
    let provider = provider();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "--tls-key {key_shown} is not the key of the certificate in --tls-cert {cert_shown}: give the key \
                 the certificate was issued for"
            ),
            other => format!("--tls-key {key_shown}: {other}"),
        })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The ring provider (as the etcd client uses; no OpenSSL, no C
/// toolchain beyond ring's own).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)] // ring offers no post-quantum key exchange yet
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of the expected kind in it".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// Whether a connection agreed on HTTP/2.
pub fn is_h2(conn: &rustls::ServerConnection) -> bool {
    conn.alpn_protocol() == Some(b"h2")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named_with_their_flag() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let e = Tls::load(&cert, &key).expect_err("missing files");
        assert!(e.starts_with("--tls-cert ") && e.contains("c.pem"), "{e}");
        std::fs::write(&cert, "not a certificate\n").expect("written");
        let e = Tls::load(&cert, &key).expect_err("no certificate");
        assert!(e.contains("no certificate in it"), "{e}");
    }
}
