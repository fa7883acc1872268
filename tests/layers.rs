//! The crate's modules form layers that import one way: a module may use
//! its own layer and the layers below it, never one above. This test reads
//! every `crate::<module>` path in `src/` (in `use` lines and inline paths
//! alike) and fails on one that runs up the order, naming file, line and
//! both layers. ARCHITECTURE.md shows the same order.
//!
//! A new top-level module must be given its place here, or the test fails.

use std::path::{Path, PathBuf};

/// Bottom first. Modules on one line share a layer.
const LAYERS: &[&[&str]] = &[
    &["domain"],
    &["arcgis"],
    &["config"],
    &["tls", "server"],
    &["store"],
    &["routing"],
    &["filter"],
    &["sinks"],
    &["enrich"],
    &["metrics"],
    &["dispatch"],
    &["ingress"],
    &["admin"],
    &["app"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/store/sqlite/mod.rs` ->
/// `store`), or `None` for the crate root files.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// Every `crate::<name>` in `text`, with its line number, skipping
/// comments (doc links name modules of any layer).
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `$crate::` in macros and `hookrelay_crate::`-like words are not ours.
            let before = rest[..i].chars().last();
            if !name.is_empty()
                && !matches!(before, Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '$')
            {
                out.push((n + 1, name));
            }
            rest = after;
        }
    }
    out
}

/// Imports that run up the order, as readable lines.
fn upward_imports(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for file in &files {
        let Some(module) = module_of(src, file) else {
            continue;
        };
        let Some(own) = layer_of(&module) else {
            bad.push(format!(
                "{}: module `{module}` has no layer in tests/layers.rs",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, target) in crate_paths(&text) {
            let Some(theirs) = layer_of(&target) else {
                bad.push(format!(
                    "{}:{line}: `crate::{target}` is no module with a layer",
                    file.display()
                ));
                continue;
            };
            if theirs > own {
                bad.push(format!(
                    "{}:{line}: `{module}` (layer {own}) imports `crate::{target}` (layer {theirs}), which is above it",
                    file.display()
                ));
            }
        }
    }
    bad
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = upward_imports(&src);
    assert!(
        bad.is_empty(),
        "{} import(s) run up the layers:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn every_layer_names_a_module_that_exists() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(
            src.join(format!("{module}.rs")).exists() || src.join(module).join("mod.rs").exists(),
            "{module} is in the layer list but not in src/"
        );
    }
}

#[test]
fn the_checker_sees_an_upward_import() {
    // The check itself, on a tree made for it: `store` importing `admin`.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("store")).unwrap();
    std::fs::write(
        src.join("store/mod.rs"),
        "use crate::domain::event::Event;\n// crate::admin in a comment is fine\nfn f() { crate::admin::thing(); }\n",
    )
    .unwrap();
    std::fs::write(src.join("lib.rs"), "use crate::cli::main;\n").unwrap();
    let bad = upward_imports(src);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("store/mod.rs:3"), "{bad:?}");
    assert!(bad[0].contains("crate::admin"), "{bad:?}");
}
