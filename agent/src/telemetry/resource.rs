//! Detects the agent's OpenTelemetry resource: who is reporting, from which host.
//!
//! Attributes, later sources overriding earlier ones: detected (`service.*`, `host.*`, `os.*`,
//! `k8s.node.name` from `NODE_NAME`), then `OTEL_RESOURCE_ATTRIBUTES`, then the config's
//! `resource.attributes`. Host facts are read under the configured roots so an agent in a
//! container describes the host, not its own image.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use faultline_exporters::model::{Attributes, Resource};

use crate::collectors::Roots;

/// Extra resource attributes (added after the detected ones, overriding them).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceConfig {
    /// `key: value` pairs.
    pub attributes: BTreeMap<String, String>,
}

/// Inputs that are not files: environment and config.
#[derive(Clone, Debug, Default)]
pub struct ResourceInputs {
    /// `NODE_NAME` (Kubernetes downward API).
    pub node_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`.
    pub otel_resource_attributes: Option<String>,
    /// `resource.attributes` from the config file.
    pub configured: BTreeMap<String, String>,
}

impl ResourceInputs {
    /// Reads the environment variables; `configured` comes from the config.
    pub fn from_env(configured: BTreeMap<String, String>) -> Self {
        Self {
            node_name: std::env::var("NODE_NAME").ok().filter(|s| !s.is_empty()),
            otel_resource_attributes: std::env::var("OTEL_RESOURCE_ATTRIBUTES").ok(),
            configured,
        }
    }
}

/// Builds the host resource.
pub fn detect(roots: &Roots, inputs: &ResourceInputs) -> Resource {
    let mut map: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| {
        if let Some(slot) = map.iter_mut().find(|(key, _)| key == k) {
            slot.1 = v;
        } else {
            map.push((k.to_owned(), v));
        }
    };
    set("service.name", "faultline".into());
    set("service.version", env!("CARGO_PKG_VERSION").into());
    let machine_id = read_trimmed(&roots.host_path("/etc/machine-id"))
        .or_else(|| read_trimmed(&roots.host_path("/var/lib/dbus/machine-id")));
    let host_name = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    set(
        "service.instance.id",
        match &machine_id {
            Some(id) => uuid_from_hex(id).unwrap_or_else(|| id.clone()),
            None => host_name.clone(),
        },
    );
    if !host_name.is_empty() {
        set("host.name", host_name);
    }
    if let Some(id) = machine_id {
        set("host.id", id);
    }
    if let Some(arch) = host_arch(std::env::consts::ARCH) {
        set("host.arch", arch.into());
    }
    set("os.type", "linux".into());
    set("os.description", os_description(roots));
    if let Some(node) = &inputs.node_name {
        set("k8s.node.name", node.clone());
    }
    if let Some(env) = &inputs.otel_resource_attributes {
        for (k, v) in parse_otel_resource_attributes(env) {
            set(&k, v);
        }
    }
    for (k, v) in &inputs.configured {
        set(k, v.clone());
    }
    let mut attributes = Attributes::new();
    for (k, v) in map {
        attributes.push(k, v);
    }
    Resource { attributes }
}

fn read_trimmed(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Semantic-conventions `host.arch` for a Rust target arch.
pub fn host_arch(rust_arch: &str) -> Option<&'static str> {
    Some(match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm32",
        "x86" => "x86",
        "powerpc64" => "ppc64",
        "powerpc" => "ppc32",
        "s390x" => "s390x",
        _ => return None,
    })
}

/// `PRETTY_NAME` from the host's os-release plus the kernel release.
fn os_description(roots: &Roots) -> String {
    let pretty = std::fs::read_to_string(roots.host_path("/etc/os-release"))
        .or_else(|_| std::fs::read_to_string(roots.host_path("/usr/lib/os-release")))
        .ok()
        .and_then(|t| parse_os_release_pretty_name(&t))
        .unwrap_or_else(|| "Linux".to_owned());
    match read_trimmed(&roots.proc("sys/kernel/osrelease")) {
        Some(kernel) => format!("{pretty} (Linux {kernel})"),
        None => pretty,
    }
}

/// `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"` → `Debian GNU/Linux 12 (bookworm)`.
pub fn parse_os_release_pretty_name(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_owned())
        .filter(|v| !v.is_empty())
}

/// `k1=v1,k2=v2` with percent-encoded values, per the OpenTelemetry SDK specification.
/// Malformed pairs are skipped.
pub fn parse_otel_resource_attributes(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_owned(), percent_decode(v.trim())))
        })
        .collect()
}

/// Decodes `%XX` escapes; invalid escapes are kept as written.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) =
                u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A 32-hex-digit machine ID formatted as a UUID (8-4-4-4-12).
fn uuid_from_hex(id: &str) -> Option<String> {
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| {
        format!(
            "{}-{}-{}-{}-{}",
            &id[0..8],
            &id[8..12],
            &id[12..16],
            &id[16..20],
            &id[20..32]
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otel_resource_attributes_are_parsed_and_decoded() {
        let v = parse_otel_resource_attributes("a=1, team=sre%20core,bad,=x,url=http%3A%2F%2Fh");
        assert_eq!(
            v,
            vec![
                ("a".into(), "1".into()),
                ("team".into(), "sre core".into()),
                ("url".into(), "http://h".into())
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn later_sources_override_and_node_name_is_used() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/os-release"),
            "NAME=X\nPRETTY_NAME=\"Test OS 1\"\n",
        )
        .unwrap();
        let roots = Roots {
            proc: dir.path().join("proc"),
            sys: dir.path().join("sys"),
            rootfs: dir.path().to_path_buf(),
        };
        let inputs = ResourceInputs {
            node_name: Some("node-a".into()),
            otel_resource_attributes: Some("service.name=override,env=dev".into()),
            configured: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
        };
        let r = detect(&roots, &inputs);
        let get = |k: &str| r.attributes.get(k).map(|v| v.to_text().into_owned());
        assert_eq!(get("service.name").as_deref(), Some("override"));
        assert_eq!(get("env").as_deref(), Some("prod"));
        assert_eq!(get("k8s.node.name").as_deref(), Some("node-a"));
        assert_eq!(
            get("host.id").as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(
            get("service.instance.id").as_deref(),
            Some("01234567-89ab-cdef-0123-456789abcdef")
        );
        assert_eq!(get("os.description").as_deref(), Some("Test OS 1"));
        assert_eq!(get("os.type").as_deref(), Some("linux"));
    }
}
