//! The `serve` options of who may call the server and how: the tokens
//! (`--token`, `--tokens FILE`), HTTPS (`--tls-cert`, `--tls-key`) and the
//! two explicit escapes (`--insecure-no-auth`, `--insecure-plain-http`);
//! their checks, and SIGHUP, which reads the certificate, the key and the
//! tokens file again.
//!
//! Invariants: beyond loopback a server has tokens (or
//! `--insecure-no-auth`), and tokens travel only over TLS (or
//! `--insecure-plain-http`); a file that fails to read or check on SIGHUP
//! leaves what is in use untouched and is logged with the reason.

use anyhow::bail;
use leviathan::auth::{Auth, Tokens};
use leviathan::http::tls::Tls;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args, Clone)]
pub struct SecurityArgs {
    /// Bearer token every request must carry (one `admin` token, named
    /// `token`).
    #[arg(long, env = "LEVIATHAN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Tokens with roles: one per line, `ROLE NAME SHA256HEX` (viewer,
    /// editor or admin; the file holds the SHA-256 of each token, never the
    /// token). Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Allow listening beyond loopback without a token.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Serve HTTPS (and wss://) with this certificate chain (PEM, the
    /// server's certificate first); with --tls-key. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Allow tokens over plain HTTP beyond loopback (anyone on the path
    /// can read them).
    #[arg(long)]
    pub insecure_plain_http: bool,
}

/// The checked security settings.
pub struct Security {
    /// `None`: an open server (every request is `anonymous`).
    pub auth: Option<Arc<Auth>>,
    pub tls: Option<Arc<Tls>>,
}

impl SecurityArgs {
    /// Whether requests need a token.
    pub fn has_tokens(&self) -> bool {
        self.token.is_some() || self.tokens.is_some()
    }

    /// Checks the options and reads their files.
    pub fn load(&self, listen: SocketAddr) -> anyhow::Result<Security> {
        let loopback = listen.ip().is_loopback();
        self.check_token(listen, loopback)?;
        let auth = if self.has_tokens() { Some(Auth::new(self.read_tokens()?)) } else { None };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(Tls::load(cert, key).map_err(|e| anyhow::anyhow!("{e}"))?),
            _ => None,
        };
        if !loopback && auth.is_some() && tls.is_none() && !self.insecure_plain_http {
            bail!(
                "refusing to send tokens in clear text: listening on {listen} (beyond loopback) with a token needs \
                 HTTPS: pass --tls-cert FILE --tls-key FILE, or --insecure-plain-http to serve plain HTTP anyway \
                 (anyone on the network path can then read the tokens)"
            );
        }
        Ok(Security { auth, tls })
    }

    /// The tokens of `--tokens` and `--token` together.
    fn read_tokens(&self) -> anyhow::Result<Tokens> {
        let mut text = String::new();
        if let Some(path) = &self.tokens {
            let file = Tokens::load(path).map_err(|e| anyhow::anyhow!("--tokens {e}"))?;
            if file.is_empty() {
                bail!("--tokens {}: no tokens", path.display());
            }
            text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--tokens {}: {e}", path.display()))?;
        }
        if let Some(t) = &self.token {
            text.push_str(&format!("\nadmin token {}\n", leviathan::auth::token_hash_hex(t)));
        }
        Tokens::parse(&text).map_err(|e| match &self.tokens {
            Some(p) => anyhow::anyhow!("--tokens {} with --token: {e}", p.display()),
            None => anyhow::anyhow!("--token: {e}"),
        })
    }

    /// A token must protect something: not blank, no stray spaces, 16
    /// characters or more beyond loopback; and beyond loopback there must
    /// be one unless `--insecure-no-auth` says otherwise.
    fn check_token(&self, listen: SocketAddr, loopback: bool) -> anyhow::Result<()> {
        if let Some(t) = &self.token {
            if t.trim().is_empty() {
                bail!("--token: a blank token protects nothing; give a real one (16 characters or more)");
            }
            if t.trim() != t {
                bail!("--token: the token has leading or trailing spaces; give it without them");
            }
            if !loopback && t.chars().count() < 16 {
                bail!("--token: listening on {listen} needs a token of 16 characters or more");
            }
        }
        if !self.has_tokens() && !loopback && !self.insecure_no_auth {
            bail!(
                "refusing to listen on {listen} without a token: set --token (or LEVIATHAN_TOKEN) or --tokens FILE, \
                 or pass --insecure-no-auth"
            );
        }
        Ok(())
    }

    /// On every SIGHUP: reads the certificate, the key and the tokens file
    /// again; what fails to read or check is logged and the old kept.
    pub fn reload_on_sighup(self: Arc<Self>, security: &Security) {
        let (auth, tls) = (security.auth.clone(), security.tls.clone());
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot watch SIGHUP: the certificate and the tokens are read at start only");
            return;
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if let Some(tls) = &tls {
                    match tls.reload() {
                        Ok(()) => tracing::info!("SIGHUP: certificate and key read again; new connections use them"),
                        Err(e) => tracing::warn!(error = %e, "SIGHUP: keeping the certificate in use"),
                    }
                }
                if let (Some(auth), true) = (&auth, self.tokens.is_some()) {
                    match self.read_tokens() {
                        Ok(t) => {
                            let n = t.len();
                            auth.replace(t);
                            tracing::info!(tokens = n, "SIGHUP: tokens file read again");
                        }
                        Err(e) => tracing::warn!(error = %e, "SIGHUP: keeping the tokens in use"),
                    }
                }
            }
        });
    }
}
