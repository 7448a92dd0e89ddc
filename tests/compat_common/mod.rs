//! Shared by the compat end-to-end tests: the real server binary, driven by
//! the real `curl`.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `leviathan serve` on a fresh state file; killed on drop.
pub struct Server {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub token: Option<String>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(None)
    }

    pub fn start_with(token: Option<&str>) -> Server {
        Self::launch(token, None)
    }

    /// A server that realizes in the kernel under `prefix`.
    pub fn start_realized(prefix: &str) -> Server {
        Self::launch(None, Some(prefix))
    }

    fn launch(token: Option<&str>, prefix: Option<&str>) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("x.db");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_leviathan"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--state"]).arg(&state);
        cmd.args(["--max-body", "65536"]);
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        match prefix {
            Some(p) => cmd.args(["--prefix", p]),
            None => cmd.arg("--no-realize"),
        };
        cmd.env_remove("LEVIATHAN_TOKEN").env("LEVIATHAN_LOG", "warn");
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start leviathan");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the listening line");
        let addr =
            line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line:?}")).to_string();
        Server { child, addr, dir, token: token.map(str::to_string) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A file under the test's temp dir.
    pub fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).expect("write file");
        p
    }

    /// Runs curl with `args` (method, data...) against `path`.
    pub fn curl(&self, method: &str, path: &str, args: &[&str]) -> Reply {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let headers = self.dir.path().join(format!("h{n}"));
        let body = self.dir.path().join(format!("b{n}"));
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-S", "-X", method, "-D"]).arg(&headers).arg("-o").arg(&body);
        cmd.args(["-w", "%{http_code}"]);
        if let Some(t) = &self.token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        cmd.args(args).arg(self.url(path));
        let out = cmd.output().expect("run curl");
        let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let status: u16 = code.parse().unwrap_or_else(|_| {
            panic!("curl {method} {path}: no status ({code:?}): {}", String::from_utf8_lossy(&out.stderr))
        });
        let head = std::fs::read_to_string(&headers).unwrap_or_default();
        let body = std::fs::read(&body).unwrap_or_default();
        Reply { status, head, body: String::from_utf8_lossy(&body).into_owned() }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.curl("GET", path, &[])
    }

    /// `curl -d @file` (form-urlencoded, as legacy scripts send).
    pub fn post_file(&self, path: &str, file: &Path) -> Reply {
        let arg = format!("@{}", file.display());
        self.curl("POST", path, &["-d", &arg])
    }

    /// `curl -d 'text'`.
    pub fn post(&self, path: &str, data: &str) -> Reply {
        self.curl("POST", path, &["-d", data])
    }

    /// Runs a GraphQL query and returns its `data`.
    pub fn graphql(&self, query: &str) -> Value {
        let body = serde_json::json!({ "query": query }).to_string();
        let r = self.curl("POST", "/graphql", &["-H", "Content-Type: application/json", "--data-binary", &body]);
        assert_eq!(r.status, 200, "graphql: {}", r.body);
        let v = r.json();
        assert!(v.get("errors").is_none(), "graphql errors: {v}");
        v["data"].clone()
    }

    /// The current revision, through GraphQL.
    pub fn revision(&self) -> i64 {
        self.graphql("{ revision }")["revision"].as_i64().expect("revision")
    }
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One curl answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The raw header block(s).
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// A header of the last response (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        let last = self.head.rsplit("HTTP/").next().unwrap_or("");
        last.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// Asserts a legacy error: status, JSON `{"status", "message"}` with the
    /// content type, and a message containing `needle`.
    pub fn assert_error(&self, status: u16, needle: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.header("content-type").as_deref(), Some("application/json"), "{}", self.head);
        let v = self.json();
        assert_eq!(v["status"], status, "{v}");
        let msg = v["message"].as_str().unwrap_or_else(|| panic!("no message: {v}"));
        assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    }
}

/// The fixture files, copied byte for byte from the original documentation.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}
