//! Several "hosts" on one machine, the way the kernel's own VXLAN selftests
//! build them: a network namespace per host, joined by an underlay bridge
//! that lives in a namespace of its own, each host with an address from
//! 192.0.2.0/24 (`.1`, `.2`, ...). Each host runs an etcd member (together
//! one cluster) and a `leviathan serve --etcd ... --vtep-address ...`
//! started inside its namespace with `nsenter --net`, with a prefix of its
//! own (named namespaces are global on one machine).
//!
//! Nothing is added to the namespace the tests run in: the underlay is
//! isolated, so every test (and the benchmark) can use 192.0.2.0/24 at the
//! same time. The test process reaches each server through a forwarder: a
//! listener on 127.0.0.1 (made in the test's namespace) whose outgoing
//! connections are made by a thread that entered the underlay namespace,
//! where the harness holds 192.0.2.254 on the bridge.
//!
//! Everything is removed when the [`Cluster`] is dropped, also when a test
//! fails: processes killed, `leviathan cleanup --prefix P --force` for each
//! host's prefix, the harness's namespaces deleted, the temporary directory
//! (etcd data, ledgers, logs) removed; after a failure the servers' logs
//! are printed first.
//!
//! Shared by `tests/hosts.rs` (through `tests/common`) and `benches/hosts.rs`
//! (through `#[path]`); it needs `super::kernel`.
#![allow(dead_code)]

use super::kernel::Prefix;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The token every server of the harness requires (they listen beyond
/// loopback, on the underlay).
pub const TOKEN: &str = "three-hosts-harness-token";
/// The port each server listens on, at its host's underlay address.
pub const PORT: u16 = 8080;
/// Generous bound of every wait: only there to catch a hang (the same as
/// `common::WAIT`; this file is also built into the `hosts` bench alone).
pub const WAIT: Duration = Duration::from_secs(60);

/// The underlay address of host `i` (0-based): 192.0.2.(i+1).
pub fn underlay_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, (i + 1) as u8)
}

/// The harness's own address on the underlay bridge.
pub const HARNESS_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);

/// What to build.
#[derive(Clone, Debug)]
pub struct Options {
    /// How many hosts (and etcd members): ids `h1`, `h2`, ...
    pub hosts: usize,
    /// MTU of the underlay (each host's `eth0` and the bridge).
    pub mtu: u32,
    /// Extra `serve` arguments for every server.
    pub serve_args: Vec<String>,
    /// `LEVIATHAN_LOG` of the servers.
    pub log: String,
    /// Extra environment of every server (`TOKIO_WORKER_THREADS`, ...).
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options { hosts: 3, mtu: 1500, serve_args: Vec::new(), log: "info".to_string(), env: Vec::new() }
    }
}

/// Runs a command to completion; panics with its stderr when it fails.
pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Runs `f` on a fresh thread that entered the network namespace `ns`
/// (`/run/netns/<ns>`): sockets it makes live there.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread in namespace")
}

/// A TCP forwarder: a listener on 127.0.0.1 in the test's namespace whose
/// connections are relayed to `target`, reached from inside namespace `ns`.
pub struct Forwarder {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    pub fn start(ns: &str, target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("forwarder listener");
        let addr = listener.local_addr().expect("forwarder address");
        let stop = Arc::new(AtomicBool::new(false));
        let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            // From here on, connections this thread makes are in `ns`; the
            // listener was made before, in the test's namespace.
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            for inbound in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(inbound) = inbound else { continue };
                // A server that is down: the client sees the connection close.
                if let Ok(outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
                    relay(inbound, outbound);
                }
            }
        });
        Forwarder { addr, stop }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn relay(a: TcpStream, b: TcpStream) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else { return };
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
            let _ = from.shutdown(std::net::Shutdown::Read);
        });
    };
    pipe(a, b2);
    pipe(b, a2);
}

/// A GET over plain HTTP/1.0 with the harness token: the status code, or
/// None when nothing answered.
fn http_get(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut text = String::new();
    s.take(1 << 20).read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

/// One host: its namespace, etcd member, server and prefix.
pub struct Host {
    /// `h1`, `h2`, ...
    pub id: String,
    /// The host's network namespace (made by the harness).
    pub ns: String,
    /// Its underlay address (`--vtep-address`).
    pub addr: Ipv4Addr,
    /// The prefix of its server: everything that server makes carries it.
    pub prefix: Prefix,
    /// Where the test reaches the host's server (through the forwarder).
    pub url: String,
    pub http: reqwest::Client,
    etcd: Option<Child>,
    server: Option<Child>,
    etcd_dir: PathBuf,
    ledger: PathBuf,
    log: PathBuf,
    fwd: Forwarder,
}

impl Host {
    /// The managed namespace of one of this host's containers.
    pub fn ns_of(&self, container: &str) -> String {
        self.prefix.ns(container)
    }

    /// The server's fabric namespace (bridges, VXLAN devices).
    pub fn fabric(&self) -> String {
        self.prefix.fabric()
    }

    pub fn etcd_url(&self) -> String {
        format!("http://{}:2379", self.addr)
    }

    fn etcd_peer_url(&self) -> String {
        format!("http://{}:2380", self.addr)
    }

    /// The server's pid, while it runs.
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// The etcd member's pid, while it runs.
    pub fn etcd_pid(&self) -> Option<u32> {
        self.etcd.as_ref().map(Child::id)
    }

    /// POSTs a GraphQL request: HTTP status and JSON body, or the transport
    /// error (a server that is down).
    pub async fn try_post(&self, body: &Value) -> Result<(u16, Value), String> {
        let resp = self
            .http
            .post(format!("{}/graphql", self.url))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("POST /graphql to {}: {e}", self.id))?;
        let status = resp.status().as_u16();
        let v = resp.json().await.map_err(|e| format!("body from {}: {e}", self.id))?;
        Ok((status, v))
    }

    pub async fn post(&self, body: &Value) -> (u16, Value) {
        self.try_post(body).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a GraphQL operation and returns `data`, failing on errors.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(&json!({"query": query, "variables": variables})).await;
        assert_eq!(status, 200, "{} answered {body}", self.id);
        assert!(body.get("errors").is_none(), "{}: unexpected errors: {body}\nfor {query}", self.id);
        body["data"].clone()
    }

    /// Runs a mutation, retrying while the server answers UNAVAILABLE (an
    /// etcd member went away and its client has not moved on yet), within
    /// [`WAIT`]; returns `data`.
    pub async fn gql_retry(&self, query: &str, variables: Value) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, body) = self.post(&json!({"query": query, "variables": variables})).await;
            if body.get("errors").is_none() {
                return body["data"].clone();
            }
            let code = body["errors"][0]["extensions"]["code"].as_str().unwrap_or("");
            assert_eq!(code, "UNAVAILABLE", "{}: {body}\nfor {query}", self.id);
            assert!(Instant::now() < deadline, "{} stayed UNAVAILABLE: {body}", self.id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A legacy route: method, path, optional JSON body; status and body text.
    pub async fn legacy(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> (u16, String) {
        let mut req = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path} to {}: {e}", self.id));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    pub async fn revision(&self) -> i64 {
        self.gql("{ revision }", json!({})).await["revision"].as_i64().expect("revision")
    }

    /// `/healthz` answers 200 now.
    pub fn healthy(&self) -> bool {
        http_get(self.fwd.addr, "127.0.0.1", "/healthz").is_some_and(|(code, _)| code == 200)
    }

    /// etcd's `/health` of this host's member says it is healthy now
    /// (asked from the underlay).
    pub fn etcd_healthy(&self) -> bool {
        let target = SocketAddr::from((self.addr, 2379));
        let host = self.addr.to_string();
        let ns = self.ns.clone();
        in_netns(&ns, move || http_get(target, &host, "/health"))
            .is_some_and(|(code, body)| code == 200 && body.contains("\"health\":\"true\""))
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// The hosts, their underlay and their etcd cluster; torn down when dropped.
pub struct Cluster {
    pub hosts: Vec<Host>,
    /// The namespace of the underlay bridge.
    pub underlay: String,
    pub opts: Options,
    /// Prefix of the harness's own namespaces (underlay and hosts).
    pub net: Prefix,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Builds the hosts and the underlay, starts the etcd cluster and one
    /// server per host, and waits until every one of them is healthy.
    pub fn start(opts: Options) -> Cluster {
        assert!((1..=9).contains(&opts.hosts), "1 to 9 hosts");
        let net = Prefix::new("u");
        let dir = tempfile::Builder::new().prefix("lev-hosts-").tempdir().expect("temporary directory");
        let underlay = net.ns("ul");
        let mut cluster = Cluster { hosts: Vec::new(), underlay: underlay.clone(), opts: opts.clone(), net, dir };
        // From here on, a panic drops `cluster`, which removes what exists.
        let mtu = opts.mtu.to_string();
        run("ip", &["netns", "add", &underlay]);
        run("ip", &["-n", &underlay, "link", "set", "lo", "up"]);
        run("ip", &["-n", &underlay, "link", "add", "br0", "type", "bridge"]);
        run("ip", &["-n", &underlay, "link", "set", "br0", "mtu", &mtu, "up"]);
        run("ip", &["-n", &underlay, "addr", "add", &format!("{HARNESS_ADDR}/24"), "dev", "br0"]);
        for i in 0..opts.hosts {
            let id = format!("h{}", i + 1);
            let ns = cluster.net.ns(&id);
            let addr = underlay_addr(i);
            run("ip", &["netns", "add", &ns]);
            run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
            // The veth is made with its ends in their namespaces at once.
            let port = format!("p{}", i + 1);
            run(
                "ip",
                &[
                    "-n", &underlay, "link", "add", &port, "mtu", &mtu, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            );
            run("ip", &["-n", &underlay, "link", "set", &port, "master", "br0", "up"]);
            run("ip", &["-n", &ns, "link", "set", "eth0", "mtu", &mtu, "up"]);
            run("ip", &["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            let fwd = Forwarder::start(&underlay, SocketAddr::from((addr, PORT)));
            let url = format!("http://{}", fwd.addr);
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                // Connections do not outlive a server killed under them.
                .pool_max_idle_per_host(0)
                .build()
                .expect("HTTP client");
            let host_dir = cluster.dir.path().join(&id);
            std::fs::create_dir_all(&host_dir).expect("host directory");
            cluster.hosts.push(Host {
                id: id.clone(),
                ns,
                addr,
                prefix: Prefix::new("h"),
                url,
                http,
                etcd: None,
                server: None,
                etcd_dir: host_dir.join("etcd"),
                ledger: host_dir.join("ledger.db"),
                log: host_dir.join("leviathan.log"),
                fwd,
            });
        }
        for i in 0..opts.hosts {
            cluster.start_etcd(i);
        }
        for i in 0..opts.hosts {
            cluster.wait_etcd(i);
        }
        for i in 0..opts.hosts {
            cluster.start_server(i);
        }
        cluster
    }

    /// `--etcd`: every member's client URL.
    pub fn etcd_urls(&self) -> String {
        self.hosts.iter().map(Host::etcd_url).collect::<Vec<_>>().join(",")
    }

    /// The etcd command of host `i`, as docs/hosts.md has it.
    fn etcd_command(&self, i: usize) -> Command {
        let h = &self.hosts[i];
        let cluster =
            self.hosts.iter().map(|o| format!("{}={}", o.id, o.etcd_peer_url())).collect::<Vec<_>>().join(",");
        let bin = leviathan::store::testing::etcd_binary().expect("etcd on PATH");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", h.ns))
            .arg(bin)
            .args(["--name", &h.id, "--data-dir"])
            .arg(&h.etcd_dir)
            .args(["--listen-client-urls", &h.etcd_url(), "--advertise-client-urls", &h.etcd_url()])
            .args(["--listen-peer-urls", &h.etcd_peer_url(), "--initial-advertise-peer-urls", &h.etcd_peer_url()])
            .args(["--initial-cluster", &cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &format!("lev-{}", self.net.0)])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// Starts host `i`'s etcd member (again, on its data, after a stop).
    pub fn start_etcd(&mut self, i: usize) {
        assert!(self.hosts[i].etcd.is_none(), "etcd of {} runs already", self.hosts[i].id);
        let child = self.etcd_command(i).spawn().expect("start etcd");
        self.hosts[i].etcd = Some(child);
    }

    /// Waits (bounded) until host `i`'s member is healthy (with a quorum).
    pub fn wait_etcd(&mut self, i: usize) {
        let deadline = Instant::now() + WAIT;
        while !self.hosts[i].etcd_healthy() {
            if let Some(c) = self.hosts[i].etcd.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("etcd of {} exited: {st}", self.hosts[i].id);
                }
            }
            assert!(Instant::now() < deadline, "etcd of {} not healthy within {WAIT:?}", self.hosts[i].id);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops host `i`'s etcd member (SIGKILL); its data stays.
    pub fn stop_etcd(&mut self, i: usize) {
        if let Some(mut c) = self.hosts[i].etcd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The `leviathan serve` arguments of host `i` (after `serve`).
    pub fn serve_args(&self, i: usize) -> Vec<String> {
        let h = &self.hosts[i];
        let mut args: Vec<String> = [
            "--listen",
            &format!("{}:{PORT}", h.addr),
            "--etcd",
            &self.etcd_urls(),
            "--host-id",
            &h.id,
            "--vtep-address",
            &h.addr.to_string(),
            "--prefix",
            &h.prefix.0,
            "--ledger",
            &h.ledger.to_string_lossy(),
            "--token",
            TOKEN,
            // The hosts' private underlay: plain HTTP on purpose.
            "--insecure-plain-http",
            "--etcd-timeout",
            "2",
            // A killed server's host is down (and not waited for) soon.
            "--host-ttl",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.opts.serve_args.iter().cloned());
        args
    }

    /// Starts host `i`'s server inside the host's namespace and waits
    /// (bounded) until it listens and `/healthz` says 200.
    pub fn start_server(&mut self, i: usize) {
        assert!(self.hosts[i].server.is_none(), "the server of {} runs already", self.hosts[i].id);
        let args = self.serve_args(i);
        let h = &mut self.hosts[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&h.log).expect("log file");
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", h.ns))
            .arg(env!("CARGO_BIN_EXE_leviathan"))
            .arg("serve")
            .args(&args)
            .env_remove("LEVIATHAN_TOKEN")
            .env("LEVIATHAN_LOG", &self.opts.log)
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start leviathan");
        let stdout = child.stdout.take().expect("stdout");
        h.server = Some(child);
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        assert!(
            line.starts_with("listening on "),
            "the server of {} did not start (first line {line:?}); its log:\n{}",
            h.id,
            h.log_tail(40)
        );
        // Whatever else it prints must not fill the pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let deadline = Instant::now() + WAIT;
        while !h.healthy() {
            if let Some(Ok(Some(st))) = h.server.as_mut().map(|c| c.try_wait()) {
                panic!("the server of {} exited: {st}; its log:\n{}", h.id, h.log_tail(40));
            }
            assert!(Instant::now() < deadline, "the server of {} not healthy within {WAIT:?}", h.id);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills host `i`'s server with SIGKILL (no chance to clean anything).
    pub fn kill_server(&mut self, i: usize) {
        if let Some(mut c) = self.hosts[i].server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The host with id `id`.
    pub fn host(&self, id: &str) -> &Host {
        self.hosts.iter().find(|h| h.id == id).unwrap_or_else(|| panic!("no host {id}"))
    }

    /// host id -> its prefix.
    pub fn prefixes(&self) -> BTreeMap<String, String> {
        self.hosts.iter().map(|h| (h.id.clone(), h.prefix.0.clone())).collect()
    }

    /// The namespaces the harness made (underlay and hosts).
    pub fn own_namespaces(&self) -> std::collections::BTreeSet<String> {
        std::iter::once(self.underlay.clone()).chain(self.hosts.iter().map(|h| h.ns.clone())).collect()
    }

    /// Waits (bounded by [`WAIT`]) until, on every server, each container of
    /// its own host that is in a made CEN is READY, and every made CEN and
    /// CIN is READY; fails at once on FAILED.
    pub async fn wait_ready(&self) {
        self.wait_ready_within(WAIT).await
    }

    /// [`Cluster::wait_ready`] with another bound.
    pub async fn wait_ready_within(&self, bound: Duration) {
        for h in &self.hosts {
            let deadline = Instant::now() + bound;
            loop {
                let d = h
                    .gql(
                        "query($h: ID!) { containers(hostId: $h) { id status statusMessage cens { made } }
                           cens { id made status statusMessage } cins { id made status statusMessage } }",
                        json!({"h": h.id}),
                    )
                    .await;
                let mut waiting = Vec::new();
                let containers = d["containers"]
                    .as_array()
                    .expect("containers")
                    .iter()
                    .filter(|c| c["cens"].as_array().is_some_and(|a| a.iter().any(|e| e["made"] == json!(true))));
                let made = |k: &str| {
                    d[k].as_array().expect(k).iter().filter(|x| x["made"] == json!(true)).cloned().collect::<Vec<_>>()
                };
                for x in containers.cloned().chain(made("cens")).chain(made("cins")) {
                    let st = x["status"].as_str().unwrap_or("");
                    assert_ne!(st, "FAILED", "on {}: {x}", h.id);
                    if st != "READY" {
                        waiting.push(format!("{} {st}", x["id"]));
                    }
                }
                if waiting.is_empty() {
                    break;
                }
                assert!(Instant::now() < deadline, "{} not READY within {bound:?}: {waiting:?}", h.id);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The temporary directory (etcd data, ledgers, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for h in &self.hosts {
                eprintln!("--- log of the server of {} (last lines) ---\n{}", h.id, h.log_tail(60));
            }
        }
        for i in 0..self.hosts.len() {
            self.kill_server(i);
            self.stop_etcd(i);
        }
        for h in &self.hosts {
            let _ = Command::new(env!("CARGO_BIN_EXE_leviathan"))
                .args(["cleanup", "--prefix", &h.prefix.0, "--force"])
                .output();
        }
        for ns in self.own_namespaces() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
        // The prefixes' own drops clear them once more; the temporary
        // directory goes with `dir`.
    }
}

/// Pings `to` from inside namespace `from_ns` (three tries, 0.2 s apart,
/// each waiting up to 1 s): whether any answer came back.
pub fn ping_cmd(from_ns: &str, to: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", from_ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-q", to])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Runs all pings at once; returns those that got no answer, as
/// (label, from namespace, address).
pub fn ping_all(pings: &[(String, String, String)]) -> Vec<(String, String, String)> {
    let children: Vec<_> = pings.iter().map(|(_, from, to)| ping_cmd(from, to).spawn()).collect();
    let mut failed = Vec::new();
    for (p, child) in pings.iter().zip(children) {
        let answered = child.and_then(|mut c| c.wait()).is_ok_and(|st| st.success());
        if !answered {
            failed.push(p.clone());
        }
    }
    failed
}
