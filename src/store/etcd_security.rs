//! How a server proves itself to etcd and checks etcd in turn: mutual TLS
//! (`--etcd-cacert`, `--etcd-cert`, `--etcd-key`, for `https://` members)
//! and etcd's own authentication (`--etcd-user` with
//! `--etcd-password-file`).
//!
//! Invariants: everything is read and checked once, at start, before the
//! server touches anything: a file that cannot be read, holds no PEM item
//! of the kind its flag wants, or a key that does not belong to its
//! certificate is refused with a message naming the flag and the file. The
//! password is only ever read from a file (never a flag, never an
//! environment variable a `ps` could show), one trailing newline dropped,
//! and never printed (not even by `Debug`). TLS is rustls (no OpenSSL);
//! etcd's certificate is checked against `--etcd-cacert` only.
//!
//! Also what a failed connection means ([`ConnectError`]): etcd not
//! reachable (yet), which a server waits out, or etcd refusing this server
//! (its certificate, its password, its permissions, another layout under
//! the prefix), which no retry can mend.

use super::StoreError;
use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The files and names of the `serve` flags, as given.
#[derive(Debug, Clone, Default)]
pub struct EtcdSecurityFlags {
    /// `--etcd-cacert`: the CA that signed the members' certificates.
    pub cacert: Option<PathBuf>,
    /// `--etcd-cert`: this server's client certificate.
    pub cert: Option<PathBuf>,
    /// `--etcd-key`: its private key.
    pub key: Option<PathBuf>,
    /// `--etcd-user`: the etcd user to authenticate as.
    pub user: Option<String>,
    /// `--etcd-password-file`: the file holding that user's password.
    pub password_file: Option<PathBuf>,
}

/// What the connection to etcd uses, checked (see the module docs).
#[derive(Clone, Default)]
pub struct EtcdSecurity {
    tls: Option<TlsOptions>,
    /// The same TLS settings for rustls itself, to ask a member directly
    /// why it closed the connection ([`EtcdSecurity::tls_refusal`]).
    probe: Option<Arc<rustls::ClientConfig>>,
    /// Whether a client certificate is presented.
    client_cert: bool,
    user: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn read(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{flag} {}: cannot read it: {e}", path.display()))
}

/// The certificates of a PEM file; at least one.
fn certificates(flag: &str, path: &Path, pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{flag} {}: not a readable PEM file: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{flag} {}: holds no certificate (a PEM block -----BEGIN CERTIFICATE-----)", path.display());
    }
    Ok(certs)
}

impl EtcdSecurity {
    /// Reads and checks what the flags name, for the members at
    /// `endpoints` (see the module docs).
    pub fn load(endpoints: &[String], flags: &EtcdSecurityFlags) -> anyhow::Result<EtcdSecurity> {
        let https = endpoints.iter().filter(|e| e.starts_with("https://")).count();
        if https != 0 && https != endpoints.len() {
            anyhow::bail!("--etcd: give every member's URL with the same scheme, all https:// or all http://");
        }
        let (tls, probe) = match https {
            0 => (None, None),
            _ => {
                let (tls, probe) = Self::tls(flags)?;
                (Some(tls), Some(probe))
            }
        };
        if tls.is_none() {
            if let Some(flag) =
                [("--etcd-cacert", &flags.cacert), ("--etcd-cert", &flags.cert), ("--etcd-key", &flags.key)]
                    .into_iter()
                    .find_map(|(name, v)| v.as_ref().map(|_| name))
            {
                anyhow::bail!("{flag}: TLS needs the etcd members' https:// URLs in --etcd (it has http:// ones)");
            }
        }
        let user = Self::user(flags)?;
        if user.is_some() && tls.is_none() {
            tracing::warn!("--etcd-user over http:// sends the password to etcd unencrypted: prefer https:// members");
        }
        Ok(EtcdSecurity { client_cert: flags.cert.is_some(), tls, probe, user })
    }

    fn tls(flags: &EtcdSecurityFlags) -> anyhow::Result<(TlsOptions, Arc<rustls::ClientConfig>)> {
        let Some(ca_path) = &flags.cacert else {
            anyhow::bail!(
                "--etcd has https:// members: give --etcd-cacert FILE, the CA certificate that signed their certificates"
            );
        };
        let ca = read("--etcd-cacert", ca_path)?;
        let mut roots = rustls::RootCertStore::empty();
        for (i, c) in certificates("--etcd-cacert", ca_path, &ca)?.into_iter().enumerate() {
            roots.add(c).map_err(|e| {
                anyhow::anyhow!("--etcd-cacert {}: certificate {} is not a usable CA: {e}", ca_path.display(), i + 1)
            })?;
        }
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(&ca));
        #[allow(deprecated)] // the provider tonic's `tls-ring` uses too
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let probe = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS: {e}"))?
            .with_root_certificates(roots);
        let mut probe = match (&flags.cert, &flags.key) {
            (Some(cert_path), Some(key_path)) => {
                let cert = read("--etcd-cert", cert_path)?;
                let key = read("--etcd-key", key_path)?;
                let chain = certificates("--etcd-cert", cert_path, &cert)?;
                let der = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
                    anyhow::anyhow!(
                        "--etcd-key {}: holds no usable private key (PEM: PKCS#8, PKCS#1 or SEC1): {e}",
                        key_path.display()
                    )
                })?;
                let signer = rustls::crypto::ring::sign::any_supported_type(&der)
                    .map_err(|e| anyhow::anyhow!("--etcd-key {}: not a usable private key: {e}", key_path.display()))?;
                match rustls::sign::CertifiedKey::new(chain, signer).keys_match() {
                    Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
                    Err(rustls::Error::InconsistentKeys(_)) => anyhow::bail!(
                        "--etcd-key {} does not belong to the certificate in --etcd-cert {}",
                        key_path.display(),
                        cert_path.display()
                    ),
                    Err(e) => anyhow::bail!("--etcd-cert {}: not a usable certificate: {e}", cert_path.display()),
                }
                tls = tls.identity(Identity::from_pem(&cert, &key));
                let chain = certificates("--etcd-cert", cert_path, &cert)?;
                let der = PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|e| anyhow::anyhow!("--etcd-key {}: {e}", key_path.display()))?;
                probe.with_client_auth_cert(chain, der).map_err(|e| {
                    anyhow::anyhow!("--etcd-cert {} with --etcd-key {}: {e}", cert_path.display(), key_path.display())
                })?
            }
            (None, None) => probe.with_no_client_auth(),
            _ => anyhow::bail!("--etcd-cert and --etcd-key go together: give both or neither"),
        };
        probe.alpn_protocols = vec![b"h2".to_vec()];
        Ok((tls, Arc::new(probe)))
    }

    /// After an attempt failed with a connection etcd closed: asks the
    /// `https://` members directly (a TLS session, then the HTTP/2
    /// preface) whether etcd refused this server by a TLS alert. With TLS
    /// 1.3 etcd checks the client certificate after the handshake, so the
    /// gRPC client may see only a closed connection. The alert, if any.
    pub(super) async fn tls_refusal(&self, endpoints: &[String], timeout: Duration) -> Option<String> {
        let cfg = self.probe.clone()?;
        let endpoints = endpoints.to_vec();
        let asked = tokio::task::spawn_blocking(move || {
            endpoints
                .iter()
                .find_map(|e| tls_alert(&cfg, e, timeout).map(|a| format!("{e} ended the TLS session: {a}")))
        });
        tokio::time::timeout(timeout * 2, asked).await.ok()?.ok()?
    }

    fn user(flags: &EtcdSecurityFlags) -> anyhow::Result<Option<(String, String)>> {
        let (name, path) = match (&flags.user, &flags.password_file) {
            (None, None) => return Ok(None),
            (Some(name), Some(path)) => (name, path),
            _ => anyhow::bail!("--etcd-user and --etcd-password-file go together: give both or neither"),
        };
        if name.is_empty() || name.chars().any(char::is_control) {
            anyhow::bail!("--etcd-user: give the name of an etcd user");
        }
        let raw = read("--etcd-password-file", path)?;
        let mut text = String::from_utf8(raw)
            .map_err(|_| anyhow::anyhow!("--etcd-password-file {}: the password is not UTF-8 text", path.display()))?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        if text.is_empty() {
            anyhow::bail!(
                "--etcd-password-file {}: the file is empty (it holds the password of --etcd-user)",
                path.display()
            );
        }
        if text.contains('\n') {
            anyhow::bail!("--etcd-password-file {}: give the password alone on one line", path.display());
        }
        warn_if_others_can_read(path);
        Ok(Some((name.clone(), text)))
    }

    /// `opts` with TLS and the user, as checked.
    pub(super) fn apply(&self, mut opts: ConnectOptions) -> ConnectOptions {
        if let Some(tls) = &self.tls {
            opts = opts.with_tls(tls.clone());
        }
        if let Some((name, password)) = &self.user {
            // etcd's tokens expire (5 minutes by default): authenticate
            // again when one does.
            opts = opts.with_user(name.clone(), password.clone()).with_auto_token_refresh(true);
        }
        opts
    }

    /// `TLS with a client certificate, user U` and the like, for the log.
    pub fn describe(&self) -> String {
        let tls = match (&self.tls, self.client_cert) {
            (None, _) => "plain (no TLS)",
            (Some(_), false) => "TLS",
            (Some(_), true) => "TLS with a client certificate",
        };
        match &self.user {
            Some((name, _)) => format!("{tls}, as etcd user {name}"),
            None => tls.to_string(),
        }
    }
}

/// Why connecting to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// etcd did not answer (not started yet, down, no route, no leader):
    /// trying again later may succeed.
    #[error("{0}")]
    Unreachable(String),
    /// etcd answered and refused this server, or the options are wrong (a
    /// certificate it does not accept, a wrong password, no permission on
    /// the prefix, another layout there): trying again cannot help.
    #[error("{0:#}")]
    Refused(anyhow::Error),
}

impl From<StoreError> for ConnectError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) if refusal_hint(&m, true).is_some() => ConnectError::Refused(anyhow::anyhow!(m)),
            e @ StoreError::Unavailable(_) => ConnectError::Unreachable(e.to_string()),
            e => ConnectError::Refused(e.into()),
        }
    }
}

impl ConnectError {
    /// The same error, saying which etcd it is about and, for a refusal,
    /// what to do about it.
    pub(super) fn at(self, endpoints: &str, security: &EtcdSecurity) -> ConnectError {
        match self {
            ConnectError::Unreachable(m) => ConnectError::Unreachable(format!("etcd at {endpoints}: {m}")),
            ConnectError::Refused(e) => {
                let text = format!("{e:#}");
                ConnectError::Refused(match refusal_hint(&text, security.client_cert) {
                    Some(hint) => anyhow::anyhow!("etcd at {endpoints}: {text}. {hint}"),
                    None => e.context(format!("etcd at {endpoints}")),
                })
            }
        }
    }
}

/// What to do about an answer that is a refusal rather than an outage, if
/// it is one: TLS that failed (a certificate etcd did not accept, or one
/// this server could not verify), a wrong user or password, no permission.
fn refusal_hint(message: &str, client_cert: bool) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if has(&["certificaterequired", "certificate required"])
        || (!client_cert && has(&["badcertificate", "bad certificate"]))
    {
        Some("etcd wants a client certificate (it runs with --client-cert-auth): pass --etcd-cert and --etcd-key")
    } else if has(&["badcertificate", "bad certificate", "unknownca", "unknown ca", "certificateunknown"]) {
        Some("etcd did not accept --etcd-cert: is it signed by a CA etcd trusts (its --trusted-ca-file), for client use?")
    } else if has(&["invalid peer certificate", "unknownissuer", "notvalidforname"]) {
        Some("etcd's certificate failed verification: --etcd-cacert must be the CA that signed it, and it must name the host or IP given in --etcd")
    } else if has(&["invalidcontenttype", "corrupt message", "invalid content type", "h2 was not negotiated"]) {
        Some("the TLS handshake failed: does etcd serve TLS there (https:// needs etcd's --cert-file)?")
    } else if has(&["etcdserver: authentication failed"]) {
        Some("check --etcd-user and --etcd-password-file")
    } else if has(&["etcdserver: authentication is not enabled"]) {
        Some("etcd has no authentication enabled: drop --etcd-user and --etcd-password-file, or enable it (etcdctl auth enable)")
    } else if has(&[
        "etcdserver: permission denied",
        "etcdserver: user name is empty",
        "etcdserver: invalid auth token",
        "etcdserver: user name not found",
    ]) {
        Some("etcd refused this server: pass --etcd-user (with --etcd-password-file) for a user whose role may read and write the --etcd-prefix keys")
    } else {
        None
    }
}

/// The TLS alert `endpoint` answers a session with (see
/// [`EtcdSecurity::tls_refusal`]).
fn tls_alert(cfg: &Arc<rustls::ClientConfig>, endpoint: &str, timeout: Duration) -> Option<String> {
    use std::net::ToSocketAddrs;
    let authority = endpoint.strip_prefix("https://")?.split('/').next()?;
    let (host, _) = authority.rsplit_once(':')?;
    let name =
        rustls::pki_types::ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string()).ok()?;
    let addr = authority.to_socket_addrs().ok()?.next()?;
    let sock = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    sock.set_read_timeout(Some(timeout)).ok()?;
    sock.set_write_timeout(Some(timeout)).ok()?;
    let conn = rustls::ClientConnection::new(Arc::clone(cfg), name).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let alert = |e: std::io::Error| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(a)) => Some(format!("{a:?}")),
        _ => None,
    };
    if let Err(e) = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").and_then(|()| tls.flush()) {
        return alert(e);
    }
    let mut buf = [0u8; 64];
    tls.read(&mut buf).err().and_then(alert)
}

/// A password file others can read is said so in the log (it is not
/// refused: who may read it is the operator's call).
fn warn_if_others_can_read(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{mode:o}"),
                "--etcd-password-file is readable by other users: chmod 600 it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> EtcdSecurityFlags {
        EtcdSecurityFlags::default()
    }

    fn err(endpoints: &[&str], f: &EtcdSecurityFlags) -> String {
        let e: Vec<String> = endpoints.iter().map(|s| s.to_string()).collect();
        format!("{:#}", EtcdSecurity::load(&e, f).expect_err("refused"))
    }

    #[test]
    fn plain_endpoints_need_no_files_and_refuse_tls_flags() {
        let s = EtcdSecurity::load(&["http://127.0.0.1:2379".into()], &flags()).unwrap();
        assert_eq!(s.describe(), "plain (no TLS)");
        let f = EtcdSecurityFlags { cacert: Some("/x/ca.pem".into()), ..flags() };
        assert!(err(&["http://127.0.0.1:2379"], &f).contains("--etcd-cacert: TLS needs"), "{}", err(&["http://a"], &f));
        assert!(err(&["https://a:1", "http://b:1"], &flags()).contains("same scheme"));
        assert!(err(&["https://a:1"], &flags()).contains("give --etcd-cacert FILE"));
    }

    #[test]
    fn unreadable_and_wrong_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let f = EtcdSecurityFlags { cacert: Some(missing.clone()), ..flags() };
        let e = err(&["https://a:1"], &f);
        assert!(e.starts_with(&format!("--etcd-cacert {}: cannot read it", missing.display())), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let f = EtcdSecurityFlags { cacert: Some(junk.clone()), ..flags() };
        let e = err(&["https://a:1"], &f);
        assert!(e.contains("--etcd-cacert") && e.contains("holds no certificate"), "{e}");
    }

    /// Refusals are told from outages by etcd's and rustls's own words; a
    /// timeout or a refused connection is an outage.
    #[test]
    fn refusals_and_outages() {
        for outage in
            ["tcp connect error: Connection refused", "Timeout expired", "connect: Permission denied (os error 13)"]
        {
            assert_eq!(refusal_hint(outage, true), None, "{outage}");
        }
        let hint = |m: &str, cert: bool| refusal_hint(m, cert).unwrap_or("");
        assert!(hint("received fatal alert: BadCertificate", false).contains("wants a client certificate"));
        assert!(hint("received fatal alert: BadCertificate", true).contains("did not accept --etcd-cert"));
        assert!(hint("invalid peer certificate: UnknownIssuer", true).contains("--etcd-cacert"));
        assert!(hint("etcdserver: authentication failed, invalid user ID or password", true).contains("--etcd-user"));
        assert!(hint("etcdserver: user name is empty", false).contains("pass --etcd-user"));
    }

    #[test]
    fn the_password_comes_from_its_file_without_the_newline_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let f = EtcdSecurityFlags { user: Some("root".into()), password_file: Some(p.clone()), ..flags() };
        let s = EtcdSecurity::load(&["http://127.0.0.1:2379".into()], &f).unwrap();
        assert_eq!(s.user, Some(("root".to_string(), "s3cret".to_string())));
        assert!(!format!("{s:?}").contains("s3cret"));
        assert_eq!(s.describe(), "plain (no TLS), as etcd user root");
        std::fs::write(&p, "\n").unwrap();
        assert!(err(&["http://a:1"], &f).contains("the file is empty"));
        let f = EtcdSecurityFlags { user: Some("root".into()), ..flags() };
        assert!(err(&["http://a:1"], &f).contains("go together"));
    }
}
