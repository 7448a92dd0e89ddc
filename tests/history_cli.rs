//! Time travel from the command line, end to end: the real binary as a
//! server (no kernel: `--no-realize`), the same binary as the client.
//!
//! - `export --at N` long after N is the file `export` wrote at N, and
//!   `apply --prune` of it restores revision N: its plan undoes exactly
//!   what `diff N` lists, and afterwards `diff N` finds no record that
//!   `apply` manages (ids, tags, namespaces, pools, CEN members, CIN CEN
//!   lists, made) different from revision N;
//! - `get --at` answers every kind as of N; `diff` prints the plan's marks
//!   and `-o json` the server's entries; `history` lists one object's
//!   changes newest first, with mutation, op and the fields changed;
//! - a revision no longer kept answers GONE naming the oldest kept, a
//!   future one BAD_REQUEST: each a clear error and a non-zero exit.

mod common;

use common::cli::{cli, ok};
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs a verb that must fail; returns its stderr.
fn fails(s: &Server, args: &[&str]) -> String {
    let out = cli(s, args);
    assert!(!out.ok, "leviathan {args:?} succeeded:\n{}", out.stdout);
    assert!(out.stdout.is_empty(), "leviathan {args:?} printed {:?} before failing", out.stdout);
    out.stderr
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The fields of a stored record that `apply` manages (what a topology
/// file says); `null` for an absent record.
fn managed(kind: &str, image: &Value) -> Value {
    if image.is_null() {
        return Value::Null;
    }
    let fields: &[&str] = match kind {
        "HOST" => &["id"],
        "CONTAINER" => &["host", "id", "tag", "netns_path", "pool"],
        "CEN" => &["id", "made"],
        "CIN" => &["id", "cens", "made"],
        "CPOOL" => &["id", "image", "start_with", "cins"],
        "MEMBERSHIP" => &["cen", "host", "container"],
        other => panic!("a diff entry of unknown kind {other}"),
    };
    fields.iter().map(|f| (f.to_string(), image[*f].clone())).collect::<serde_json::Map<_, _>>().into()
}

const AT_N: &str = "containers:
  - {id: web1, tag: web}
  - {id: lonely}
cens:
  - {id: front, members: [web1, web2]}
  - {id: back, members: [db1, web1]}
cins:
  - {id: public, cens: [front]}
pools:
  - {id: p, type: t, startWith: 2, cins: [{cin: public, defaultRoute: true}]}
";

const LATER: &str = "containers:
  - {id: web1, tag: edge}
cens:
  - {id: front, members: [web1, web2, web3]}
  - {id: extra, members: [x1]}
cins:
  - {id: private, cens: [extra]}
pools:
  - {id: p, type: t, startWith: 3, cins: [{cin: private}]}
";

#[tokio::test]
async fn export_at_then_apply_restores_the_revision_and_diff_and_history_say_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &["--token", "t1me"]);
    let at_n = write(dir.path(), "n.yaml", AT_N);
    ok(&s, &["apply", at_n.to_str().unwrap()]);
    let n = s.revision().await;
    let n_text = n.to_string();
    let n_s = n_text.as_str();
    let exported_at_n = ok(&s, &["export"]);
    let cens_at_n = ok(&s, &["get", "cens"]);
    let web1_at_n = ok(&s, &["get", "containers", "web1", "-o", "json"]);

    let later = write(dir.path(), "later.yaml", LATER);
    ok(&s, &["apply", later.to_str().unwrap(), "--prune"]);
    let m = s.revision().await;
    assert!(m > n);

    // The past, read long after: the same answers as then.
    assert_eq!(ok(&s, &["export", "--at", n_s]), exported_at_n);
    assert_eq!(ok(&s, &["get", "cens", "--at", n_s]), cens_at_n);
    assert_eq!(ok(&s, &["get", "containers", "web1", "-o", "json", "--at", n_s]), web1_at_n);
    assert_ne!(ok(&s, &["get", "cens"]), cens_at_n, "the present differs");
    let e = fails(&s, &["get", "cin", "private", "--at", n_s]);
    assert!(e.contains(&format!("no CIN 'private' at revision {n}")), "{e}");

    // What changed since N, with the plan's marks.
    let diff = ok(&s, &["diff", n_s]);
    assert!(diff.starts_with(&format!("Changes from revision {n} to {m}:\n")), "{diff}");
    for line in [
        "  ~ container web1: tag web -> edge",
        "  + container x1\n",
        // (The diff names pool containers too: they moved with their pool.)
        "  + cen extra: p-1, p-2, p-3, x1\n",
        "  ~ cen front: +web3 -p-1 -p-2\n",
        "  ~ container p-1: default_route public -> (none)\n",
        "  + cin private over extra\n",
        "  ~ pool p: 3 x t over private\n",
        "  - cin public\n",
        "  - cen back\n",
        "  - container db1\n",
        "  - container lonely\n",
    ] {
        assert!(diff.contains(line), "no {line:?} in\n{diff}");
    }
    assert_eq!(ok(&s, &["diff", n_s, n_s]), format!("No changes from revision {n} to {n}.\n"));
    // -o json: the server's entries, in its order, every one of them.
    let entries: Vec<Value> = serde_json::from_str(&ok(&s, &["diff", n_s, "-o", "json"])).unwrap();
    let direct =
        s.gql("query($n: Int!) { diff(from: $n) { kind id hostId container op before after } }", json!({"n": n})).await;
    assert_eq!(Value::Array(entries.clone()), direct["diff"]);
    let back = entries.iter().find(|e| e["kind"] == "CEN" && e["id"] == "back").expect("back in the diff");
    assert_eq!(
        (back["op"].as_str(), back["before"]["id"].as_str(), &back["after"]),
        (Some("DELETE"), Some("back"), &Value::Null)
    );
    let summary = diff.lines().last().unwrap();
    let count = |op: &str| entries.iter().filter(|e| e["op"] == op).count();
    assert_eq!(
        summary,
        format!("{} created, {} changed, {} deleted.", count("CREATE"), count("UPDATE"), count("DELETE"))
    );

    // Restoring N: the plan undoes what the diff lists.
    let exported = write(dir.path(), "exported.yaml", &ok(&s, &["export", "--at", n_s]));
    let plan = ok(&s, &["apply", exported.to_str().unwrap(), "--prune"]);
    for line in [
        "  ~ container web1: tag edge -> web",
        "  + container lonely\n",
        "  + cen back: db1, web1\n",
        "  ~ cen front: -web3\n",
        "  + cin public over front\n",
        "  ~ pool p: 2 x t over public (default route)\n",
        "  - cin private\n",
        "  - cen extra\n",
        "  - container x1\n",
    ] {
        assert!(plan.contains(line), "no {line:?} in\n{plan}");
    }
    // ... and afterwards nothing apply manages differs from revision N.
    let after: Vec<Value> = serde_json::from_str(&ok(&s, &["diff", n_s, "-o", "json"])).unwrap();
    let differing: Vec<&Value> = after
        .iter()
        .filter(|e| {
            let kind = e["kind"].as_str().unwrap();
            managed(kind, &e["before"]) != managed(kind, &e["after"])
        })
        .collect();
    assert!(differing.is_empty(), "after restoring revision {n}, these differ from it: {differing:#?}");
    assert_eq!(ok(&s, &["export"]), exported_at_n);

    // One object's history, newest first.
    let text = ok(&s, &["history", "container", "web1"]);
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows[0].starts_with("REVISION  TIME (UTC)"), "{text}");
    assert!(rows[1].contains("containerSetTag  UPDATE  tag edge -> web"), "{text}");
    assert!(rows[2].contains("containerSetTag  UPDATE  tag web -> edge"), "{text}");
    assert!(rows.last().unwrap().contains(" CREATE "), "{text}");
    let json: Vec<Value> = serde_json::from_str(&ok(&s, &["history", "container", "web1", "-o", "json"])).unwrap();
    assert_eq!(json.len(), rows.len() - 1);
    let revs: Vec<i64> = json.iter().map(|e| e["revision"].as_i64().unwrap()).collect();
    assert!(revs.windows(2).all(|w| w[0] > w[1]), "not newest first: {revs:?}");
    assert_eq!(json[0]["after"]["tag"], "web");
    assert_eq!(json[1]["before"]["tag"], "web");
    assert_eq!(json[1]["after"]["tag"], "edge");
    for (row, e) in rows[1..].iter().zip(&json) {
        assert!(row.trim_start().starts_with(&format!("{} ", e["revision"])), "{row} / {e}");
    }
    let one: Vec<Value> =
        serde_json::from_str(&ok(&s, &["history", "container", "web1", "--limit", "1", "-o", "json"])).unwrap();
    assert_eq!(one, json[..1]);
    let cen = ok(&s, &["history", "cen", "back"]);
    let ops: Vec<&str> = cen.lines().skip(1).map(|l| l.split_whitespace().nth(4).unwrap()).collect();
    assert_eq!(ops, ["CREATE", "DELETE", "CREATE"], "{cen}");
    let member = ok(&s, &["history", "membership", "front", "--container", "web3", "-o", "json"]);
    let ops: Vec<Value> =
        serde_json::from_str::<Vec<Value>>(&member).unwrap().iter().map(|e| e["op"].clone()).collect();
    // Joined, lost its address when the CIN went, left.
    assert_eq!(ops, [json!("DELETE"), json!("UPDATE"), json!("CREATE")]);
    assert_eq!(ok(&s, &["history", "cen", "nothing"]), "No kept change touched cen nothing.\n");
    let e = fails(&s, &["history", "membership", "front"]);
    assert!(e.contains("--container"), "{e}");

    // A reader that went away (`| head`) ends the verb quietly, no panic.
    let mut child = Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(["diff", "0", "--server", &s.url("")])
        .env("LEVIATHAN_TOKEN", "t1me")
        .env_remove("LEVIATHAN_SERVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_revision_not_kept_is_gone_and_a_future_one_a_bad_request() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &["--token", "g0ne", "--keep-changes", "3"]);
    for i in 0..8 {
        let q = format!("mutation {{ containerCreate(input: {{id: \"c{i}\"}}) {{ revision }} }}");
        s.gql(&q, json!({})).await;
    }
    let kept = "{ keptRevisions { oldest newest } }";
    until("the change log to keep 3 changes", || async {
        s.gql(kept, json!({})).await["keptRevisions"]["oldest"].as_i64().unwrap() > 1
    })
    .await;
    let k = s.gql(kept, json!({})).await;
    let (oldest, newest) =
        (k["keptRevisions"]["oldest"].as_i64().unwrap(), k["keptRevisions"]["newest"].as_i64().unwrap());
    assert_eq!(newest, s.revision().await);
    let gone = (oldest - 1).to_string();
    for args in [
        vec!["get", "containers", "--at", &gone],
        vec!["export", "--at", &gone],
        vec!["diff", &gone],
        vec!["diff", "1", "2"],
    ] {
        let e = fails(&s, &args);
        assert!(e.contains("(GONE)") && e.contains(&oldest.to_string()), "leviathan {args:?}: {e}");
    }
    let future = (newest + 1).to_string();
    let oldest_s = oldest.to_string();
    for args in
        [vec!["get", "cens", "--at", &future], vec!["export", "--at", &future], vec!["diff", &oldest_s, &future]]
    {
        let e = fails(&s, &args);
        assert!(e.contains("(BAD_REQUEST)"), "leviathan {args:?}: {e}");
    }
    let e = fails(&s, &["diff", "5", "3"]);
    assert!(e.contains("must not be after"), "{e}");
    // The oldest kept revision itself answers.
    let at_oldest = ok(&s, &["get", "containers", "--at", &oldest.to_string(), "-o", "json"]);
    let ids: Vec<Value> =
        serde_json::from_str::<Vec<Value>>(&at_oldest).unwrap().iter().map(|c| c["id"].clone()).collect();
    assert_eq!(ids.len() as i64, oldest, "one container per revision: {ids:?}");
}
