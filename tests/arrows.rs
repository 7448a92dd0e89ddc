//! The arrows of the house stay one-way: each room of `src/` may import
//! only the rooms below it (README "Architecture"), and no two files of
//! `src/` import each other through `crate::` paths, directly or around a
//! circle. Read from the source text (outside `#[cfg(test)]` modules), so
//! a new import that points up fails here before review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The rooms a room may import (besides itself). A room missing here may
/// import nothing of the crate.
fn allowed(room: &str) -> &'static [&'static str] {
    match room {
        // The pure rooms: no I/O of the crate, no async of the crate.
        "model" | "realize" | "auth" | "lock" | "shutdown" => &[],
        "store" => &["model"],
        "workload" => &["model"],
        "service" => &["model", "store", "workload"],
        "driver" => &["model", "service", "realize"],
        "graphql" => &["model", "service", "auth", "shutdown"],
        "http" => &["model", "service", "graphql", "auth", "shutdown"],
        "server" => &["model", "service", "graphql", "http", "auth", "shutdown"],
        // The binary: argument parsing and the client verbs.
        "main" | "serve_security" => &[
            "model", "store", "workload", "service", "driver", "graphql", "http", "server", "realize", "auth", "lock",
            "shutdown", "cli",
        ],
        // The CLI talks HTTP only: the model's plain types and the
        // workload path syntax are all it may share with the server.
        "cli" => &["model", "workload"],
        _ => &[],
    }
}

/// The text of a source file up to its `#[cfg(test)] mod …` (tests may
/// reach anywhere); a `tests.rs` file is all test.
fn non_test_text(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let lines: Vec<&str> = text.lines().collect();
    let cut = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "))
        .unwrap_or(lines.len());
    lines[..cut].join("\n")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/` (`src/http/guard.rs` is
/// `["http", "guard"]`, `src/realize/mod.rs` is `["realize"]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

/// Whether a file belongs to the binary (where `crate::` is `main.rs`, and
/// the library is `leviathan::`).
fn in_binary(module: &[String]) -> bool {
    matches!(module.first().map(String::as_str), Some("main") | Some("serve_security") | Some("cli"))
}

/// The paths a file names through the crate root: `crate::a::b::c` (or
/// `leviathan::a::b::c` in the binary), including those inside `use` groups
/// such as `use crate::{a::b, c};`.
fn crate_paths(text: &str, root: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let needle = format!("{root}::");
    let mut rest = text;
    while let Some(at) = rest.find(&needle) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + needle.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        expand(&[], rest, &mut out);
    }
    out.retain(|p| !p.is_empty());
    out
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// The paths a `use` tree names after `prefix`: `a::b` or `a::{b, c::{d}}`.
fn expand(prefix: &[String], s: &str, out: &mut Vec<Vec<String>>) {
    let s = s.trim_start();
    if let Some(group) = s.strip_prefix('{') {
        let end = matching_brace(group);
        for item in split_top(&group[..end]) {
            expand(prefix, item, out);
        }
        return;
    }
    let mut path = prefix.to_vec();
    path.extend(path_words(s));
    let head_len = s.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(s.len());
    if s[..head_len].ends_with("::") && s[head_len..].starts_with('{') {
        expand(&path, &s[head_len..], out);
    } else {
        out.push(path);
    }
}

/// `a::b::Thing` -> `["a", "b", "Thing"]`, stopping at the first
/// character that cannot continue a path.
fn path_words(s: &str) -> Vec<String> {
    let s = s.trim_start();
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(s.len());
    s[..end].split("::").filter(|w| !w.is_empty()).map(str::to_string).collect()
}

struct House {
    /// module path -> the module paths of the files it names.
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

impl House {
    fn read() -> House {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
        let mut edges = BTreeMap::new();
        for file in &files {
            let module = module_of(&src, file);
            let binary = in_binary(&module);
            let text = non_test_text(file);
            let mut to = BTreeSet::new();
            for root in if binary { vec!["crate", "leviathan"] } else { vec!["crate"] } {
                for mut path in crate_paths(&text, root) {
                    if binary && root == "crate" {
                        // In the binary, `crate::cli::…` is the binary's own.
                        path.insert(0, if path[0] == "cli" { String::new() } else { "main".into() });
                        path.retain(|w| !w.is_empty());
                    }
                    // The longest prefix of the path that is a file of `src/`.
                    while !path.is_empty() && !modules.contains(&path) {
                        path.pop();
                    }
                    if !path.is_empty() && path != module {
                        to.insert(path);
                    }
                }
            }
            edges.insert(module, to);
        }
        House { edges }
    }

    fn room(module: &[String]) -> String {
        module.first().cloned().unwrap_or_else(|| "lib".into())
    }
}

#[test]
fn rooms_import_only_the_rooms_below_them() {
    let house = House::read();
    assert!(house.edges.len() > 40, "the source tree was read: {} files", house.edges.len());
    let mut wrong = Vec::new();
    for (from, tos) in &house.edges {
        let room = House::room(from);
        if room == "lib" {
            continue;
        }
        for to in tos {
            let target = House::room(to);
            if target != room && !allowed(&room).contains(&target.as_str()) {
                wrong.push(format!(
                    "{} imports {} ({room} may import {:?})",
                    from.join("::"),
                    to.join("::"),
                    allowed(&room)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "arrows that point the wrong way:\n{}", wrong.join("\n"));
}

#[test]
fn no_file_imports_main() {
    let house = House::read();
    let main = vec!["main".to_string()];
    let importers: Vec<_> = house
        .edges
        .iter()
        .filter(|(from, tos)| House::room(from) != "cli" && tos.contains(&main))
        .map(|(from, _)| from.join("::"))
        .collect();
    assert!(importers.is_empty(), "modules importing main.rs: {importers:?}");
}

#[test]
fn no_import_circle_among_files() {
    let house = House::read();
    // Depth-first search for a back edge; reports the circle it closes.
    let mut state: BTreeMap<&Vec<String>, u8> = BTreeMap::new(); // 1 on the stack, 2 done
    let mut circles = Vec::new();
    fn visit<'a>(
        at: &'a Vec<String>,
        house: &'a House,
        state: &mut BTreeMap<&'a Vec<String>, u8>,
        stack: &mut Vec<&'a Vec<String>>,
        circles: &mut Vec<String>,
    ) {
        state.insert(at, 1);
        stack.push(at);
        for next in house.edges.get(at).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let from = stack.iter().position(|m| *m == next).unwrap_or(0);
                    let names: Vec<String> = stack[from..].iter().map(|m| m.join("::")).collect();
                    circles.push(format!("{} -> {}", names.join(" -> "), next.join("::")));
                }
                Some(_) => {}
                None => {
                    if let Some((key, _)) = house.edges.get_key_value(next) {
                        visit(key, house, state, stack, circles);
                    }
                }
            }
        }
        stack.pop();
        state.insert(at, 2);
    }
    for module in house.edges.keys() {
        if !state.contains_key(module) {
            let mut stack = Vec::new();
            visit(module, &house, &mut state, &mut stack, &mut circles);
        }
    }
    assert!(circles.is_empty(), "import circles among src/ files:\n{}", circles.join("\n"));
}

#[test]
fn the_reader_sees_real_imports() {
    // The checks above pass vacuously if the reader finds nothing: it must
    // see that the server assembles GraphQL and that the driver realizes.
    let house = House::read();
    let names = |m: &str| -> BTreeSet<String> {
        let key: Vec<String> = m.split("::").map(str::to_string).collect();
        house.edges.get(&key).map(|s| s.iter().map(|p| p.join("::")).collect()).unwrap_or_default()
    };
    assert!(names("server").iter().any(|m| m.starts_with("graphql")), "server: {:?}", names("server"));
    assert!(names("main").iter().any(|m| m.starts_with("server")), "main: {:?}", names("main"));
    let paths = crate_paths("use crate::{a::b, c::{d, e}};\nlet x = crate::f::g();", "crate");
    assert_eq!(paths, [vec!["a", "b"], vec!["c", "d"], vec!["c", "e"], vec!["f", "g"]]);
}
