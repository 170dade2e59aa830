//! Running `tc`, `nft` and `ip` — optionally inside a named network namespace — and turning
//! their failures into errors that quote the command and what it printed.
//!
//! The kernel faults drive iproute2 and nftables as commands rather than through netlink
//! crates: the commands are what operators know and can replay from the plan and the logs,
//! and their error messages ("Specified qdisc kind is unknown") are what the support probes
//! look for. A namespace is entered with `ip netns exec NAME …`, which is also how a user
//! would reproduce a step by hand.
//!
//! Blocking: called from the [`crate::Fault`] methods, which the engine runs on the blocking
//! pool.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use thiserror::Error;

/// A command that could not be run or that failed.
#[derive(Debug, Error)]
pub enum CmdError {
    /// The program is not installed (or not executable).
    #[error("`{program}` is not installed or not runnable ({source}); install {package}")]
    Missing {
        /// `tc`, `nft`, `ip`.
        program: String,
        /// The Debian package that provides it.
        package: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// It ran and exited with a failure.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The full command line.
        command: String,
        /// Exit status.
        status: String,
        /// What it printed on stderr (trimmed), or stdout when stderr was empty.
        stderr: String,
    },
}

impl CmdError {
    /// The command's error output (empty for [`CmdError::Missing`]).
    pub fn stderr(&self) -> &str {
        match self {
            CmdError::Failed { stderr, .. } => stderr,
            CmdError::Missing { .. } => "",
        }
    }
}

/// The Debian package that ships `program`, for error messages.
fn package_of(program: &str) -> &'static str {
    match program {
        "nft" => "nftables",
        "tc" | "ip" => "iproute2",
        _ => "the package that provides it",
    }
}

/// `program args…`, inside `netns` when given (`ip netns exec NETNS program args…`).
pub fn command_line(netns: Option<&str>, program: &str, args: &[&str]) -> Vec<String> {
    let mut v = Vec::with_capacity(args.len() + 4);
    if let Some(ns) = netns {
        v.extend(["ip", "netns", "exec", ns].map(String::from));
    }
    v.push(program.to_owned());
    v.extend(args.iter().map(|a| (*a).to_owned()));
    v
}

/// Run `program args…` (in `netns`), feeding `stdin` when given; return its stdout.
pub fn run(
    netns: Option<&str>,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, CmdError> {
    let argv = command_line(netns, program, args);
    let (prog, rest) = argv.split_first().ok_or_else(|| CmdError::Failed {
        command: String::new(),
        status: "not run".into(),
        stderr: "empty command".into(),
    })?;
    let missing = |source| CmdError::Missing {
        program: prog.clone(),
        package: package_of(prog),
        source,
    };
    let mut cmd = Command::new(prog);
    cmd.args(rest)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Predictable messages to match on (`Specified qdisc kind is unknown`).
        .env("LC_ALL", "C");
    let mut child = cmd.spawn().map_err(missing)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A failed write shows up as the command's own failure below.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(missing)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if stderr.is_empty() {
        stderr = stdout.trim().to_owned();
    }
    Err(CmdError::Failed {
        command: argv.join(" "),
        status: out.status.to_string(),
        stderr,
    })
}

/// Whether the named namespace exists (`ip netns add` creates `/run/netns/NAME`).
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Whether `name` is usable as an `ip netns` name (no path tricks, no spaces).
pub fn valid_netns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `name` is a plausible interface name (Linux: at most 15 bytes, no `/` or space).
pub fn valid_dev_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_prefix_is_ip_netns_exec() {
        assert_eq!(
            command_line(None, "tc", &["qdisc", "show"]),
            ["tc", "qdisc", "show"]
        );
        assert_eq!(
            command_line(Some("t1"), "nft", &["list", "ruleset"]),
            ["ip", "netns", "exec", "t1", "nft", "list", "ruleset"]
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_netns_name("fl-test_1"));
        assert!(!valid_netns_name("../etc"));
        assert!(!valid_netns_name("a b"));
        assert!(valid_dev_name("veth0"));
        assert!(!valid_dev_name("averyveryverylongname"));
        assert!(!valid_dev_name("eth0:1"));
    }

    #[test]
    fn a_missing_program_says_which_package() {
        let e = run(None, "faultline-no-such-program", &[], None).unwrap_err();
        assert!(matches!(e, CmdError::Missing { .. }), "{e}");
    }

    #[test]
    fn a_failing_command_quotes_itself_and_stderr() {
        let e = run(None, "sh", &["-c", "echo boom >&2; exit 3"], None).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("`sh -c echo boom >&2; exit 3` failed"), "{s}");
        assert!(s.ends_with("boom"), "{s}");
        assert_eq!(run(None, "cat", &[], Some("hi")).unwrap(), "hi");
    }
}
