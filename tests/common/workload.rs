//! Real workloads for the tests: a process in a network namespace of its
//! own, looked at and driven from inside with `nsenter`.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process in a network namespace of its own (`unshare --net --fork
/// --kill-child sleep infinity`), killed when dropped.
pub struct Workload(Child);

impl Workload {
    pub fn start() -> Workload {
        let child = Command::new("unshare")
            .args(["--net", "--fork", "--kill-child", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let w = Workload(child);
        // Wait until it is in its own namespace (bounded).
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(w.ns()).map(|m| m.ino()).unwrap_or(own) == own {
            assert!(Instant::now() < deadline, "unshare did not enter a namespace of its own");
            std::thread::sleep(Duration::from_millis(10));
        }
        w
    }
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
    pub fn ns(&self) -> String {
        format!("/proc/{}/ns/net", self.pid())
    }
    pub fn inode(&self) -> u64 {
        std::fs::metadata(self.ns()).unwrap().ino()
    }
    /// The interfaces in its namespace.
    pub fn links(&self) -> BTreeSet<String> {
        let out =
            Command::new("nsenter").arg(format!("--net={}", self.ns())).args(["ip", "-j", "link", "show"]).output();
        let v: Value = out.ok().and_then(|o| serde_json::from_slice(&o.stdout).ok()).unwrap_or(json!([]));
        v.as_array().into_iter().flatten().filter_map(|l| l["ifname"].as_str().map(str::to_string)).collect()
    }
    pub fn ip(&self, args: &[&str]) -> Value {
        let out = Command::new("nsenter").arg(format!("--net={}", self.ns())).args(["ip", "-j"]).args(args).output();
        out.ok().and_then(|o| serde_json::from_slice(&o.stdout).ok()).unwrap_or(json!([]))
    }
    pub fn run(&self, args: &[&str]) {
        let st = Command::new("nsenter").arg(format!("--net={}", self.ns())).args(args).status().unwrap();
        assert!(st.success(), "{args:?} failed");
    }
    pub fn ifindex(&self, name: &str) -> Option<i64> {
        self.ip(&["link", "show"]).as_array()?.iter().find(|l| l["ifname"] == name)?["ifindex"].as_i64()
    }
    pub fn has_addr(&self, name: &str, addr: &str) -> bool {
        self.ip(&["addr", "show"])
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["ifname"] == name)
            .any(|l| l["addr_info"].as_array().into_iter().flatten().any(|a| a["local"] == addr))
    }
    pub fn ping(&self, addr: &str) -> bool {
        Command::new("nsenter")
            .arg(format!("--net={}", self.ns()))
            .args(["ping", "-c", "1", "-W", "2", "-q", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A container as the tests look at it: status, binding and interfaces.
pub async fn container(s: &super::Server, id: &str) -> Value {
    let q = "query($id: ID!) { container(id: $id) { status statusMessage netnsPath netns { path } interfaces { name address } } }";
    s.gql(q, json!({"id": id})).await["container"].clone()
}

/// Polls until the container shows `status`; the bound only catches a hang.
pub async fn wait_status(s: &super::Server, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = container(s, id).await;
        if c["status"] == status {
            return c;
        }
        assert!(Instant::now() < deadline, "container {id} never became {status}: {c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
