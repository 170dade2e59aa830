//! The agent crate's layers, checked from its source: every top-level module of
//! `agent/src` sits in one layer of [`LAYERS`], a module imports (`crate::…`) only modules of
//! its own layer or below, and no import cycle joins top-level modules. The same table is in
//! docs/ARCHITECTURE.md ("Layers"), and the test checks the two agree.
//!
//! Test code (`#[cfg(test)]` items, `tests.rs` files) and comments are not imports: a test
//! may reach up to build a config, the product may not.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom. A module may use its own layer and the layers below it.
const LAYERS: &[(&str, &[&str])] = &[
    ("entry", &["cli"]),
    ("wiring", &["runtime"]),
    ("configuration", &["config"]),
    ("remote control", &["api", "gameday", "status"]),
    ("evidence", &["posture"]),
    ("drills", &["drill"]),
    ("backups", &["backup"]),
    ("telemetry", &["telemetry"]),
    ("sources", &["collectors", "faults"]),
    (
        "shared",
        &[
            "agent_client",
            "outcome",
            "state_file",
            "stop",
            "timefmt",
            "yaml",
        ],
    ),
];

fn agent_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `text` without comments and without `#[cfg(test)]` items (the attribute and the item
/// it guards, up to its matching closing brace or semicolon).
fn product_code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        if t.starts_with("#[cfg(test)]") {
            // Skip the guarded item: count braces until they balance after the first `{`,
            // or stop at a `;` before any brace (`mod tests;`, `use …;`).
            let mut depth = 0i32;
            let mut opened = false;
            for l in lines.by_ref() {
                for c in l.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                if (opened && depth <= 0) || (!opened && l.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        out.push_str(line.split("//").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

/// The top-level module a file of `agent/src` belongs to (`None` for lib.rs and main.rs).
fn top_module(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs");
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// `crate::X` targets named in `code`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `faultline_crate::`
        }
        let rest = &code[i + "crate::".len()..];
        let ident = |s: &str| -> String {
            s.trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        };
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::x, b}`: the first name of each top-level item of the list.
            let (mut depth, mut item_start) = (0usize, 0usize);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident(&group[item_start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&group[item_start..j]));
                        item_start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out
}

/// Imports between top-level modules: importer → (imported → a file that does it).
fn module_graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let root = agent_src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in files {
        let rel = f
            .strip_prefix(&root)
            .expect("under agent/src")
            .to_path_buf();
        if rel.file_name().is_some_and(|n| n == "tests.rs")
            || rel.components().any(|c| c.as_os_str() == "tests")
        {
            continue;
        }
        let Some(top) = top_module(&rel) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let entry = graph.entry(top.clone()).or_default();
        for target in crate_paths(&product_code(&text)) {
            if target != top {
                entry
                    .entry(target)
                    .or_insert_with(|| rel.display().to_string());
            }
        }
    }
    graph
}

fn layer_of() -> BTreeMap<&'static str, usize> {
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, mods))| mods.iter().map(move |m| (*m, i)))
        .collect()
}

/// Upward imports and unknown modules, as messages.
fn violations(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<String> {
    let layer = layer_of();
    let mut out = Vec::new();
    for (from, targets) in graph {
        let Some(&lf) = layer.get(from.as_str()) else {
            out.push(format!(
                "module `{from}` is in no layer: add it to LAYERS and docs/ARCHITECTURE.md"
            ));
            continue;
        };
        for (to, file) in targets {
            match layer.get(to.as_str()) {
                Some(&lt) if lt < lf => out.push(format!(
                    "{file}: `{from}` ({}) imports `{to}` ({}), a higher layer",
                    LAYERS[lf].0, LAYERS[lt].0
                )),
                Some(_) => {}
                None => out.push(format!("{file}: imports `{to}`, which is in no layer")),
            }
        }
    }
    out
}

/// One cycle among top-level modules, if any (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeMap<String, String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_owned(), 1);
        stack.push(n.to_owned());
        for next in graph.get(n).into_iter().flat_map(BTreeMap::keys) {
            match state.get(next.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == next).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if !state.contains_key(n)
            && let Some(c) = visit(n, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_module_of_the_agent_imports_a_higher_layer() {
    let v = violations(&module_graph());
    assert!(v.is_empty(), "layer violations:\n{}", v.join("\n"));
}

#[test]
fn no_import_cycle_joins_top_level_modules_of_the_agent() {
    if let Some(c) = find_cycle(&module_graph()) {
        panic!("import cycle: {}", c.join(" -> "));
    }
}

#[test]
fn every_layer_module_exists_in_the_agent_crate() {
    let root = agent_src();
    for (layer, mods) in LAYERS {
        for m in *mods {
            assert!(
                root.join(format!("{m}.rs")).exists() || root.join(m).join("mod.rs").exists(),
                "layer {layer} names `{m}`, which agent/src does not have"
            );
        }
    }
}

#[test]
fn the_layer_table_in_architecture_md_is_the_tests_table() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ARCHITECTURE.md"),
    )
    .expect("docs/ARCHITECTURE.md");
    // Rows of the table between the markers: `| layer | modules |`.
    let start = doc
        .find("<!-- layers:begin -->")
        .expect("layers:begin marker in ARCHITECTURE.md");
    let end = doc
        .find("<!-- layers:end -->")
        .expect("layers:end marker in ARCHITECTURE.md");
    let rows: Vec<(String, Vec<String>)> = doc[start..end]
        .lines()
        .filter(|l| l.starts_with('|') && !l.contains("---"))
        .skip(1)
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let mods = cells
                .get(1)?
                .split(',')
                .map(|m| m.trim().trim_matches('`').to_owned())
                .collect();
            Some((cells.first()?.to_string(), mods))
        })
        .collect();
    let ours: Vec<(String, Vec<String>)> = LAYERS
        .iter()
        .map(|(l, m)| ((*l).to_owned(), m.iter().map(|s| (*s).to_owned()).collect()))
        .collect();
    assert_eq!(
        rows, ours,
        "docs/ARCHITECTURE.md's layer table differs from LAYERS"
    );
}

#[test]
fn a_planted_upward_import_is_caught() {
    // The checker itself: a collector that imported the CLI would be reported.
    let mut graph = BTreeMap::new();
    graph.insert(
        "collectors".to_owned(),
        BTreeMap::from([("cli".to_owned(), "collectors/mod.rs".to_owned())]),
    );
    assert_eq!(violations(&graph).len(), 1);
    let mut cyc = graph.clone();
    cyc.insert(
        "cli".to_owned(),
        BTreeMap::from([("collectors".to_owned(), "cli/mod.rs".to_owned())]),
    );
    assert!(find_cycle(&cyc).is_some());
    // Test code and comments are not imports.
    let code = product_code(
        "// crate::cli::x\nuse crate::yaml;\n#[cfg(test)]\nmod tests {\n    use crate::cli;\n}\n",
    );
    assert_eq!(crate_paths(&code), BTreeSet::from(["yaml".to_owned()]));
    // A grouped import names every module it reaches.
    let grouped = crate_paths("use crate::{cli::Command, yaml::{self, line_of}, stop};\n");
    assert_eq!(
        grouped,
        BTreeSet::from(["cli".to_owned(), "yaml".to_owned(), "stop".to_owned()])
    );
}
