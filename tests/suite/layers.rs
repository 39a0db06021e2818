//! The direction rules of `src/lib.rs` ("Direction rules"), checked on the `use` lines under
//! `src/`: a `use` that breaks one fails this test, naming the file and the line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules that serve requests: none may import tooling or commands.
const SERVING: &[&str] = &[
    "auth",
    "bundle",
    "config",
    "decision",
    "metrics",
    "model",
    "net",
    "ownership",
    "server",
    "stream",
    "tls",
    "upstream",
    "views",
    "watch",
];
/// Tooling and commands.
const TOOLING: &[&str] = &["cmd", "review", "sample"];
/// What the record filter may not know: its views, their consumers, tooling.
const ABOVE_STREAM: &[&str] = &["views", "server", "cmd", "review", "sample"];

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's module path: `src/stream/mod.rs` is `["stream"]`, `src/stream/scan.rs` is
/// `["stream", "scan"]`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix("src").unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The file a module path names: the longest prefix that is a file.
fn file_of(path: &[String]) -> Option<PathBuf> {
    for n in (1..=path.len()).rev() {
        let base = Path::new("src").join(path[..n].join("/"));
        for candidate in [base.with_extension("rs"), base.join("mod.rs")] {
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The `use` statements of a file's non-test code, whole (joined across lines), with their line.
fn uses(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if let Some((_, s)) = current.as_mut() {
            s.push_str(t);
        } else if let Some(rest) = t
            .strip_prefix("pub use ")
            .or(t.strip_prefix("pub(crate) use "))
            .or(t.strip_prefix("use "))
        {
            current = Some((i + 1, rest.to_owned()));
        }
        if current.as_ref().is_some_and(|(_, s)| s.ends_with(';')) {
            out.extend(current.take());
        }
    }
    out
}

/// The module path a `use` names (up to its first `{` or `::*`), made absolute.
fn target(module: &[String], path: &str) -> Option<Vec<String>> {
    let head = path
        .split('{')
        .next()
        .unwrap()
        .trim_end_matches(';')
        .trim_end_matches("::");
    let mut parts: Vec<&str> = head
        .split("::")
        .map(str::trim)
        .filter(|p| !p.is_empty() && *p != "*")
        .collect();
    if let Some(last) = parts.last_mut() {
        *last = last.split(" as ").next().unwrap().trim();
    }
    let mut base: Vec<String> = match parts.first() {
        Some(&"crate") => {
            parts.remove(0);
            Vec::new()
        }
        Some(&"super") => {
            // `super` of `a::b` (`a/b.rs` or `a/b/mod.rs`) is `a`.
            let mut base = module.to_vec();
            base.pop();
            parts.remove(0);
            while parts.first() == Some(&"super") {
                base.pop();
                parts.remove(0);
            }
            base
        }
        Some(&"self") => {
            parts.remove(0);
            module.to_vec()
        }
        _ => return None,
    };
    base.extend(parts.iter().map(|p| p.to_string()));
    Some(base)
}

#[test]
fn the_direction_rules_hold() {
    let mut all = Vec::new();
    files(Path::new("src"), &mut all);
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    let mut broken = Vec::new();
    for file in &all {
        let module = module_of(file);
        let text = std::fs::read_to_string(file).unwrap();
        let top = module.first().cloned().unwrap_or_default();
        for (line, u) in uses(&text) {
            let Some(path) = target(&module, &u) else { continue };
            let Some(to) = path.first() else { continue };
            let at = format!("{}:{line}: use {u}", file.display());
            if top == "stream" && ABOVE_STREAM.contains(&to.as_str()) {
                broken.push(format!(
                    "{at}\n    stream/ imports nothing from views, server, cmd, review or sample"
                ));
            }
            if SERVING.contains(&top.as_str()) && TOOLING.contains(&to.as_str()) {
                broken.push(format!("{at}\n    serving modules never import tooling or commands"));
            }
            if let Some(dest) = file_of(&path) {
                if &dest != file {
                    edges.entry(file.clone()).or_default().insert(dest);
                }
            }
        }
    }
    for (from, tos) in &edges {
        for to in tos {
            if from < to && edges.get(to).is_some_and(|back| back.contains(from)) {
                broken.push(format!(
                    "{} and {} import each other: no module imports one that imports it back",
                    from.display(),
                    to.display()
                ));
            }
        }
    }
    assert!(broken.is_empty(), "direction rules broken:\n{}", broken.join("\n"));
}
