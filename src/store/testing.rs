//! Test support: a throwaway `etcd` (Debian's `etcd-server`) on free
//! loopback ports with a data directory of its own and etcd's default
//! limits (never raised: the store keeps every request within them), killed
//! and removed when dropped. Used by the store's contract tests and the
//! end-to-end tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary, if installed.
pub fn etcd_binary() -> Option<PathBuf> {
    let from_env = std::env::var_os("LEVIATHAN_TEST_ETCD").map(PathBuf::from);
    let candidates = from_env.into_iter().chain(
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join("etcd")).collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    candidates.into_iter().find(|p| p.is_file())
}

/// Whether etcd tests can run: without the binary they fail under `CI`
/// and are skipped (loudly) otherwise.
pub fn etcd_available(test: &str) -> bool {
    if etcd_binary().is_some() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: the etcd binary is missing (install Debian's etcd-server); CI runs every test");
    }
    eprintln!("SKIPPED {test}: no etcd binary on PATH (install Debian's etcd-server to run it)");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// Whether process `pid` is the one listening on loopback TCP `port`: a
/// port picked free may be taken by another test's member before this one
/// binds it, and then a connection there reaches the wrong etcd.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else { return false };
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit_once(':')?.1;
            let listening = f.get(3) == Some(&"0A");
            let inode = f.get(9)?;
            (listening && u16::from_str_radix(local_port, 16).ok()? == port).then(|| format!("socket:[{inode}]"))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str())))
}

/// Whether every thread of process `pid` is stopped (state `T`).
fn stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T') || rest.starts_with('t')))
            .unwrap_or(false)
    })
}

/// One etcd member.
pub struct EtcdProcess {
    child: Option<Child>,
    name: String,
    pub client_url: String,
    client_port: u16,
    peer_url: String,
    dir: PathBuf,
    initial_cluster: String,
}

impl EtcdProcess {
    /// A single-member etcd, started and healthy.
    /// Ports are picked free and may be taken before etcd binds them: a
    /// member that exits at start is tried again on other ports.
    pub fn start(tag: &str) -> EtcdProcess {
        for _ in 0..4 {
            let mut members = Self::cluster_members(tag, 1);
            let mut m = members.pop().expect("one member");
            m.spawn();
            if m.wait_healthy_or_exit() {
                return m;
            }
        }
        panic!("etcd ({tag}) exited at start four times: its ports were taken each time");
    }

    /// A cluster of `n` members, started and healthy.
    pub fn cluster(tag: &str, n: usize) -> Vec<EtcdProcess> {
        let mut members = Self::cluster_members(tag, n);
        for m in &mut members {
            m.spawn();
        }
        for m in &mut members {
            m.wait_healthy();
        }
        members
    }

    fn cluster_members(tag: &str, n: usize) -> Vec<EtcdProcess> {
        let unique = format!("{tag}-{}-{}", std::process::id(), free_port());
        let mut members: Vec<EtcdProcess> = (0..n)
            .map(|i| {
                let client_port = free_port();
                let dir = std::env::temp_dir().join(format!("lev-etcd-{unique}-{i}"));
                let _ = std::fs::remove_dir_all(&dir);
                EtcdProcess {
                    child: None,
                    name: format!("m{i}"),
                    client_url: format!("http://127.0.0.1:{client_port}"),
                    client_port,
                    peer_url: format!("http://127.0.0.1:{}", free_port()),
                    dir,
                    initial_cluster: String::new(),
                }
            })
            .collect();
        let initial = members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",");
        for m in &mut members {
            m.initial_cluster = initial.clone();
        }
        members
    }

    fn spawn(&mut self) {
        let bin = etcd_binary().expect("etcd binary");
        let child = Command::new(bin)
            .args(["--name", &self.name, "--data-dir"])
            .arg(&self.dir)
            .args(["--listen-client-urls", &self.client_url, "--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url, "--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "leviathan-test"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
    }

    /// Answers etcd's `/health` with a quorum (bounded wait), on a port
    /// this member listens on.
    pub fn wait_healthy(&mut self) {
        assert!(self.wait_healthy_or_exit(), "etcd at {} exited at start (port taken?)", self.client_url);
    }

    /// [`EtcdProcess::wait_healthy`], false when the member exited first.
    fn wait_healthy_or_exit(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            let ours = self.child.as_ref().is_some_and(|c| listens_on(c.id(), self.client_port));
            if ours && self.healthy() {
                return true;
            }
            assert!(Instant::now() < deadline, "etcd at {} did not become healthy within 60s", self.client_url);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `/health` says so now.
    pub fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], self.client_port)),
            Duration::from_secs(1),
        ) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = s.take(64 * 1024).read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }

    /// Kills the member (SIGKILL) and waits for it; its data stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends signal `sig` (`STOP`, `CONT`) to the member: `STOP` stalls it
    /// (connections stay open, nothing is answered) until `CONT`.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill").arg(format!("-{sig}")).arg(c.id().to_string()).status();
            assert!(ok.as_ref().is_ok_and(|s| s.success()), "kill -{sig} etcd: {ok:?}");
            // `STOP` returns once every thread of the member is stopped.
            let deadline = Instant::now() + Duration::from_secs(60);
            while sig == "STOP" && !stopped(c.id()) {
                assert!(Instant::now() < deadline, "etcd did not stop within 60 s");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Starts the member again on its data, at the same addresses.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
