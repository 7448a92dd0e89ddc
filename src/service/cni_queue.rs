//! The queue of deletions `leviathan-cni` could not hand to a server (CNI
//! DEL while the server was down must still succeed): one small JSON file
//! per deletion in a directory, drained when the server starts, before it
//! serves (Cilium keeps its deletion queue the same way).
//!
//! A file is `{"host": null, "id": "cni-…", "cen": "front", "runtimeId":
//! "…", "origin": "cni"}`, written under a temporary name and renamed into
//! place by the plugin, so a half-written file is never read. Invariants:
//! the queue is bounded ([`MAX_QUEUED`] files of at most [`MAX_FILE`]
//! bytes; the plugin answers "try again later" when it is full); a file is
//! removed only once its deletion is durable; a file that cannot be
//! understood is renamed `*.bad` with a warning naming it, never retried
//! forever and never guessed at.

use super::Service;
use crate::model::{Command, ErrorCode, Origin, RuntimeRef};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most deletions the queue holds.
pub const MAX_QUEUED: usize = 1024;
/// Largest queue file read, in bytes.
pub const MAX_FILE: u64 = 4096;
/// The default queue directory (the plugin's `deleteQueue`).
pub const DEFAULT_QUEUE_DIR: &str = "/var/lib/leviathan/cni-deletions";

/// One queued deletion, as the plugin writes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Queued {
    #[serde(default)]
    host: Option<String>,
    id: String,
    #[serde(default)]
    cen: Option<String>,
    runtime_id: String,
    #[serde(default = "cni")]
    origin: Origin,
}

fn cni() -> Origin {
    Origin::Cni
}

/// What a drain did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Deletions made durable (their files removed).
    pub done: usize,
    /// Files set aside as `*.bad`.
    pub bad: usize,
    /// Files left for the next start (the store failed).
    pub left: usize,
}

/// The queue's files, oldest name first, at most [`MAX_QUEUED`].
fn queued_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .take(MAX_QUEUED)
        .collect();
    files.sort();
    Ok(files)
}

fn read(path: &Path) -> Result<Queued, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Err(format!("not a regular file of at most {MAX_FILE} bytes"));
    }
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&text).map_err(|e| e.to_string())
}

fn set_aside(path: &Path, why: &str) {
    tracing::warn!(file = %path.display(), error = why, "a queued CNI deletion cannot be understood; set aside as .bad");
    let _ = std::fs::rename(path, path.with_extension("bad"));
}

/// Carries out the deletions queued in `dir` (nothing when it does not
/// exist), each as one `containerDetach`.
pub async fn drain(service: &Arc<Service>, dir: &Path) -> Drained {
    let mut out = Drained::default();
    let files = match queued_files(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the CNI deletion queue");
            return out;
        }
    };
    for (i, path) in files.iter().enumerate() {
        let q = match read(path) {
            Ok(q) => q,
            Err(why) => {
                set_aside(path, &why);
                out.bad += 1;
                continue;
            }
        };
        let host = q.host.unwrap_or_else(|| service.host_id().to_string());
        let runtime = RuntimeRef { origin: q.origin, id: q.runtime_id };
        let cmd = Command::ContainerDetach { host, id: q.id.clone(), cen: q.cen, runtime };
        match service.execute(cmd).await {
            Ok(_) => {
                tracing::info!(container = %q.id, "queued CNI deletion done");
                let _ = std::fs::remove_file(path);
                out.done += 1;
            }
            Err(e) if e.code == ErrorCode::BadRequest => {
                set_aside(path, &e.message);
                out.bad += 1;
            }
            Err(e) => {
                tracing::warn!(container = %q.id, error = %e.message, "queued CNI deletions left for the next start");
                out.left = files.len() - i;
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Command;

    #[tokio::test]
    async fn drains_good_files_sets_bad_ones_aside_and_leaves_others_alone() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.db");
        let s = Service::open(&state, "h1").unwrap();
        s.execute(Command::CenCreate { id: "front".into() }).await.unwrap();
        let runtime = RuntimeRef { origin: Origin::Cni, id: "abc".into() };
        let attach = |id: &str| Command::ContainerAttach {
            host: "h1".into(),
            id: id.into(),
            netns_path: "/run/netns/x".into(),
            netns: None,
            cen: "front".into(),
            ifname: "eth0".into(),
            runtime: runtime.clone(),
        };
        s.execute(attach("cni-a")).await.unwrap();
        s.execute(attach("cni-b")).await.unwrap();
        let q = dir.path().join("q");
        std::fs::create_dir(&q).unwrap();
        std::fs::write(q.join("1.json"), r#"{"id":"cni-a","cen":"front","runtimeId":"abc"}"#).unwrap();
        std::fs::write(q.join("2.json"), r#"{"id":"cni-b","runtimeId":"other"}"#).unwrap();
        std::fs::write(q.join("3.json"), "not json").unwrap();
        std::fs::write(q.join("4.tmp"), "half written").unwrap();
        let d = drain(&s, &q).await;
        assert_eq!(d, Drained { done: 2, bad: 1, left: 0 });
        // cni-a is gone; cni-b was attached under another runtime id and stays.
        assert!(s.read(|t| t.container(&crate::model::ContainerKey::new("h1", "cni-a")).is_none()));
        assert!(s.read(|t| t.container(&crate::model::ContainerKey::new("h1", "cni-b")).is_some()));
        let mut left: Vec<String> =
            std::fs::read_dir(&q).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["3.bad", "4.tmp"]);
        assert_eq!(drain(&s, &dir.path().join("missing")).await, Drained::default());
    }
}
