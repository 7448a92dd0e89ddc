//! docs/serve.md is the reference of `leviathan serve`'s options: every
//! long flag `serve --help` lists is in its tables and every flag of its
//! tables is in `--help`, and where `--help` shows a default the table
//! shows the same (a flag without one shows none, e.g. "off" or "none",
//! never a value in backticks).

use std::collections::BTreeMap;
use std::path::Path;

/// `--flag` -> its default (None when it shows none), from `serve --help`.
fn help_flags() -> BTreeMap<String, Option<String>> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(["serve", "--help"])
        .output()
        .expect("run leviathan serve --help");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        // An option starts a line indented by 2 to 6 columns (`-h, --help`, `-V, --version`
        // or `      --listen <LISTEN>`); its help text is indented more.
        let opt = match t.as_bytes() {
            [b'-', c, b',', b' ', ..] if c.is_ascii_alphabetic() => &t[4..],
            _ => t,
        };
        if (2..=6).contains(&indent) && opt.starts_with("--") {
            let name: String = opt.chars().take_while(|c| !c.is_whitespace()).collect();
            flags.insert(name.clone(), None);
            current = Some(name);
        } else if let (Some(name), Some(rest)) = (&current, t.strip_prefix("[default: ")) {
            let d = rest.split(']').next().unwrap_or("").to_string();
            flags.insert(name.clone(), Some(d));
        }
    }
    flags
}

/// `--flag` -> the default cell, from the tables of docs/serve.md.
fn doc_flags() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/serve.md");
    let md = std::fs::read_to_string(&path).unwrap();
    let mut flags = BTreeMap::new();
    for line in md.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 3, "a row is | flag | default | meaning |: {line}");
        let name: String = cells[0].trim_matches('`').chars().take_while(|c| !c.is_whitespace()).collect();
        assert!(flags.insert(name.clone(), cells[1].to_string()).is_none(), "{name} appears twice in docs/serve.md");
    }
    flags
}

#[test]
fn every_serve_option_is_in_docs_serve_md_with_its_default() {
    let help = help_flags();
    let doc = doc_flags();
    assert!(help.len() > 30, "parsed only {} options from serve --help: {help:?}", help.len());
    let missing: Vec<&String> = help.keys().filter(|f| !doc.contains_key(*f)).collect();
    assert!(missing.is_empty(), "serve --help lists options docs/serve.md does not: {missing:?}");
    let extra: Vec<&String> = doc.keys().filter(|f| !help.contains_key(*f)).collect();
    assert!(extra.is_empty(), "docs/serve.md lists options serve --help does not: {extra:?}");
    for (flag, default) in &help {
        let cell = &doc[flag];
        match default {
            Some(d) => assert!(
                cell.starts_with(&format!("`{d}`")),
                "{flag}: serve --help says the default is {d}, docs/serve.md says {cell}"
            ),
            None => assert!(!cell.starts_with('`'), "{flag}: serve --help shows no default, docs/serve.md says {cell}"),
        }
    }
}
