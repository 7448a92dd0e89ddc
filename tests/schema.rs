//! The schema contract: the checked-in SDL is the code's, and the explorer
//! examples run.

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
