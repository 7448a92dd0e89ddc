//! Every GraphQL block of the README pastes into GraphiQL as is: it parses,
//! and a block with several operations names each of them, and every
//! query and mutation passes the server's validation (run against an
//! empty server, where a lookup answers null and a mutation may answer
//! NOT_FOUND, but never BAD_REQUEST).

mod common;

use common::*;
use serde_json::json;

fn graphql_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```graphql") => current = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[tokio::test]
async fn every_graphql_block_of_the_readme_parses_and_validates() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks = graphql_blocks(&readme);
    assert!(blocks.len() >= 3, "found only {} graphql blocks", blocks.len());
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &[]);
    for b in &blocks {
        let doc = async_graphql::parser::parse_query(b).unwrap_or_else(|e| panic!("{e}\n{b}"));
        let names: Vec<Option<String>> = doc.operations.iter().map(|(n, _)| n.map(|n| n.to_string())).collect();
        if names.len() > 1 {
            assert!(names.iter().all(Option::is_some), "several operations, not all named:\n{b}");
        }
        for name in names {
            if b.contains("subscription") {
                continue;
            }
            let (_, body) = s.post(&json!({"query": b, "operationName": name})).await;
            let code = body["errors"][0]["extensions"]["code"].as_str().unwrap_or("");
            assert_ne!(code, "BAD_REQUEST", "{name:?} does not validate: {body}\n{b}");
        }
    }
}
