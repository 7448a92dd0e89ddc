//! The deletion queue: a DEL the server cannot take now (it is down, or
//! its store is) is written here as one small JSON file and succeeds; the
//! server carries the queue out when it starts (`--cni-queue`).
//!
//! Invariants: at most [`MAX_QUEUED`] files (a full queue answers "try
//! again later", never drops a deletion); a file is written under a
//! temporary name, synced and renamed into place, so the server never
//! reads half of one; one file per container and CEN (a repeated DEL
//! rewrites it).

use serde_json::json;
use std::io::Write;
use std::path::Path;

/// Most deletions queued (the server reads as many).
pub const MAX_QUEUED: usize = 1024;

/// One queued deletion.
pub struct Deletion<'a> {
    pub id: &'a str,
    pub cen: Option<&'a str>,
    pub runtime_id: &'a str,
    /// `cni` or `netavark`.
    pub origin: &'a str,
}

fn file_name(d: &Deletion<'_>) -> String {
    // FNV-1a over the parts: a stable name without the characters of ids.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in d.id.bytes().chain([0]).chain(d.cen.unwrap_or("").bytes()).chain([0]).chain(d.origin.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("del-{h:016x}.json")
}

/// Queues a deletion in `dir` (created if missing).
pub fn push(dir: &Path, d: &Deletion<'_>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating the deletion queue {}: {e}", dir.display()))?;
    let name = file_name(d);
    let path = dir.join(&name);
    if !path.exists() {
        let queued = std::fs::read_dir(dir)
            .map_err(|e| format!("reading the deletion queue {}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count();
        if queued >= MAX_QUEUED {
            return Err(format!(
                "the deletion queue {} is full ({MAX_QUEUED} deletions wait for the server to start)",
                dir.display()
            ));
        }
    }
    let body = json!({"id": d.id, "cen": d.cen, "runtimeId": d.runtime_id, "origin": d.origin}).to_string();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(body.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("writing to the deletion queue {}: {e}", dir.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_deletion_and_bounded() {
        let dir = std::env::temp_dir().join(format!("lev-cni-queue-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = Deletion { id: "cni-a", cen: Some("front"), runtime_id: "a1", origin: "cni" };
        push(&dir, &d).unwrap();
        push(&dir, &d).unwrap();
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let text = std::fs::read_to_string(dir.join(&files[0])).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["runtimeId"], "a1");
        for i in 1..MAX_QUEUED {
            std::fs::write(dir.join(format!("f{i}.json")), "{}").unwrap();
        }
        let other = Deletion { id: "cni-b", cen: Some("front"), runtime_id: "b1", origin: "cni" };
        assert!(push(&dir, &other).unwrap_err().contains("full"));
        push(&dir, &d).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
