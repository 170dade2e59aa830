//! docs/DRILLS.md against the code: every field the scenario accepts — found by asking serde
//! itself, not from a list kept by hand — and every field the examples use is documented;
//! the example in [`super::scenario`]'s doc comment still parses.
//!
//! How the fields are found: every struct of the scenario rejects unknown fields, and serde
//! names the ones it expects in that error. So a scenario holding only `{__probe__: 1}` at
//! a path lists the fields there; each is tried in turn as a mapping and as a list of
//! mappings to find the structs below it. An internally tagged enum (a fault's `kind`)
//! answers "missing field `kind`"; an unknown tag then lists its variants, and each variant
//! is explored the same way. A unit enum (`strategy`) lists its values for an unknown one.
//!
//! How they are written in DRILLS.md: as a backticked dotted path with `[]` for list items
//! (`recovery.actions[].restore_backup.source`), a probe's fields as `probe.<field>` (they
//! are the same in `steady_state` and `abort_when`); a fault kind's fields in its table row,
//! which starts with ``| `<kind>` |``, each backticked; unit enums' values backticked.

use std::collections::{BTreeMap, BTreeSet};

use super::scenario::Scenario;

const PROBE: &str = "__probe__";

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/DRILLS.md"))
        .expect("docs/DRILLS.md is readable")
}

/// One step of a path: a key, or "an item of this list".
#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Key(String),
    Item,
}

/// A scenario holding `leaf` (flow YAML) at `path`.
fn at(path: &[Seg], leaf: &str) -> String {
    path.iter()
        .rev()
        .fold(leaf.to_owned(), |inner, seg| match seg {
            Seg::Key(k) => format!("{{{k}: {inner}}}"),
            Seg::Item => format!("[{inner}]"),
        })
}

/// The error serde gives for `text` as a scenario (`None`: it parsed).
fn serde_error(text: &str) -> Option<String> {
    serde_yaml_ng::from_str::<Scenario>(text)
        .err()
        .map(|e| e.to_string())
}

/// The backticked names after `marker` in `message` (serde's "expected one of `a`, `b`").
fn expected_after(message: &str, marker: &str) -> Option<Vec<String>> {
    let rest = &message[message.find(marker)? + marker.len()..];
    let rest = rest.split(" at line").next().unwrap_or(rest);
    let names: Vec<String> = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    (!names.is_empty()).then_some(names)
}

fn unknown_field(message: &str) -> Option<Vec<String>> {
    expected_after(message, &format!("unknown field `{PROBE}`, expected"))
}

fn unknown_variant(message: &str) -> Option<Vec<String>> {
    expected_after(message, &format!("unknown variant `{PROBE}`, expected"))
}

/// What the code accepts: dotted paths of fields, fault kinds with their fields, and unit
/// enums' values by path.
#[derive(Debug, Default)]
struct Accepted {
    fields: BTreeSet<String>,
    kinds: BTreeMap<String, BTreeSet<String>>,
    values: BTreeMap<String, Vec<String>>,
}

fn dotted(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Item => s.push_str("[]"),
        }
    }
    // A probe is the same wherever it stands.
    for list in ["steady_state[]", "abort_when[]"] {
        if let Some(rest) = s.strip_prefix(list) {
            return format!("probe{rest}");
        }
    }
    s
}

/// Explores the struct at `path` (whose fields serde listed as `fields`).
fn explore_struct(path: &[Seg], fields: &[String], acc: &mut Accepted, depth: usize) {
    for f in fields {
        let mut p = path.to_vec();
        p.push(Seg::Key(f.clone()));
        acc.fields.insert(dotted(&p));
        if depth < 8 {
            explore_value(&p, acc, depth + 1);
        }
    }
}

/// What is at `path`: a struct, a list of structs, a tagged enum, a unit enum, or a leaf.
fn explore_value(path: &[Seg], acc: &mut Accepted, depth: usize) {
    let probe = format!("{{{PROBE}: 1}}");
    let as_map = serde_error(&at(path, &probe)).unwrap_or_default();
    if let Some(fields) = unknown_field(&as_map) {
        return explore_struct(path, &fields, acc, depth);
    }
    if let Some(tag) = expected_after(&as_map, "missing field").and_then(|t| t.first().cloned()) {
        let kinds = serde_error(&at(path, &format!("{{{tag}: {PROBE}}}")))
            .as_deref()
            .and_then(unknown_variant);
        if let Some(kinds) = kinds {
            for kind in kinds {
                let leaf = format!("{{{tag}: {kind}, {PROBE}: 1}}");
                let fields = serde_error(&at(path, &leaf))
                    .as_deref()
                    .and_then(unknown_field)
                    .unwrap_or_default();
                acc.kinds
                    .insert(kind, fields.into_iter().filter(|f| *f != tag).collect());
            }
            return;
        }
    }
    let mut item = path.to_vec();
    item.push(Seg::Item);
    let as_list = serde_error(&at(&item, &probe)).unwrap_or_default();
    if let Some(fields) = unknown_field(&as_list) {
        return explore_struct(&item, &fields, acc, depth);
    }
    if let Some(values) = serde_error(&at(path, PROBE))
        .as_deref()
        .and_then(unknown_variant)
    {
        acc.values.insert(dotted(path), values);
    }
}

fn accepted() -> Accepted {
    let mut acc = Accepted::default();
    let top = serde_error(&format!("{{{PROBE}: 1}}")).unwrap_or_default();
    let fields = unknown_field(&top).expect("the scenario rejects unknown fields");
    explore_struct(&[], &fields, &mut acc, 0);
    acc
}

#[test]
fn the_explorer_finds_what_serde_accepts() {
    let acc = accepted();
    for f in [
        "name",
        "probe.http.url",
        "probe.metric.attributes",
        "recovery.actions[].restore_backup.target",
        "canary.writer.http.method",
        "faults[].at",
    ] {
        assert!(acc.fields.contains(f), "{f} not found in {:?}", acc.fields);
    }
    assert!(acc.kinds["process-kill"].contains("cmdline"), "{acc:?}");
    assert!(acc.kinds["latency"].contains("upstream"), "{acc:?}");
    assert_eq!(
        acc.values["recovery.strategy"],
        vec!["self-heal".to_owned(), "actions".to_owned()]
    );
    assert_eq!(
        acc.kinds.len(),
        faultline_chaos::FaultSpec::KINDS.len(),
        "every fault kind is explored"
    );
}

#[test]
fn every_field_the_scenario_accepts_is_in_docs_drills_md() {
    let acc = accepted();
    let doc = doc();
    let mut missing: Vec<String> = acc
        .fields
        .iter()
        .filter(|f| !doc.contains(&format!("`{f}`")))
        .map(|f| format!("field `{f}`"))
        .collect();
    for (kind, fields) in &acc.kinds {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{kind}` |")));
        match row {
            None => missing.push(format!("fault kind `{kind}` (a row `| `{kind}` | …`)")),
            Some(row) => missing.extend(
                fields
                    .iter()
                    .filter(|f| !row.contains(&format!("`{f}`")))
                    .map(|f| format!("field `{f}` of fault kind `{kind}`")),
            ),
        }
    }
    for (path, values) in &acc.values {
        missing.extend(
            values
                .iter()
                .filter(|v| !doc.contains(&format!("`{v}`")))
                .map(|v| format!("value `{v}` of `{path}`")),
        );
    }
    assert!(
        missing.is_empty(),
        "docs/DRILLS.md does not document:\n{}",
        missing.join("\n")
    );
}

/// Every key path of a YAML value, written as [`dotted`] writes them; a fault's fields as
/// `fault:<kind>.<field>`. Free-form maps (a metric probe's `attributes`) are not entered:
/// only paths with accepted fields below them are.
fn keys(
    v: &serde_yaml_ng::Value,
    path: &mut Vec<Seg>,
    accepted: &BTreeSet<String>,
    out: &mut BTreeSet<String>,
) {
    match v {
        serde_yaml_ng::Value::Mapping(m) => {
            let kind = m
                .get("kind")
                .and_then(|k| k.as_str())
                .filter(|_| path.last() == Some(&Seg::Key("fault".into())));
            for (k, child) in m {
                let Some(k) = k.as_str() else { continue };
                match kind {
                    Some(kind) => {
                        out.insert(format!("fault:{kind}.{k}"));
                    }
                    None => {
                        path.push(Seg::Key(k.to_owned()));
                        let here = dotted(path);
                        out.insert(here.clone());
                        // Below it, or below its items (a list of probes is `probe`).
                        path.push(Seg::Item);
                        let items = dotted(path);
                        path.pop();
                        let has_fields = [&here, &items].iter().any(|p| {
                            accepted.iter().any(|f| {
                                f.strip_prefix(p.as_str()).is_some_and(|rest| {
                                    rest.starts_with('.') || rest.starts_with("[]")
                                })
                            })
                        });
                        if has_fields || here.ends_with(".fault") {
                            keys(child, path, accepted, out);
                        }
                        path.pop();
                    }
                }
            }
        }
        serde_yaml_ng::Value::Sequence(items) => {
            path.push(Seg::Item);
            for i in items {
                keys(i, path, accepted, out);
            }
            path.pop();
        }
        _ => {}
    }
}

#[test]
fn every_field_the_example_drills_use_is_documented_and_accepted() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/drills");
    let acc = accepted();
    let doc = doc();
    let mut used = BTreeSet::new();
    let mut files = 0;
    for e in std::fs::read_dir(dir).expect("examples/drills/").flatten() {
        let text = std::fs::read_to_string(e.path()).expect("an example");
        // The examples' `${VAR:-default}`s, with their defaults.
        let text = crate::yaml::substitute_env(&text, "example", &|_| None).expect("defaults");
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
        keys(&v, &mut Vec::new(), &acc.fields, &mut used);
        files += 1;
    }
    assert!(files >= 4, "examples/drills/ has {files} files");
    assert!(
        used.contains("probe.http.max_latency"),
        "the walk reaches the probes: {used:?}"
    );
    let undocumented: Vec<&String> = used
        .iter()
        .filter(|k| match k.strip_prefix("fault:") {
            Some(kf) => {
                let (kind, field) = kf.split_once('.').unwrap_or((kf, ""));
                field != "kind" && !acc.kinds.get(kind).is_some_and(|f| f.contains(field))
            }
            None => !acc.fields.contains(k.as_str()) || !doc.contains(&format!("`{k}`")),
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "the examples use fields the scenario does not accept or DRILLS.md does not name: {undocumented:?}"
    );
}

#[test]
fn the_scenario_module_doc_points_to_drills_md_and_its_example_parses() {
    let source = include_str!("scenario.rs");
    assert!(
        source.contains("docs/DRILLS.md"),
        "scenario.rs's doc must point to docs/DRILLS.md"
    );
    let example: String = source
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .skip_while(|l| l.trim() != "```yaml")
        .skip(1)
        .take_while(|l| l.trim() != "```")
        .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
        .collect();
    assert!(example.contains("steady_state:"), "{example}");
    if let Err(e) = serde_yaml_ng::from_str::<Scenario>(&example) {
        panic!("scenario.rs's example no longer parses: {e}\n{example}");
    }
}
