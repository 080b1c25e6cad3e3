//! SPEC §1 "Layers": imports only point down. This test reads `src/` and fails when
//! - a module names a module of a higher layer (`crate::x`, every item of a grouped
//!   `crate::{a, b::c}` import, or `super::x` reaching the crate root);
//! - modules of one layer import each other in a cycle (peers may use each other, but a
//!   cycle between services means neither is below the other);
//! - an HTTP notion (`ApiError`, `StatusCode`, `hyper`, `AppState`) appears below `ops`.
//!
//! One layer per top-level module: a folder's files all share its layer, with no exemptions
//! (pure helpers that lower layers need live in the leaves: `time`, `rates`, `fixing`, …).
//! Test modules (`#[cfg(test)]` to the end of the file) are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layer of a top-level module: 0 wiring, 1 interfaces, 2 operations, 3 services,
/// 4 adapters, 5 pure leaves.
fn layer(top: &str) -> Option<u8> {
    const TABLE: &[(&str, u8)] = &[
        ("main", 0),
        ("cli", 0),
        ("app", 0),
        ("demo", 0),
        ("logging", 0),
        ("shutdown", 0),
        ("http", 1),
        ("control", 1),
        ("ops", 2),
        ("sync", 3),
        ("scheduler", 3),
        ("archive", 3),
        ("alerts", 3),
        ("connections", 3),
        ("store", 4),
        ("boa", 4),
        ("qbo", 4),
        ("crypto", 4),
        ("notify", 4),
        ("metrics", 4),
        ("outbound", 4),
        ("cidr", 5),
        ("config", 5),
        ("currency", 5),
        ("fixing", 5),
        ("locks", 5),
        ("rates", 5),
        ("time", 5),
    ];
    TABLE.iter().find(|(p, _)| *p == top).map(|(_, l)| *l)
}

/// Names that belong to the HTTP edge: nothing below `ops` may use them.
const HTTP_NOTIONS: &[&str] = &["ApiError", "StatusCode", "hyper", "AppState"];

/// The module path of a source file (`src/sync/plan.rs` → `["sync", "plan"]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The code of a file as the checks read it: up to its test module, without comments and
/// string literals (a message that mentions `hyper` is not a use of it).
fn code_of(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let mut in_str = false;
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if in_str {
                if c == '"' && prev != '\\' {
                    in_str = false;
                }
                prev = if prev == '\\' && c == '\\' { ' ' } else { c };
                continue;
            }
            if c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' {
                in_str = true;
                prev = ' ';
                continue;
            }
            out.push(c);
        }
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The top-level modules one file's code names: `crate::x…`, each item of a (nested)
/// `crate::{…}` group, and `super::…` paths that climb to the crate root.
fn imported_tops(module: &[String], code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let text = code;
    // crate::
    let mut from = 0;
    while let Some(i) = text[from..].find("crate::") {
        let at = from + i;
        from = at + "crate::".len();
        if at > 0 && text[..at].chars().next_back().is_some_and(is_ident) {
            continue; // e.g. `boa_exchange_crate::` or `$crate::`
        }
        path_tops(&text[from..], &mut out);
    }
    // super::super::…::x from a module `depth` deep reaches the root when it climbs
    // `depth` times (a folder's mod.rs is the folder itself).
    let mut from = 0;
    while let Some(i) = text[from..].find("super::") {
        let at = from + i;
        if at > 0
            && text[..at]
                .chars()
                .next_back()
                .is_some_and(|c| is_ident(c) || c == ':')
        {
            from = at + 1;
            continue; // counted with the first `super::` of the path
        }
        let mut rest = &text[at..];
        let mut climbs = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = r;
        }
        from = at + 1;
        if climbs < module.len() {
            continue; // still inside the module's own top-level folder
        }
        path_tops(rest, &mut out);
    }
    out
}

/// The top-level modules a path names, read from just after its `crate::` (or the
/// `super::`s that reach the root): one name, or every item of a `{…}` group.
fn path_tops(rest: &str, out: &mut BTreeSet<String>) {
    if let Some(group) = rest.strip_prefix('{') {
        out.extend(group_tops(group));
    } else {
        let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
}

/// The first segment of every item of a `{…}` group (the text after its `{`).
fn group_tops(group: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start_of_item = true;
    let mut current = String::new();
    for c in group.chars() {
        match c {
            '{' => {
                if depth == 0 && !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                depth += 1;
                start_of_item = false;
            }
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                start_of_item = true;
            }
            c if depth == 0 && start_of_item && is_ident(c) => current.push(c),
            c if c.is_whitespace() && current.is_empty() => {}
            _ if depth == 0 && start_of_item => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                start_of_item = false;
            }
            _ => {}
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out.retain(|s| s != "self");
    out
}

/// Whether `word` appears in `code` as a whole identifier (or path segment).
fn names(code: &str, word: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut from = 0;
        while let Some(i) = line[from..].find(word) {
            let at = from + i;
            let before = line[..at].chars().next_back();
            let after = line[at + word.len()..].chars().next();
            if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
                lines.push(n + 1);
                break;
            }
            from = at + word.len();
        }
    }
    lines
}

/// Everything wrong with one file: upward imports and HTTP notions below `ops`. Also
/// returns the same-layer modules it uses (for the cycle check).
fn check_file(module: &[String], text: &str) -> (Vec<String>, BTreeSet<String>) {
    let name = module.join("::");
    let Some(own) = module.first().and_then(|t| layer(t)) else {
        return (
            vec![format!(
                "{name}: module with no layer (add it to the table)"
            )],
            BTreeSet::new(),
        );
    };
    let code = code_of(text);
    let mut problems = Vec::new();
    let mut peers = BTreeSet::new();
    for top in imported_tops(module, &code) {
        if Some(top.as_str()) == module.first().map(String::as_str) {
            continue;
        }
        match layer(&top) {
            Some(l) if l < own => {
                problems.push(format!("{name}: imports crate::{top} (a higher layer)"))
            }
            Some(l) if l == own => {
                peers.insert(top);
            }
            Some(_) => {}
            None => problems.push(format!("{name}: imports crate::{top}, which has no layer")),
        }
    }
    if own > 2 {
        for notion in HTTP_NOTIONS {
            for line in names(&code, notion) {
                problems.push(format!("{name}:{line}: names {notion} below ops"));
            }
        }
    }
    (problems, peers)
}

/// Cycles in the graph of same-layer imports, each as `a -> b -> a`.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut c = path[i..].to_vec();
            c.push(node.to_string());
            out.push(c.join(" -> "));
            return;
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, path, done, out);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, edges, &mut Vec::new(), &mut done, &mut out);
    }
    out
}

/// Every problem of a tree given as (module path, text) pairs.
fn check_tree(files: &[(Vec<String>, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in files {
        if module.is_empty() {
            continue; // lib.rs declares the modules
        }
        let (p, peers) = check_file(module, text);
        problems.extend(p);
        edges.entry(module[0].clone()).or_default().extend(peers);
    }
    for c in cycles(&edges) {
        problems.push(format!("import cycle between peers: {c}"));
    }
    problems
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn imports_only_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let files: Vec<(Vec<String>, String)> = paths
        .iter()
        .map(|f| {
            (
                module_of(&src, f),
                std::fs::read_to_string(f).expect("read"),
            )
        })
        .collect();
    let problems = check_tree(&files);
    assert!(problems.is_empty(), "layering:\n{}", problems.join("\n"));
    assert!(
        files.len() > 40,
        "the tree was read ({} files)",
        files.len()
    );
}

fn m(path: &str) -> Vec<String> {
    path.split("::").map(str::to_string).collect()
}

#[test]
fn the_check_catches_an_upward_import() {
    let (p, _) = check_file(
        &m("sync::engine"),
        "use crate::app::run;\nfn f() { crate::ops::x(); }\n",
    );
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(check_file(&m("ops::sync"), "use crate::sync::SyncEngine;")
        .0
        .is_empty());
    assert!(
        check_file(
            &m("store"),
            "use crate::currency::Currency;\n#[cfg(test)]\nuse crate::ops::x;"
        )
        .0
        .is_empty(),
        "test modules are not read"
    );
    assert!(check_file(
        &m("store"),
        "// crate::ops is above us\nlet s = \"crate::ops\";"
    )
    .0
    .is_empty());
}

#[test]
fn the_check_reads_grouped_imports() {
    // The old check saw an empty first segment here and let it pass.
    let (p, _) = check_file(&m("sync::engine"), "use crate::{ops, http::routes};");
    assert_eq!(p.len(), 2, "{p:?}");
    let (p, _) = check_file(
        &m("qbo::tokens"),
        "use crate::{\n    currency::Currency,\n    store::{Store, records::Company},\n    sync::{self, Error},\n};",
    );
    assert_eq!(
        p,
        vec!["qbo::tokens: imports crate::sync (a higher layer)"],
        "{p:?}"
    );
    assert_eq!(
        group_tops("a::{b, c}, d, self, e::f};"),
        vec!["a", "d", "e"]
    );
}

#[test]
fn the_check_catches_super_paths_that_climb_to_the_root() {
    let (p, _) = check_file(&m("alerts"), "use super::ops::ApiThing;");
    assert_eq!(p.len(), 1, "{p:?}");
    let (p, _) = check_file(&m("sync::engine"), "use super::super::http::x;");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(check_file(&m("sync::engine"), "use super::plan::Step;")
        .0
        .is_empty());
}

#[test]
fn the_check_catches_a_cycle_between_services() {
    let files = vec![
        (
            m("sync::engine"),
            "use crate::archive::Archive;".to_string(),
        ),
        (m("archive"), "use crate::alerts::Alerts;".to_string()),
        (m("alerts"), "use crate::sync::Outcome;".to_string()),
        (
            m("scheduler::runner"),
            "use crate::sync::SyncEngine;".to_string(),
        ),
    ];
    let p = check_tree(&files);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("alerts -> sync -> archive -> alerts"),
        "{p:?}"
    );
    // Without the closing edge there is no cycle.
    assert!(check_tree(&files[..2]).is_empty());
}

#[test]
fn the_check_catches_http_notions_below_ops() {
    for bad in [
        "fn f() -> hyper::StatusCode { todo!() }",
        "use http::StatusCode;",
        "fn f(e: ApiError) {}",
        "fn f(s: &AppState) {}",
    ] {
        let (p, _) = check_file(&m("sync::engine"), bad);
        assert!(!p.is_empty(), "{bad}");
    }
    assert!(check_file(
        &m("ops::error"),
        "use hyper::StatusCode; fn f(e: ApiError) {}"
    )
    .0
    .is_empty());
    assert!(
        check_file(&m("sync::engine"), "let status_code = 1; // hyper")
            .0
            .is_empty()
    );
}

#[test]
fn a_module_with_no_layer_is_reported() {
    let (p, _) = check_file(&m("misc"), "fn f() {}");
    assert_eq!(p.len(), 1, "{p:?}");
}
