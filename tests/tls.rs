//! HTTPS, tokens with roles and who did what, end to end with real
//! clients: curl (`--cacert`, HTTP/2 by ALPN), the CLI (`--ca-cert`, and
//! its words for a refused certificate), the `graphql-ws` npm client over
//! `wss://` (`tests/node/tls.mjs`), headless Chromium opening `/topology`
//! with a viewer's token, a raw TLS connection that outlives a SIGHUP with a
//! new certificate, and plain HTTP sent to the TLS port.
//!
//! Certificates are made by the test with the openssl CLI (a CA, server
//! certificates for IP 127.0.0.1) in a temporary directory, never checked
//! in. Chromium is given the test certificate by its SPKI hash
//! (`--ignore-certificate-errors-spki-list`), which trusts exactly that
//! certificate and nothing else.

mod browser;
mod common;

use common::etcd::Pki;
use common::{until, WAIT};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VIEWER: &str = "viewer-token-0123456789";
const EDITOR: &str = "editor-token-0123456789";
const ADMIN: &str = "admin-token-0123456789ab";

/// The base64 SHA-256 of a certificate's public key (what Chromium's
/// `--ignore-certificate-errors-spki-list` takes).
fn spki_hash(pki: &Pki, name: &str) -> String {
    let script = format!(
        "openssl x509 -in {name}.crt -pubkey -noout | openssl pkey -pubin -outform der | \
         openssl dgst -sha256 -binary | openssl base64 -A"
    );
    let out = Command::new("sh").args(["-c", &script]).current_dir(pki.dir.path()).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The DER of a PEM certificate file.
fn der(pki: &Pki, name: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(pki.path(&format!("{name}.crt"))).unwrap().to_vec()
}

fn sha256_hex(token: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("printf %s '{token}' | openssl dgst -sha256 -r")])
        .output()
        .expect("openssl dgst");
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// `leviathan serve` over HTTPS with three tokens (viewer `wall`, editor
/// `ci`, admin `ops`).
struct Tls {
    child: Child,
    addr: String,
    pki: Pki,
    http: reqwest::Client,
    /// The server's log lines.
    log: std::sync::mpsc::Receiver<String>,
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tls {
    fn start() -> Tls {
        let pki = Pki::new();
        let tokens = pki.path("tokens");
        let text = format!(
            "# test tokens\nviewer wall {}\neditor ci {}\nadmin ops {}\n",
            sha256_hex(VIEWER),
            sha256_hex(EDITOR),
            sha256_hex(ADMIN)
        );
        std::fs::write(&tokens, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_leviathan"))
            .args(["serve", "--no-realize", "--listen", "127.0.0.1:0", "--state"])
            .arg(pki.path("s.db"))
            .arg("--tokens")
            .arg(&tokens)
            .arg("--tls-cert")
            .arg(pki.path("server.crt"))
            .arg("--tls-key")
            .arg(pki.path("server.key"))
            .env_remove("LEVIATHAN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start leviathan");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{line:?}")).to_string();
        let (tx, log) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.path("ca.crt")).unwrap()).unwrap();
        let http = reqwest::Client::builder().add_root_certificate(ca).timeout(WAIT).build().unwrap();
        Tls { child, addr, pki, http, log }
    }

    /// Waits (bounded) for a log line holding `what`.
    fn logged(&self, what: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.log.recv_timeout(left).unwrap_or_else(|_| panic!("no log line with {what:?}"));
            if line.contains(what) {
                return line;
            }
        }
    }

    fn hup(&self) {
        let hup = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
        assert!(hup.success());
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    async fn gql(&self, token: &str, query: &str) -> (u16, Value) {
        let resp = self.http.post(self.url("/graphql")).bearer_auth(token).json(&json!({"query": query})).send();
        let resp = resp.await.expect("POST /graphql over https");
        (resp.status().as_u16(), resp.json().await.expect("JSON"))
    }

    async fn revision(&self) -> i64 {
        let (status, body) = self.gql(VIEWER, "{ revision }").await;
        assert_eq!(status, 200, "{body}");
        body["data"]["revision"].as_i64().unwrap()
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_leviathan"))
            .args(args)
            .env_remove("LEVIATHAN_SERVER")
            .env_remove("LEVIATHAN_TOKEN")
            .env_remove("LEVIATHAN_CA_CERT")
            .output()
            .unwrap()
    }
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn roles_are_enforced_over_https_and_every_change_names_its_actor() {
    let s = Tls::start();
    // curl with the test CA, over HTTP/2 (ALPN) and HTTP/1.1.
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = Command::new("curl")
            .args(["-sS", flag, "--cacert"])
            .arg(s.pki.path("ca.crt"))
            .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}", "-H"])
            .arg(format!("Authorization: Bearer {VIEWER}"))
            .arg(s.url("/healthz"))
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("200 {version}"), "{}", text(&out));
    }

    // An editor creates; the change records its name.
    let (status, body) = s.gql(EDITOR, "mutation { cenCreate(input: {id: \"a\"}) { revision } }").await;
    assert_eq!(status, 200, "{body}");
    let rev = s.revision().await;

    // A viewer's cenDestroy, legacy POST /cen/import and reconcile: 403,
    // naming the role needed; nothing changes.
    let (status, body) = s.gql(VIEWER, "mutation { cenDestroy(input: {ids: [\"a\"]}) { revision } }").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("editor role"), "{body}");
    assert!(body.get("data").is_none(), "nothing ran: {body}");
    let import = json!({"cenList": [{"cenID": "b", "containerIDs": ["c1"]}]});
    let resp = s.http.post(s.url("/cen/import")).bearer_auth(VIEWER).json(&import).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let legacy = resp.text().await.unwrap();
    assert!(legacy.contains("FORBIDDEN") && legacy.contains("editor"), "{legacy}");
    for token in [VIEWER, EDITOR] {
        let (status, body) = s.gql(token, "mutation { reconcile(input: {}) { done } }").await;
        assert_eq!(status, 403, "{body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("admin role"), "{body}");
    }
    assert_eq!(s.revision().await, rev, "refused requests changed nothing");
    let (_, body) = s.gql(VIEWER, "{ cens { id } }").await;
    assert_eq!(body["data"]["cens"], json!([{"id": "a"}]));
    // The admin passes the role check (this server realizes nothing).
    let (status, body) = s.gql(ADMIN, "mutation { reconcile(input: {}) { done } }").await;
    assert_eq!((status, &body["errors"][0]["extensions"]["code"]), (200, &json!("CONFLICT")), "{body}");
    // /metrics is the admin's.
    let metrics = |t: &'static str| s.http.get(s.url("/metrics")).bearer_auth(t).send();
    assert_eq!(metrics(VIEWER).await.unwrap().status().as_u16(), 403);
    assert_eq!(metrics(ADMIN).await.unwrap().status().as_u16(), 200);
    // A wrong token: 401.
    assert_eq!(s.gql("not-a-token-of-this-server", "{ revision }").await.0, 401);

    // The CLI: with the CA, as a viewer; its watch shows who made each change.
    let ca = s.pki.path("ca.crt");
    let ca = ca.as_str();
    let server = s.url("");
    let out = s.cli(&["get", "cens", "--server", &server, "--ca-cert", ca, "--token", VIEWER, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"a\""), "{}", text(&out));
    let mut watch = Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(["watch", "--since", "0", "--server", &server, "--token", VIEWER])
        .env("LEVIATHAN_CA_CERT", ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(watch.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(first.starts_with("rev 1") && first.contains("+cen a") && first.contains("(ci, "), "{first:?}");
    // Without the CA: the system's roots do not know it.
    let out = s.cli(&["get", "cens", "--server", &server, "--token", VIEWER]);
    assert!(!out.status.success());
    assert!(text(&out).contains("unknown issuer") && text(&out).contains("--ca-cert"), "{}", text(&out));
    // A name the certificate does not hold.
    let port = s.addr.rsplit_once(':').unwrap().1;
    let out = s.cli(&["get", "cens", "--server", &format!("https://localhost:{port}"), "--ca-cert", ca]);
    assert!(!out.status.success());
    assert!(text(&out).contains("name mismatch"), "{}", text(&out));
    assert_eq!(s.revision().await, rev);
}

/// A client trusting the test CA that shows which certificate it got.
fn tls_client(pki: &Pki) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(pki.path("ca.crt")).unwrap()).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

type Conn = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(s: &Tls) -> Conn {
    let tcp = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tls_client(&s.pki).connect(name, tcp).await.expect("TLS handshake")
}

fn peer_cert(c: &Conn) -> Vec<u8> {
    c.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// One keep-alive GET of `/healthz` on an open connection: its status line.
async fn get_healthz(c: &mut Conn) -> String {
    let req = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {VIEWER}\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = c.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the connection closed: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    return head.lines().next().unwrap_or("").to_string();
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("an answer in time")
}

#[tokio::test]
async fn sighup_gives_new_connections_the_new_certificate_while_an_old_one_keeps_working() {
    let s = Tls::start();
    let mut old = connect(&s).await;
    assert_eq!(get_healthz(&mut old).await, "HTTP/1.1 200 OK");
    let first = der(&s.pki, "server");
    assert_eq!(peer_cert(&old), first);

    // A new certificate (same paths), then SIGHUP.
    s.pki.leaf("renewed", "ca", "server.ext");
    std::fs::copy(s.pki.path("renewed.crt"), s.pki.path("server.crt")).unwrap();
    std::fs::copy(s.pki.path("renewed.key"), s.pki.path("server.key")).unwrap();
    let renewed = der(&s.pki, "renewed");
    assert_ne!(renewed, first);
    s.hup();
    until("a new connection gets the new certificate", || async {
        let c = connect(&s).await;
        peer_cert(&c) == renewed
    })
    .await;
    // The connection from before keeps working, with its certificate.
    assert_eq!(get_healthz(&mut old).await, "HTTP/1.1 200 OK");
    assert_eq!(peer_cert(&old), first);

    // A bad new file: the certificate in use stays, and the log says why.
    std::fs::write(s.pki.path("server.crt"), "not a certificate\n").unwrap();
    s.hup();
    let line = s.logged("keeping the certificate in use");
    assert!(line.contains("--tls-cert") && line.contains("no certificate"), "{line}");
    assert_eq!(peer_cert(&connect(&s).await), renewed);

    // Plain HTTP to the TLS port: a clear 400 and a closed connection.
    let mut plain = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, plain.read_to_string(&mut answer)).await.expect("closed in time").unwrap();
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("https://"), "{answer:?}");
}

#[tokio::test]
async fn the_graphql_ws_client_works_over_wss_with_roles() {
    let s = Tls::start();
    let node_dir = common::node_modules(&["graphql-ws", "ws"]);
    let out = tokio::process::Command::new("node")
        .args(["tls.mjs", &s.addr, VIEWER, EDITOR, "ci"])
        .env("NODE_EXTRA_CA_CERTS", s.pki.path("ca.crt"))
        .current_dir(&node_dir)
        .output();
    let out = tokio::time::timeout(WAIT, out).await.expect("node run in time").expect("node (Node 20+)");
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "graphql-ws over wss:// failed:\n{shown}");
    assert!(shown.contains("all 4 checks passed"), "{shown}");
    // The viewer's refused cenDelete changed nothing.
    let (_, body) = s.gql(VIEWER, "{ cens { id } }").await;
    assert_eq!(body["data"]["cens"], json!([{"id": "over-wss"}]));
}

#[tokio::test]
async fn chromium_shows_the_topology_over_https_to_a_viewer() {
    let Some(binary) = browser::chromium("chromium_shows_the_topology_over_https_to_a_viewer") else { return };
    let s = Tls::start();
    let (status, body) = s.gql(EDITOR, "mutation { cenCreate(input: {id: \"shown\"}) { revision } }").await;
    assert_eq!(status, 200, "{body}");
    let spki = format!("--ignore-certificate-errors-spki-list={}", spki_hash(&s.pki, "server"));
    let mut b = browser::Browser::launch_with(binary, &[&spki]).await;
    b.call("Page.navigate", json!({"url": s.url(&format!("/topology?token={VIEWER}"))})).await;
    b.wait_until("window.leviathanTopology && leviathanTopology.ready && document.body.dataset.state === 'live'").await;
    b.wait_until("leviathanTopology.cy.getElementById('n:shown').length === 1").await;
    assert_eq!(b.eval("location.protocol").await, json!("https:"));
}

#[test]
fn tokens_beyond_loopback_need_tls() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(["serve", "--no-realize", "--listen", "0.0.0.0:0", "--token", "sixteen-characters!", "--state"])
        .arg(dir.path().join("s.db"))
        .env_remove("LEVIATHAN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("--tls-cert") && e.contains("--insecure-plain-http") && e.contains("clear text"), "{e}");
    assert!(!dir.path().join("s.db").exists(), "a refused start creates nothing");
}
