//! What HTTPS and the role checks cost (issue 19): `cen(id)` queries over
//! 64 keep-alive connections against the release binary, in the same run:
//!
//! - HTTPS (`--tls-cert`, HTTP/1.1 by ALPN) against plain HTTP, both with the
//!   same `--tokens` file and the same admin token. Target: >= 0.8x.
//! - A viewer's token against an admin's on the same plain server (the
//!   role check runs on every request either way; the viewer's is the one
//!   that could cost more). Target: >= 0.95x.
//!
//! Each round runs 64 client tasks, one connection each, sending one
//! request after another for a fixed time after a warm-up; the figures are
//! answers per second. Each pair is measured back to back, its order
//! swapped every round, and a ratio is the median of the pairs' ratios, so
//! that drift of the machine falls on both sides. Certificates are made with the
//! openssl CLI in a temporary directory.
//!
//! `cargo bench --bench http_tls` (`HTTP_TLS_BENCH_SECS`, default 2, per
//! measurement; `HTTP_TLS_BENCH_ROUNDS`, default 6).

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 64;
const VIEWER: &str = "bench-viewer-token-0123456789";
const ADMIN: &str = "bench-admin-token-0123456789";
const QUERY: &str = r#"{"query":"query($id: ID!) { cen(id: $id) { id wiringType status containers { id } } }","variables":{"id":"cen1"}}"#;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("the openssl command");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    std::fs::write(
        dir.join("ca.cnf"),
        "[req]\ndistinguished_name=dn\nx509_extensions=v3_ca\n[dn]\n[v3_ca]\n\
         basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .expect("write ca.cnf");
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        .expect("write server.ext");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509", "-config", "ca.cnf"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=bench CA"]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-new"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=bench", "-config", "ca.cnf"]);
    openssl(dir, &csr);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

fn sha256_hex(token: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl dgst");
    child.stdin.take().expect("stdin").write_all(token.as_bytes()).expect("write the token");
    let out = child.wait_with_output().expect("the digest");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("a digest").to_string()
}

fn start(dir: &Path, name: &str, extra: &[&str]) -> (Child, String) {
    let (state, tokens) = (dir.join(format!("{name}.db")), dir.join("tokens"));
    let head = [OsStr::new("--no-realize"), OsStr::new("--state"), state.as_os_str()];
    let head = head.into_iter().chain([OsStr::new("--tokens"), tokens.as_os_str()]);
    common::serve(head.chain(extra.iter().map(OsStr::new)), false)
}

/// The TLS client of the bench, trusting the bench's CA.
fn tls_connector(dir: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::CertificateDer::from_pem_file(dir.join("ca.crt")).expect("the CA");
    roots.add(ca).expect("a root");
    let provider = leviathan::http::tls::provider();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// One keep-alive connection sending `cen(id)` until `until`; counts the
/// answers after `counting`.
async fn client<I>(io: I, addr: String, token: &'static str, counting: Instant, until: Instant, n: Arc<AtomicU64>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.expect("an HTTP/1.1 connection");
    tokio::spawn(conn);
    while Instant::now() < until {
        let req = hyper::Request::post("/graphql")
            .header("host", &addr)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from_static(QUERY.as_bytes())))
            .expect("a request");
        let resp = sender.send_request(req).await.expect("an answer");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("the body").to_bytes();
        assert!(body.starts_with(b"{\"data\":{\"cen\":{\"id\":\"cen1\""), "{}", String::from_utf8_lossy(&body));
        if Instant::now() >= counting {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Answers per second of 64 connections to `addr` (TLS with `tls`).
async fn round(addr: &str, tls: Option<&tokio_rustls::TlsConnector>, token: &'static str, secs: f64) -> f64 {
    let warm = Duration::from_millis(500);
    let measured = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let (counting, until) = (start + warm, start + warm + measured);
    let n = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let (addr, n) = (addr.to_string(), Arc::clone(&n));
        match tls {
            None => tasks.push(tokio::spawn(client(tcp, addr, token, counting, until, n))),
            Some(c) => {
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a name");
                let stream = c.connect(name, tcp).await.expect("a TLS handshake");
                tasks.push(tokio::spawn(client(stream, addr, token, counting, until, n)));
            }
        }
    }
    for t in tasks {
        t.await.expect("a client task");
    }
    n.load(Ordering::Relaxed) as f64 / measured.as_secs_f64()
}

async fn seed(addr: &str) {
    let http = reqwest::Client::new();
    let q = r#"{"query":"mutation { cenImport(input: {cens: [{id: \"cen1\", containerIds: [\"c1\", \"c2\", \"c3\", \"c4\"]}]}) { revision } }"}"#;
    let r = http
        .post(format!("http://{addr}/graphql"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(q)
        .send()
        .await
        .expect("seed");
    let body = r.text().await.expect("seed answer");
    assert!(!body.contains("errors"), "{body}");
}

fn env_or(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let secs = env_or("HTTP_TLS_BENCH_SECS", 2.0);
    let rounds = env_or("HTTP_TLS_BENCH_ROUNDS", 6.0).max(1.0) as usize;
    let dir = tempfile::tempdir().expect("a temporary directory");
    certificates(dir.path());
    let tokens = format!("viewer wall {}\nadmin ops {}\n", sha256_hex(VIEWER), sha256_hex(ADMIN));
    std::fs::write(dir.path().join("tokens"), tokens).expect("write the tokens file");
    let (mut plain, plain_addr) = start(dir.path(), "plain", &[]);
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    let tls_args = ["--tls-cert", cert.to_str().expect("a path"), "--tls-key", key.to_str().expect("a path")];
    let (mut https, https_addr) = start(dir.path(), "https", &tls_args);
    seed(&plain_addr).await;
    // The HTTPS server's copy of the CEN, through the TLS client too.
    let connector = tls_connector(dir.path());
    {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("ca.crt")).expect("the CA"))
            .expect("a PEM CA");
        let http = reqwest::Client::builder().add_root_certificate(ca).build().expect("a client");
        let q = r#"{"query":"mutation { cenImport(input: {cens: [{id: \"cen1\", containerIds: [\"c1\", \"c2\", \"c3\", \"c4\"]}]}) { revision } }"}"#;
        let r = http
            .post(format!("https://{https_addr}/graphql"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(q)
            .send()
            .await
            .expect("seed over https");
        assert!(r.status().is_success());
    }

    // Pairs measured back to back, the order swapped every round; the
    // ratio is the median of the pairs' ratios (the machine's drift falls
    // on both sides of each pair).
    let (mut p, mut h, mut v, mut a) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut tls_ratio, mut role_ratio) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let (pp, hh, aa, vv);
        if i % 2 == 0 {
            pp = round(&plain_addr, None, ADMIN, secs).await;
            hh = round(&https_addr, Some(&connector), ADMIN, secs).await;
            aa = round(&plain_addr, None, ADMIN, secs).await;
            vv = round(&plain_addr, None, VIEWER, secs).await;
        } else {
            hh = round(&https_addr, Some(&connector), ADMIN, secs).await;
            pp = round(&plain_addr, None, ADMIN, secs).await;
            vv = round(&plain_addr, None, VIEWER, secs).await;
            aa = round(&plain_addr, None, ADMIN, secs).await;
        }
        tls_ratio.push(hh / pp);
        role_ratio.push(vv / aa);
        p.push(pp);
        h.push(hh);
        a.push(aa);
        v.push(vv);
    }
    let (p, h, v, a) = (median(p), median(h), median(v), median(a));
    let (tls_ratio, role_ratio) = (median(tls_ratio), median(role_ratio));
    println!("cen(id), {CONNECTIONS} keep-alive connections, {rounds} rounds of {secs} s (medians):");
    println!("  plain HTTP, admin token   {p:>10.0} answers/s");
    println!("  HTTPS,      admin token   {h:>10.0} answers/s   ratio {tls_ratio:.3} (target >= 0.8)");
    println!("  plain HTTP, admin token   {a:>10.0} answers/s");
    println!("  plain HTTP, viewer token  {v:>10.0} answers/s   ratio {role_ratio:.3} (target >= 0.95)");
    let _ = plain.kill();
    let _ = https.kill();
    let _ = plain.wait();
    let _ = https.wait();
}
