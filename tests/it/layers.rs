//! SPEC §1 "Layers": imports only point down. This test reads `src/` and fails on any
//! `crate::…` path (outside test modules) that names a module of a higher layer, and on
//! `ApiError` anywhere but `ops`, `http` and `control`, so the old import cycle cannot
//! come back.

use std::path::{Path, PathBuf};

/// Layer of a module path (`sync::plan`, `ops`, …): 0 wiring, 1 interfaces, 2 operations,
/// 3 services, 4 adapters, 5 pure leaves. The longest matching prefix wins.
fn layer(module: &str) -> Option<u8> {
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
        ("boa::model", 5),
        ("boa::parse", 5),
        ("boa::import", 5),
        ("sync::rates", 5),
        ("sync::plan", 5),
        ("scheduler::time", 5),
        ("scheduler::clock", 5),
    ];
    TABLE
        .iter()
        .filter(|(p, _)| module == *p || module.starts_with(&format!("{p}::")))
        .max_by_key(|(p, _)| p.len())
        .map(|(_, l)| *l)
}

/// The module path of a source file (`src/sync/plan.rs` → `sync::plan`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// Upward imports and misplaced `ApiError`s in one file's text (test modules excluded).
fn violations(module: &str, text: &str) -> Vec<String> {
    let Some(own) = layer(module) else {
        return vec![];
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        if line.trim_start().starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let target = path.trim_end_matches(':');
            // `crate::{a, b}` lists are checked by their first segment's own imports.
            if let Some(l) = layer(target) {
                if l < own {
                    out.push(format!(
                        "{module}:{}: imports crate::{target} (a higher layer)",
                        n + 1
                    ));
                }
            }
        }
        let api_error_allowed = own <= 2;
        if !api_error_allowed && line.contains("ApiError") {
            out.push(format!("{module}:{}: names ApiError below ops", n + 1));
        }
    }
    out
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
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut all = Vec::new();
    let mut unknown = Vec::new();
    for f in &files {
        let module = module_of(&src, f);
        if module.is_empty() {
            continue; // lib.rs declares the modules
        }
        if layer(&module).is_none() {
            unknown.push(module.clone());
        }
        let text = std::fs::read_to_string(f).expect("read");
        all.extend(violations(&module, &text));
    }
    assert!(
        unknown.is_empty(),
        "modules with no layer (add them to the table): {unknown:?}"
    );
    assert!(all.is_empty(), "upward imports:\n{}", all.join("\n"));
    assert!(
        files.len() > 40,
        "the tree was read ({} files)",
        files.len()
    );
}

#[test]
fn the_check_catches_an_upward_import() {
    let bad = "use crate::ops::ApiError;\nfn f() { crate::app::run(); }\n";
    let v = violations("sync::engine", bad);
    assert_eq!(v.len(), 3, "{v:?}");
    assert!(violations("ops::sync", "use crate::sync::SyncEngine;").is_empty());
    assert!(violations("store", "#[cfg(test)]\nuse crate::ops::x;").is_empty());
    assert_eq!(layer("scheduler::clock"), Some(5));
    assert_eq!(layer("scheduler::runner"), Some(3));
}
