//! TLS for the client verbs (`--server https://…`): the certificates the
//! server's certificate may chain to (the system's roots, or only the CA of
//! `--ca-cert` / `LEVIATHAN_CA_CERT`), and a failed check said in words:
//! which check failed and what to pass.

use anyhow::{anyhow, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig, RootCertStore};
use std::path::Path;
use std::sync::Arc;

/// The client configuration: trusting the CA in `ca_cert` only, or the
/// system's roots.
pub fn client_config(ca_cert: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match ca_cert {
        Some(path) => {
            let shown = path.display();
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| anyhow!("--ca-cert {shown}: {e:?}"))?
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow!("--ca-cert {shown}: not valid PEM: {e:?}"))?;
            if certs.is_empty() {
                bail!("--ca-cert {shown}: no certificate in it (a PEM file with '-----BEGIN CERTIFICATE-----')");
            }
            for c in certs {
                roots.add(c).map_err(|e| anyhow!("--ca-cert {shown}: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                // A system certificate rustls cannot use is skipped, as
                // every other TLS client does.
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                bail!(
                    "no trusted CA certificates found on this system: pass --ca-cert FILE (or set \
                     LEVIATHAN_CA_CERT) with the CA that signed the server's certificate"
                );
            }
        }
    }
    #[allow(deprecated)] // ring offers no post-quantum key exchange yet; the server uses ring too
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The rustls error somewhere in an error's chain (inside I/O errors too,
/// whose `source` skips the error they wrap).
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    std::iter::successors(Some(e), |e| e.source()).find_map(unwrapped)
}

/// The rustls error an error is, or wraps in (nested) I/O errors.
fn unwrapped<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(r);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    unwrapped(inner as &(dyn std::error::Error + 'static))
}

/// A failed certificate check in words, naming the check and the fix;
/// `None` when the error is not one.
pub fn explain(e: &(dyn std::error::Error + 'static), server: &str) -> Option<String> {
    let fix_ca = "pass --ca-cert FILE (or set LEVIATHAN_CA_CERT) with the CA that signed it";
    let what = match rustls_error(e)? {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                format!("it is signed by a CA this client does not trust (unknown issuer): {fix_ca}")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "it is not valid for the name in --server (name mismatch; {c:?}): give --server a name or address \
                 the certificate holds"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "it has expired (its notAfter date is past): the server needs a renewed certificate".to_string()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "it is not valid yet (its notBefore date is ahead): check the clocks".to_string()
            }
            CertificateError::Revoked => "it has been revoked".to_string(),
            CertificateError::BadSignature => format!("its signature does not verify: {fix_ca}"),
            other => format!("it failed the check: {other:?}"),
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateHandshakeMessage { .. } => {
            return Some(format!(
                "the server at {server} does not speak TLS (is it https://? without --tls-cert it serves \
                 http://)"
            ))
        }
        other => return Some(format!("TLS with the server at {server} failed: {other}")),
    };
    Some(format!("the server at {server} presented a certificate this client refuses: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_failures_name_the_check() {
        let io = |c: CertificateError| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::InvalidCertificate(c))
        };
        // Wrapped twice, as the HTTP client hands it over.
        let e = std::io::Error::other(io(CertificateError::UnknownIssuer));
        let m = explain(&e, "https://x:1").expect("a TLS error");
        assert!(m.contains("unknown issuer") && m.contains("--ca-cert"), "{m}");
        let m = explain(&io(CertificateError::NotValidForName), "https://x:1").expect("a TLS error");
        assert!(m.contains("name mismatch"), "{m}");
        let m = explain(&io(CertificateError::Expired), "https://x:1").expect("a TLS error");
        assert!(m.contains("expired"), "{m}");
        assert!(explain(&std::io::Error::other("refused"), "https://x:1").is_none());
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "nothing here\n").expect("written");
        let e = client_config(Some(&p)).expect_err("no certificate").to_string();
        assert!(e.contains("no certificate"), "{e}");
    }
}
