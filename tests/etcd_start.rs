//! `leviathan serve --etcd` against etcd as operators run it (stock
//! limits): started before etcd, it binds its port, answers `/healthz` 503
//! `unavailable` and the API `UNAVAILABLE` while it tries again, and serves
//! once etcd answers; towards an etcd with `--client-cert-auth` it works
//! with its client certificate (`--etcd-cacert/--etcd-cert/--etcd-key`) and
//! is refused, promptly and saying why, without one or with a wrong one;
//! with etcd's authentication enabled, `--etcd-user` with
//! `--etcd-password-file` works and a wrong password is refused. Each test
//! starts its own etcd (Debian's `etcd-server`) and fails under `CI` when
//! it is missing; the certificates are made by the test (openssl CLI).

mod common;

use common::etcd::{Etcd, Pki};
use common::{free_port, until, Server, WAIT};
use leviathan::store::testing::etcd_available;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const CREATE: &str = "mutation($id: ID!) { cenCreate(input: {id: $id}) { cen { id } revision } }";

/// A `leviathan serve --no-realize` with `args`, its stderr in a file.
struct Starting {
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Starting {
    fn spawn(args: &[&str]) -> Starting {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_leviathan"))
            .args(["serve", "--no-realize", "--etcd-timeout", "1"])
            .args(args)
            .env_remove("LEVIATHAN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start leviathan");
        Starting { child: Some(child), log, _dir: dir }
    }

    /// A server on a free port with `args` that must refuse to start:
    /// its log.
    fn refused(args: &[&str]) -> String {
        let mut s = Starting::spawn(&[&["--listen", "127.0.0.1:0"], args].concat());
        let status = s.exit_status();
        assert!(!status.success(), "started with {args:?}");
        s.stderr()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for the server to exit: a refused start.
    fn exit_status(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "still running after {WAIT:?}; its log:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server once it serves: its first stdout line, read within a
    /// bound.
    fn serving(mut self) -> Server {
        let mut child = self.child.take().expect("running");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no listening line; log:\n{}", self.stderr()));
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}; log:\n{}", self.stderr()))
            .to_string();
        Server { child, addr, token: None, http: reqwest::Client::new() }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A mutation through `s` and the read back.
async fn create_and_read(s: &Server, id: &str) {
    let d = s.gql(CREATE, json!({"id": id})).await;
    assert_eq!(d["cenCreate"]["cen"]["id"], json!(id));
    let d = s.gql("{ cens { id } }", json!({})).await;
    assert!(d["cens"].as_array().unwrap().contains(&json!({"id": id})), "{d}");
}

/// `/healthz` of whatever listens at `addr`: None while nothing does.
async fn healthz(http: &reqwest::Client, addr: &str) -> Option<(u16, Value)> {
    let resp = http.get(format!("http://{addr}/healthz")).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_before_etcd_answers_503_then_serves_once_etcd_is_up() {
    if !etcd_available("a_server_started_before_etcd_answers_503_then_serves_once_etcd_is_up") {
        return;
    }
    let mut etcd = Etcd::plain(free_port());
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Starting::spawn(&["--listen", &addr, "--etcd", &etcd.url(), "--host-id", "early"]);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    // It listens (polled), says unavailable, and keeps trying: the health
    // body counts its attempts.
    let deadline = Instant::now() + WAIT;
    let health = loop {
        if let Some((code, body)) = healthz(&http, &addr).await {
            let error = body["store"]["error"].as_str().unwrap_or("").to_string();
            assert_eq!(code, 503, "{body}");
            assert_eq!((body["status"].as_str(), body["store"]["kind"].as_str()), (Some("unavailable"), Some("etcd")));
            assert_eq!(body["store"]["ok"], json!(false));
            if error.contains("not reached after 2 attempts") {
                break body;
            }
        }
        assert!(Instant::now() < deadline, "no second attempt within {WAIT:?}; log:\n{}", server.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(health["store"]["error"].as_str().unwrap().contains(&etcd.url()), "{health}");
    assert_eq!(health["realizer"], json!("off (--no-realize)"));
    // GraphQL answers UNAVAILABLE, with 503.
    let resp =
        http.post(format!("http://{addr}/graphql")).json(&json!({"query": "{ revision }"})).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], json!("UNAVAILABLE"), "{body}");
    // Each attempt is logged.
    let log = server.stderr();
    for n in [1, 2] {
        assert!(
            log.contains(&format!("attempt={n}")) && log.contains("trying again"),
            "attempt {n} not logged:\n{log}"
        );
    }

    // etcd comes up: the server loads the state and serves.
    etcd.start();
    let s = server.serving();
    assert_eq!(s.addr, addr);
    until("/healthz to say 200", || async { matches!(healthz(&http, &addr).await, Some((200, _))) }).await;
    create_and_read(&s, "after-etcd").await;
    let (_, body) = healthz(&http, &addr).await.unwrap();
    assert_eq!((body["status"].as_str(), body["revision"].as_i64()), (Some("ok"), Some(1)), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_the_client_certificate_works_and_without_it_is_refused() {
    if !etcd_available("mutual_tls_with_the_client_certificate_works_and_without_it_is_refused") {
        return;
    }
    let pki = Pki::new();
    let mut etcd = Etcd::mutual_tls(free_port(), &pki);
    etcd.start();
    etcd.wait_listening();
    let url = etcd.url();
    let (ca, crt, key) = (pki.path("ca.crt"), pki.path("client.crt"), pki.path("client.key"));

    let s = Starting::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--etcd",
        &url,
        "--etcd-cacert",
        &ca,
        "--etcd-cert",
        &crt,
        "--etcd-key",
        &key,
    ])
    .serving();
    create_and_read(&s, "over-tls").await;

    // Without a client certificate: refused at once, saying what to pass.
    let log = Starting::refused(&["--etcd", &url, "--etcd-cacert", &ca]);
    assert!(log.contains("etcd wants a client certificate") && log.contains("--etcd-cert"), "{log}");

    // A certificate from a CA etcd does not trust: refused.
    let (other, other_key) = (pki.path("stranger.crt"), pki.path("stranger.key"));
    let stranger =
        Starting::refused(&["--etcd", &url, "--etcd-cacert", &ca, "--etcd-cert", &other, "--etcd-key", &other_key]);
    assert!(stranger.contains("etcd did not accept --etcd-cert"), "{stranger}");

    // etcd's certificate checked against the wrong CA: refused.
    let wrong_ca = pki.path("other-ca.crt");
    let unverified =
        Starting::refused(&["--etcd", &url, "--etcd-cacert", &wrong_ca, "--etcd-cert", &crt, "--etcd-key", &key]);
    assert!(unverified.contains("etcd's certificate failed verification"), "{unverified}");

    // Files checked before anything: a key of another certificate, an
    // https:// member without a CA.
    let server_key = pki.path("server.key");
    let mismatch =
        Starting::refused(&["--etcd", &url, "--etcd-cacert", &ca, "--etcd-cert", &crt, "--etcd-key", &server_key]);
    assert!(
        mismatch.contains(&format!("--etcd-key {server_key} does not belong to the certificate in --etcd-cert {crt}")),
        "{mismatch}"
    );
    let no_ca = Starting::refused(&["--etcd", &url]);
    assert!(no_ca.contains("give --etcd-cacert FILE"), "{no_ca}");

    // The good server still serves.
    create_and_read(&s, "still").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_users_authenticate_from_a_password_file_and_a_wrong_password_is_refused() {
    if !etcd_available("etcd_users_authenticate_from_a_password_file_and_a_wrong_password_is_refused") {
        return;
    }
    let mut etcd = Etcd::plain(free_port());
    etcd.start();
    etcd.wait_listening();
    let url = etcd.url();
    // As etcdctl would: a root user, then authentication on.
    let mut admin = etcd_client::Client::connect([url.as_str()], None).await.unwrap();
    admin.user_add("root", "s3cret pass", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("password");
    std::fs::write(&good, "s3cret pass\n").unwrap();
    let bad = dir.path().join("wrong");
    std::fs::write(&bad, "guess\n").unwrap();
    let (good, bad) = (good.to_string_lossy().into_owned(), bad.to_string_lossy().into_owned());

    let s = Starting::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--etcd",
        &url,
        "--etcd-user",
        "root",
        "--etcd-password-file",
        &good,
    ])
    .serving();
    create_and_read(&s, "as-root").await;

    let log = Starting::refused(&["--etcd", &url, "--etcd-user", "root", "--etcd-password-file", &bad]);
    assert!(
        log.contains("authentication failed") && log.contains("check --etcd-user and --etcd-password-file"),
        "{log}"
    );
    assert!(!log.contains("guess"), "the password is never printed: {log}");

    let anonymous = Starting::refused(&["--etcd", &url]);
    assert!(anonymous.contains("pass --etcd-user"), "{anonymous}");
}

/// What a server refuses to start on stays refused while etcd cannot be
/// reached: it exits at once instead of waiting.
#[test]
fn bad_options_are_refused_without_waiting_for_etcd() {
    let url = format!("http://127.0.0.1:{}", free_port());
    for (args, says) in [
        (vec!["--etcd-prefix", "no-slash"], "--etcd-prefix 'no-slash'"),
        (vec!["--host-id", "not an id"], "--host-id"),
        (vec!["--host-ttl", "0"], "--host-ttl"),
        (
            vec!["--etcd-user", "root", "--etcd-password-file", "/nonexistent/pw"],
            "--etcd-password-file /nonexistent/pw",
        ),
    ] {
        let mut all = vec!["--listen", "127.0.0.1:0", "--etcd", &url];
        all.extend(args.iter().copied());
        let mut s = Starting::spawn(&all);
        assert!(!s.exit_status().success(), "{args:?}");
        assert!(s.stderr().contains(says), "{args:?}: {}", s.stderr());
    }
}
