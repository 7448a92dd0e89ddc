//! What the plugin's end-to-end tests share: a real `leviathan serve`
//! (the workspace's binary, beside this one) realizing under a prefix of
//! the test's own, with its unix socket; GraphQL over that socket with
//! curl; the Go driver built from Debian's libcni sources; and network
//! namespaces that are removed whatever the test's outcome.
//!
//! The tests need root and network namespaces, Go and Debian's libcni
//! sources: in CI (`CI` set) they fail when any is missing, saying which;
//! elsewhere they skip loudly.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

/// Where libcni's sources are (golang-github-appc-cni-dev).
pub const GOCODE: &str = "/usr/share/gocode";
/// Where Debian's reference plugins are (containernetworking-plugins).
pub const DEBIAN_PLUGINS: &str = "/usr/lib/cni";

fn skip_or_fail(name: &str, why: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{name}: {why}; CI must run it (.ci/run installs golang-go, golang-github-appc-cni-dev and containernetworking-plugins)");
    }
    eprintln!("\n*** SKIPPING {name}: {why} ***\n");
    false
}

/// Whether the test can run here (root, Go, libcni, the plugins).
pub fn can_run(name: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip_or_fail(name, "needs root (network namespaces)");
    }
    if !Path::new(GOCODE).join("src/github.com/containernetworking/cni/libcni").is_dir() {
        return skip_or_fail(name, "needs Debian's libcni sources (golang-github-appc-cni-dev) in /usr/share/gocode");
    }
    if !Path::new(DEBIAN_PLUGINS).join("tuning").exists() {
        return skip_or_fail(name, "needs Debian's CNI plugins (containernetworking-plugins) in /usr/lib/cni");
    }
    match driver() {
        Ok(_) => true,
        Err(why) => skip_or_fail(name, &why),
    }
}

/// The plugin binary under test.
pub fn plugin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_leviathan-cni"))
}

/// The directory the runtime finds plugins in: leviathan-cni's.
pub fn plugin_dir() -> PathBuf {
    plugin().parent().expect("a directory").to_path_buf()
}

/// The server binary, built beside the plugin by the workspace.
pub fn server_bin() -> PathBuf {
    let p = plugin_dir().join("leviathan");
    assert!(p.exists(), "{} is missing: build the workspace (cargo build --workspace) first", p.display());
    p
}

/// The Go driver, built once per run from Debian's libcni in GOPATH mode.
pub fn driver() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cni-go");
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/driver.go");
            let out = dir.join("driver");
            let built = Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg(&src)
                .env("GO111MODULE", "off")
                .env("GOPATH", format!("{GOCODE}:{}", dir.join("gopath").display()))
                .env("GOCACHE", dir.join("cache"))
                .output()
                .map_err(|e| format!("cannot run go (golang-go): {e}"))?;
            if !built.status.success() {
                return Err(format!(
                    "building the libcni driver failed: {}",
                    String::from_utf8_lossy(&built.stderr).trim()
                ));
            }
            Ok(out)
        })
        .clone()
}

/// A test's world: its prefix, a temporary directory, a server, and the
/// namespaces it made; all removed when dropped, pass or fail.
pub struct World {
    pub prefix: String,
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub queue: PathBuf,
    pub server: Option<Child>,
    pub namespaces: Vec<String>,
}

impl World {
    /// `tag` (2 to 6 letters) names the prefix `<tag>-`.
    pub fn new(tag: &str) -> World {
        let prefix = format!("{tag}-");
        let dir = std::env::temp_dir().join(format!("lev-cni-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        cleanup_prefix(&prefix);
        World { sock: dir.join("l.sock"), queue: dir.join("queue"), prefix, dir, server: None, namespaces: Vec::new() }
    }

    /// Starts (or starts again) the server on the world's state and socket.
    pub fn start(&mut self) {
        let mut child = Command::new(server_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--prefix", &self.prefix])
            .arg("--state")
            .arg(self.dir.join("state.db"))
            .arg("--unix-socket")
            .arg(&self.sock)
            .arg("--cni-queue")
            .arg(&self.queue)
            .env_remove("LEVIATHAN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start leviathan");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
        assert!(line.starts_with("listening on "), "unexpected first line {line:?}");
        self.server = Some(child);
    }

    /// Stops the server (SIGTERM) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.server.take() {
            // SAFETY: kill with a child's pid and SIGTERM.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// A network namespace as a runtime makes one (`ip netns add`).
    pub fn netns(&mut self, name: &str) -> String {
        let full = format!("{}{name}", self.prefix);
        run("ip", &["netns", "add", &full]);
        self.namespaces.push(full.clone());
        format!("/run/netns/{full}")
    }

    /// A GraphQL request over the unix socket; the whole answer.
    pub fn gql(&self, query: &str) -> Value {
        let body = serde_json::json!({"query": query}).to_string();
        let out = Command::new("curl")
            .args(["-s", "--max-time", "60", "--unix-socket"])
            .arg(&self.sock)
            .args(["http://localhost/graphql", "-H", "content-type: application/json", "-d", &body])
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// A CEN and a CIN over it, made.
    pub fn made_cen(&self, cen: &str) {
        let q = format!(
            "mutation {{ cenCreate(input: {{id: \"{cen}\"}}) {{ revision }} cinImport(input: {{cins: [{{id: \"{cen}-cin\", cenIds: [\"{cen}\"]}}]}}) {{ revision }} cinMake(input: {{ids: [\"{cen}-cin\"]}}) {{ cins {{ status }} }} }}"
        );
        let v = self.gql(&q);
        assert_eq!(v["data"]["cinMake"]["cins"][0]["status"], "READY", "{v}");
    }

    /// A network configuration list for libcni: leviathan-cni on `cen`,
    /// then `chained` plugins.
    pub fn conflist(&self, name: &str, cen: &str, chained: &[Value]) -> PathBuf {
        let mut plugins = vec![self.plugin_conf(cen)];
        plugins.extend(chained.iter().cloned());
        let list = serde_json::json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins});
        let path = self.dir.join(format!("{name}.conflist"));
        std::fs::write(&path, list.to_string()).expect("write conflist");
        path
    }

    pub fn plugin_conf(&self, cen: &str) -> Value {
        serde_json::json!({
            "type": "leviathan-cni",
            "cen": cen,
            "server": format!("unix://{}", self.sock.display()),
            "deleteQueue": self.queue.display().to_string()
        })
    }

    /// Runs the Go driver (libcni) with the plugins' directories.
    pub fn driver(&self, args: &[&str]) -> Output {
        let driver = driver().expect("the driver was built by can_run");
        Command::new(driver)
            .args(args)
            .env("CNI_PATH", format!("{}:{DEBIAN_PLUGINS}", plugin_dir().display()))
            .env("CNI_CACHE", self.dir.join("cache"))
            .output()
            .expect("run the driver")
    }

    /// Execs the plugin as libcni >= 1.2 does for STATUS and GC: the
    /// command in `CNI_COMMAND`, the configuration on stdin.
    pub fn exec_plugin(&self, command: &str, conf: &Value) -> Output {
        use std::io::Write;
        let mut child = Command::new(plugin())
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", format!("{}:{DEBIAN_PLUGINS}", plugin_dir().display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the plugin");
        child.stdin.take().expect("stdin").write_all(conf.to_string().as_bytes()).expect("write stdin");
        child.wait_with_output().expect("plugin output")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop();
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        cleanup_prefix(&self.prefix);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cleanup_prefix(prefix: &str) {
    if let Ok(bin) = std::panic::catch_unwind(server_bin) {
        let _ = Command::new(bin).args(["cleanup", "--prefix", prefix]).stdout(Stdio::null()).status();
    }
}

/// Runs a command that must succeed.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The JSON a successful command printed.
pub fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The CNI error a failed command printed.
pub fn error_of(out: &Output) -> Value {
    assert!(!out.status.success(), "expected a failure, got {}", String::from_utf8_lossy(&out.stdout));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!("no error object: {} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

/// Whether `from` reaches `to` with one ping.
pub fn ping(from_ns: &str, to: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", from_ns, "ping", "-c", "1", "-W", "5", to])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
