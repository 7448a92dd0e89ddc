//! The schema contract: the checked-in SDL is the code's, it documents
//! itself (graphql-schema-linter finds nothing), and the explorer examples
//! run.

mod common;

use leviathan::service::Service;
use serde_json::Value;
use std::path::Path;

#[test]
fn checked_in_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/schema.graphql");
    let on_disk = std::fs::read_to_string(&path).expect("schema/schema.graphql exists");
    let current = leviathan::graphql::sdl();
    assert!(
        on_disk == current,
        "schema/schema.graphql is stale: run `cargo run -- schema > schema/schema.graphql` and commit it"
    );
}

/// `graphql-schema-linter` (npm, pinned in `tests/node/package.json`) with
/// the rules of `tests/node/.graphql-schema-linterrc` reports nothing on
/// `schema/schema.graphql`: every type, field, argument, input field and
/// enum value has a description.
#[test]
fn schema_passes_graphql_schema_linter() {
    let node_dir = common::node_modules(&["graphql-schema-linter"]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The linter keeps only the rules it knows from a `rules` list, silently:
    // make sure every rule named in the configuration exists.
    let rc = std::fs::read_to_string(node_dir.join(".graphql-schema-linterrc")).unwrap();
    let rules: Vec<&str> = rc.lines().filter_map(|l| l.trim().strip_prefix("- ")).collect();
    assert!(rules.len() >= 10, "too few rules in .graphql-schema-linterrc: {rules:?}");
    for rule in &rules {
        let file = node_dir
            .join("node_modules/graphql-schema-linter/lib/rules")
            .join(format!("{}.js", rule.replace('-', "_")));
        assert!(file.exists(), "graphql-schema-linter has no rule '{rule}' (named in .graphql-schema-linterrc)");
    }
    let out = std::process::Command::new("node")
        .arg(node_dir.join("node_modules/graphql-schema-linter/lib/cli.js"))
        .args(["--format", "json", "--config-directory"])
        .arg(&node_dir)
        .arg(root.join("schema/schema.graphql"))
        .output()
        .expect("node is needed for this test (Node 20+)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("graphql-schema-linter printed no JSON ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    let findings: Vec<String> = report["errors"]
        .as_array()
        .expect("an errors list")
        .iter()
        .map(|e| format!("{} ({}) at line {}", e["message"], e["rule"], e["location"]["line"]))
        .collect();
    assert!(findings.is_empty(), "graphql-schema-linter: {} findings:\n{}", findings.len(), findings.join("\n"));
    assert!(out.status.success(), "graphql-schema-linter failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn examples_run() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::open(&dir.path().join("s.db"), "host1").unwrap();
    let schema = leviathan::graphql::schema(service);
    let mut files: Vec<_> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "graphql"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "examples missing: {files:?}");
    let mut answers = Vec::new();
    for f in &files {
        let resp = schema.execute(std::fs::read_to_string(f).unwrap()).await;
        assert!(resp.errors.is_empty(), "{}: {:?}", f.display(), resp.errors);
        answers.push(serde_json::to_value(&resp.data).unwrap());
    }
    let cens: &Value = &answers[2]["cens"];
    let wiring: Vec<(&str, &str)> = cens
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["wiringType"].as_str().unwrap()))
        .collect();
    assert_eq!(
        wiring,
        [("cen1", "BRIDGE"), ("cen2", "BRIDGE"), ("cen3", "BRIDGE"), ("cen4", "WIRE"), ("cen5", "WIRE")]
    );
    let cin = &answers[3]["cin"];
    assert_eq!(cin["subnet"], "10.10.0.0/16");
    assert_eq!(cin["members"][0]["address"], "10.10.0.10");
    assert_eq!(cin["members"][0]["prefixLength"], 16);
}
