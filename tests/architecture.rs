//! Data flows one way between the crate's top-level modules (ARCHITECTURE.md): no module
//! reaches, directly or through others, back into one that reaches it. A `crate::m` path that
//! leaves a module (code or doc link) is an edge, and so is a `crate::Name` in code that the
//! crate root re-exports from a module (`pub use monitor::Monitor` makes `crate::Monitor` an
//! edge to `monitor`; a doc link to it is not, since a lower part's docs may point the reader at
//! the entry point that builds it); unit tests may reach anywhere. Within a folder module, its
//! files depend one way too (`super::file`, `crate::module::file`), `mod.rs` aside: it is the
//! folder's face, declaring and re-exporting the others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The identifiers that follow `prefix` in `text`.
fn paths_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .filter(|(at, _)| {
            // A whole path segment: `crate::x`, not `mycrate::x`.
            !text[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

/// The names the crate root re-exports (`pub use m::{A, B};`, `pub use m::A;`), with the
/// module each comes from.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.trim_end_matches(';').split_once("::") else {
            continue;
        };
        let names = names.trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            out.insert(name.to_owned(), module.to_owned());
        }
    }
    out
}

/// A source file's code, its unit tests left out.
fn code_of(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

fn module_edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let reexported = reexports(&std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs"));
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("src") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if name == "lib" {
            continue;
        }
        let mut files = Vec::new();
        if path.is_dir() {
            rust_files(&path, &mut files);
        } else {
            files.push(path.clone());
        }
        modules.insert(name, files);
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, files) in &modules {
        let out = edges.entry(module.clone()).or_default();
        for file in files {
            let text = std::fs::read_to_string(file).expect("readable source");
            let code = code_of(&text);
            let mut targets = paths_after(code, "crate::");
            // From src/<m>.rs, `super::x` is the crate root's `x`.
            if file.parent() == Some(src.as_path()) {
                targets.extend(paths_after(code, "super::"));
            }
            for target in targets {
                if target != module && modules.contains_key(target) {
                    out.insert(target.to_owned());
                }
            }
            // A re-exported name used in code (not a doc link: the docs of a lower part may
            // point the reader at the entry point that builds it).
            let code_lines: String = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for name in paths_after(&code_lines, "crate::") {
                if let Some(target) = reexported.get(name).filter(|t| **t != *module) {
                    out.insert(target.clone());
                }
            }
        }
    }
    edges
}

/// The files of the folder module `src/<module>/` (its `mod.rs` aside), each with the sibling
/// files its code uses.
fn file_edges(module: &str) -> BTreeMap<String, BTreeSet<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(module);
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let stem = |p: &Path| p.file_stem().expect("name").to_string_lossy().into_owned();
    let siblings: BTreeSet<String> = files
        .iter()
        .filter(|p| p.parent() == Some(dir.as_path()))
        .map(|p| stem(p))
        .filter(|s| s != "mod")
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in &siblings {
        let text = std::fs::read_to_string(dir.join(format!("{name}.rs"))).expect("source");
        let code = code_of(&text);
        let mut targets = paths_after(code, "super::");
        targets.extend(paths_after(code, &format!("crate::{module}::")));
        let out = edges.entry(name.clone()).or_default();
        for target in targets {
            if target != name && siblings.contains(target) {
                out.insert(target.to_owned());
            }
        }
    }
    edges
}

/// The folder modules under `src/`.
fn folder_modules() -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&src).expect("src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.push(
                path.file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    out
}

/// Each module from which a path leads back to itself, with that path.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn reaches(
        edges: &BTreeMap<String, BTreeSet<String>>,
        from: &str,
        to: &str,
        seen: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> bool {
        for next in edges.get(from).into_iter().flatten() {
            path.push(next.clone());
            if next == to || (seen.insert(next.clone()) && reaches(edges, next, to, seen, path)) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut found = Vec::new();
    for module in edges.keys() {
        let mut path = vec![module.clone()];
        if reaches(edges, module, module, &mut BTreeSet::new(), &mut path) {
            found.push(path.join(" -> "));
        }
    }
    found
}

#[test]
fn modules_form_no_cycle() {
    let edges = module_edges();
    assert!(edges["stream"].contains("classify"), "{edges:?}");
    let found = cycles(&edges);
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}

#[test]
fn files_of_a_folder_form_no_cycle() {
    let folders = folder_modules();
    assert!(folders.len() >= 8, "{folders:?}");
    let stream = file_edges("stream");
    assert!(stream["meter"].contains("context"), "{stream:?}");
    assert!(stream["service"].contains("start"), "{stream:?}");
    for folder in folders {
        let found = cycles(&file_edges(&folder));
        assert!(
            found.is_empty(),
            "file cycles in src/{folder}:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn the_check_sees_a_cycle() {
    // A name the root re-exports leads to its module.
    let names = reexports("pub use monitor::{ConfigError, Monitor};\npub use labels::UserId;");
    assert_eq!(names["Monitor"], "monitor");
    assert_eq!(names["UserId"], "labels");
    // The scanner: a `crate::` path is an edge, a longer identifier is not.
    assert_eq!(
        paths_after("use crate::window::Ring; mycrate::x", "crate::"),
        ["window"]
    );
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", &["b"][..]),
        ("b", &["c"][..]),
        ("c", &["a"][..]),
        ("d", &["a"][..]),
    ]
    .into_iter()
    .map(|(m, to)| (m.to_owned(), to.iter().map(|t| t.to_string()).collect()))
    .collect();
    assert_eq!(
        cycles(&graph),
        ["a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"]
    );
}
