//! Helpers for the deployment tests (`tests/deploy_*.rs`): reading the shipped manifests,
//! the Python tools that check them, the image `deploy/docker/build-local.sh` builds, and a
//! container guard for that image.
//!
//! YAML is read through Python's PyYAML (a dependency of `kubernetes-validate`, which the
//! tests need anyway) and handed over as JSON, so the tests crate needs no YAML parser of its
//! own. [`tool_available`] decides between running and skipping like the other peers: absent
//! tools skip with a printed reason, except under CI (`CI` non-empty and not `false`/`0`), where they fail.
//!
//! Not here: assertions; those live in `tests/deploy_*.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::agent::{profile_dir, workspace_root};

/// The image tag the tests build with `deploy/docker/build-local.sh`.
pub const AGENT_IMAGE: &str = "faultline:deploy-test";

/// `deploy/` in the workspace.
pub fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}

/// Whether `program --version`-style `probe` succeeds. When it does not: prints why `test`
/// is skipped and returns `false`, or panics under CI (.ci/run installs every tool).
pub fn tool_available(test: &str, what: &str, probe: &mut Command) -> bool {
    let reason = match probe.stdin(Stdio::null()).output() {
        Ok(o) if o.status.success() => return true,
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        Err(e) => format!("cannot run {probe:?}: {e}"),
    };
    if crate::in_ci() {
        panic!("{test}: {what} is required on CI but not usable: {reason}");
    }
    eprintln!("SKIPPED {test}: {what} is not available ({reason})");
    false
}

/// Whether `python3` can import every module in `modules`; see [`tool_available`].
pub fn python_modules_available(test: &str, modules: &[&str]) -> bool {
    tool_available(
        test,
        &format!("python3 with {}", modules.join(", ")),
        Command::new("python3")
            .arg("-c")
            .arg(format!("import {}", modules.join(", "))),
    )
}

/// Every YAML document in `path` (empty ones dropped), as JSON values.
pub fn yaml_docs(path: &Path) -> Vec<serde_json::Value> {
    let json = crate::python3(
        "import json, sys, yaml\n\
         docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
         print(json.dumps(docs))",
        &[&path.to_string_lossy()],
        None,
    );
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `yaml_text` with `patch` merged in (objects merged key by key, everything else replaced),
/// as YAML again.
pub fn patch_yaml(yaml_text: &str, patch: &serde_json::Value) -> String {
    crate::python3(
        "import json, sys, yaml\n\
         def merge(b, e):\n\
         \x20   for k, v in e.items():\n\
         \x20       if isinstance(v, dict) and isinstance(b.get(k), dict):\n\
         \x20           merge(b[k], v)\n\
         \x20       else:\n\
         \x20           b[k] = v\n\
         \x20   return b\n\
         print(yaml.safe_dump(merge(yaml.safe_load(sys.stdin.read()), json.loads(sys.argv[1]))))",
        &[&patch.to_string()],
        Some(yaml_text),
    )
}

/// The first document of `kind` among `docs`.
///
/// # Panics
/// When there is none.
pub fn find_kind<'a>(docs: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} among the documents"))
}

/// Renders the Helm chart with `deploy/helm/render.py` into `out` (with `values` as JSON
/// overrides) and returns the rendered files.
///
/// # Panics
/// When rendering or `helm lint --strict` fails.
pub fn render_chart(out: &Path, values: &serde_json::Value) -> Vec<PathBuf> {
    let output = Command::new("python3")
        .arg(deploy_dir().join("helm/render.py"))
        .arg(out)
        .arg("--set-json")
        .arg(values.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("render.py: {e}"));
    assert!(
        output.status.success(),
        "render.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// The agent image, built once per test process by `deploy/docker/build-local.sh` (a
/// static binary in the tests' own profile, linked from the tests' own dependency builds: the
/// shipped release build with thin LTO took over 5 of CI's minutes, a second build of every
/// dependency for the target triple over 3, and neither adds anything the image tests look
/// at).
/// `FAULTLINE_IMAGE` names a prebuilt image instead (as `FAULTLINE_BIN` does for the binary).
///
/// # Panics
/// When the script fails.
pub fn agent_image() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        if let Ok(image) = std::env::var("FAULTLINE_IMAGE") {
            return image;
        }
        // The script links target/<profile>/faultline statically in place (dev profile: the
        // suite's own dependency builds, no second build for the target triple). The suite's
        // binary is built first, so no later build in this process relinks the file while
        // the script copies it; tests here then run the static binary, which is the shipped
        // form.
        crate::agent_binary();
        let target_root = profile_dir()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| workspace_root().join("target"));
        let mut build = Command::new(deploy_dir().join("docker/build-local.sh"));
        crate::agent::without_package_env(&mut build);
        let out = build
            .arg(AGENT_IMAGE)
            .env("CARGO_TARGET_DIR", &target_root)
            .env("PROFILE", "dev")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("build-local.sh: {e}"));
        assert!(
            out.status.success(),
            "deploy/docker/build-local.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        AGENT_IMAGE.to_owned()
    })
}

/// A container of any image that this test started; `docker rm -f -v` when dropped.
#[derive(Debug)]
pub struct DockerRun {
    /// Container ID.
    pub id: String,
}

impl DockerRun {
    /// `docker run -d --label org.faultline.test=1 <args…>`.
    ///
    /// # Panics
    /// When docker fails (a half-created container is removed first).
    pub fn start(name: &str, args: &[String]) -> Self {
        let out = Command::new("docker")
            .args([
                "run",
                "-d",
                "--name",
                name,
                "--label",
                "org.faultline.test=1",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("docker run: {e}"));
        if !out.status.success() {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
            panic!(
                "docker run {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Self {
            id: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        }
    }

    /// `docker logs` (stdout and stderr).
    pub fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.id])
            .output()
            .unwrap_or_else(|e| panic!("docker logs: {e}"));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `docker exec <id> <args…>` as a command (not yet run).
    pub fn exec(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.arg("exec")
            .arg(&self.id)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for DockerRun {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- container {} logs ----\n{}", self.id, self.logs());
        }
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
