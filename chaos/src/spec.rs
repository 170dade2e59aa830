//! [`FaultSpec`]: what a user asks for — one serde type shared by the CLI (it is also the
//! clap subcommand of `faultline fault inject`), the HTTP API and drill scenarios.
//!
//! ```json
//! {"kind": "process-pause", "name": "postgres", "mode": "one", "duration": "30s"}
//! {"kind": "disk-fill", "path": "/var/lib/data", "percent": 95, "duration": "5m"}
//! {"kind": "container-kill", "namespace": "shop", "label": ["app=web"], "count": 1, "duration": "1m"}
//! ```
//!
//! Every kind's spec struct carries a required `duration` and rejects unknown fields. Its
//! behaviour is its [`Fault`] impl, next to it in the kind's own module.
//!
//! ## Adding a kind
//! Write `struct XSpec` (derive `Clone, Debug, PartialEq, Serialize, Deserialize,
//! clap::Args`; `#[serde(deny_unknown_fields)]`; a `pub duration: HumanDuration` field
//! with `#[arg(long)]`), implement [`Fault`] for it in its own file, and add one line to
//! the `fault_kinds!` list below. Nothing else changes: the CLI, the journal, recovery and
//! the engine dispatch through the list.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fault::Fault;

macro_rules! fault_kinds {
    ($( $(#[$meta:meta])* $variant:ident($spec:ty) = $name:literal, )*) => {
        /// A fault request: the kind (`"kind"` in JSON, the subcommand on the CLI) and its
        /// options.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Subcommand)]
        #[serde(tag = "kind")]
        pub enum FaultSpec {
            $(
                $(#[$meta])*
                #[serde(rename = $name)]
                #[command(name = $name)]
                $variant($spec),
            )*
        }

        impl FaultSpec {
            /// Every kind's name, in the order of the list.
            pub const KINDS: &'static [&'static str] = &[$($name),*];

            /// The kind's name (`process-kill`).
            pub fn kind(&self) -> &'static str {
                match self {
                    $( FaultSpec::$variant(_) => $name, )*
                }
            }

            /// The requested duration.
            pub fn duration(&self) -> Duration {
                match self {
                    $( FaultSpec::$variant(s) => s.duration.0, )*
                }
            }

            /// The kind's behaviour.
            pub fn fault(&self) -> &dyn Fault {
                match self {
                    $( FaultSpec::$variant(s) => s, )*
                }
            }
        }
    };
}

fault_kinds! {
    /// Send a signal (default KILL) to the selected processes.
    ProcessKill(crate::process::ProcessKillSpec) = "process-kill",
    /// Stop the selected processes (SIGSTOP); SIGCONT on revert.
    ProcessPause(crate::process::ProcessPauseSpec) = "process-pause",
    /// Fill a filesystem to a used percentage or by a byte count.
    DiskFill(crate::disk::DiskFillSpec) = "disk-fill",
    /// Read or write at a set rate in a directory.
    DiskIo(crate::disk::DiskIoSpec) = "disk-io",
    /// Load CPUs: N workers at L% each.
    CpuStress(crate::stress::CpuStressSpec) = "cpu-stress",
    /// Allocate and touch memory, held for the duration.
    MemoryStress(crate::stress::MemoryStressSpec) = "memory-stress",
    /// Proxy a TCP service with added latency ± jitter (no kernel support needed).
    Latency(crate::network::LatencySpec) = "latency",
    /// Proxy a TCP service with a bandwidth limit in KB/s.
    Bandwidth(crate::network::BandwidthSpec) = "bandwidth",
    /// Proxy a TCP service through any toxics (latency, bandwidth, timeout, reset_peer, …).
    Proxy(crate::network::ProxyFaultSpec) = "proxy",
    /// Delay, jitter, loss, duplication, corruption on an interface, or only towards
    /// --dest/--port (tc netem; needs sch_netem).
    Netem(crate::network::NetemSpec) = "netem",
    /// Limit an interface's egress rate, or only towards --dest/--port (tc tbf).
    RateLimit(crate::network::RateLimitSpec) = "rate-limit",
    /// Drop traffic to/from addresses and ports (nftables table of faultline's own).
    Partition(crate::network::PartitionSpec) = "partition",
    /// Stop containers (CRI StopContainer or the Engine API). Engine API: revert starts
    /// them; on Kubernetes the kubelet does.
    ContainerStop(crate::container::ContainerStopSpec) = "container-stop",
    /// Kill containers (CRI: SIGKILL; Engine API: any signal, revert starts them).
    ContainerKill(crate::container::ContainerKillSpec) = "container-kill",
    /// Freeze containers' cgroups on any runtime; revert thaws them.
    ContainerPause(crate::container::ContainerPauseSpec) = "container-pause",
    /// Restart containers (Engine API only; over once applied).
    ContainerRestart(crate::container::ContainerRestartSpec) = "container-restart",
}

impl FaultSpec {
    /// Pins the random pick of a spec with pod selectors and no `seed` to `seed`, so that a
    /// plan made now (a drill's target locks) and the inject later pick the same containers;
    /// whether it did. Kinds without selectors are left as they are.
    pub fn pin_seed(&mut self, seed: u64) -> bool {
        match self {
            FaultSpec::ProcessKill(s) => s.pin_seed(seed),
            FaultSpec::ProcessPause(s) => s.pin_seed(seed),
            FaultSpec::ContainerStop(s) => s.pin_seed(seed),
            FaultSpec::ContainerKill(s) => s.pin_seed(seed),
            FaultSpec::ContainerPause(s) => s.pin_seed(seed),
            FaultSpec::ContainerRestart(s) => s.pin_seed(seed),
            FaultSpec::Netem(s) => s.pin_seed(seed),
            FaultSpec::RateLimit(s) => s.pin_seed(seed),
            FaultSpec::Partition(s) => s.pin_seed(seed),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_a_seed_touches_only_selector_specs_without_one() {
        let mut with_pods: FaultSpec = serde_json::from_str(
            r#"{"kind":"container-kill","label":["app=web"],"count":1,"duration":"1s"}"#,
        )
        .unwrap();
        assert!(with_pods.pin_seed(9));
        assert!(!with_pods.pin_seed(10), "a seed once set stays");
        assert!(
            serde_json::to_string(&with_pods)
                .unwrap()
                .contains(r#""seed":9"#)
        );
        let mut by_pid: FaultSpec =
            serde_json::from_str(r#"{"kind":"process-kill","pid":42,"duration":"1s"}"#).unwrap();
        assert!(!by_pid.pin_seed(9));
        let mut disk: FaultSpec = serde_json::from_str(
            r#"{"kind":"disk-fill","path":"/tmp","percent":50,"duration":"1s"}"#,
        )
        .unwrap();
        assert!(!disk.pin_seed(9));
    }

    #[test]
    fn network_kinds_take_the_pod_selectors_on_the_cli_and_in_json() {
        use clap::{CommandFactory, Parser};
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(subcommand)]
            spec: FaultSpec,
        }
        let by_label = Cli::try_parse_from([
            "x",
            "rate-limit",
            "--namespace",
            "shop",
            "--label",
            "app=web",
            "--count",
            "1",
            "--cri-socket",
            "/c.sock",
            "--rate",
            "8mbit",
            "--duration",
            "1s",
        ])
        .unwrap();
        let FaultSpec::RateLimit(r) = &by_label.spec else {
            panic!("{by_label:?}")
        };
        assert_eq!(
            (r.namespace.as_deref(), r.label.len(), r.count),
            (Some("shop"), 1, Some(1))
        );
        // One set of target flags: --netns and --pid name one namespace, not pods.
        for clash in [
            ["--netns", "a", "--label", "app=web"],
            ["--pid", "7", "--pod", "web-0"],
        ] {
            let mut args = vec!["x", "partition", "--dest", "10.0.0.1", "--duration", "1s"];
            args.extend(clash);
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
        let mut json: FaultSpec = serde_json::from_str(
            r#"{"kind":"netem","namespace":"shop","label":{"app":"web"},"delay":"100ms","duration":"1s"}"#,
        )
        .unwrap();
        assert!(json.pin_seed(5), "a drill pins a network fault's pick too");
        let back = serde_json::to_value(&json).unwrap();
        assert_eq!(back["seed"], 5);
        assert_eq!(back["label"], serde_json::json!(["app=web"]));
        // A spec written with the Docker socket of `--container` still reads.
        let old: FaultSpec = serde_json::from_str(
            r#"{"kind":"partition","container":"web","docker_socket":"/d.sock","dest":["10.0.0.1"],"duration":"1s"}"#,
        )
        .unwrap();
        assert!(
            matches!(&old, FaultSpec::Partition(p) if p.docker_socket.as_deref() == Some(std::path::Path::new("/d.sock")))
        );
        // --help groups the target flags: where, which pods, which runtime.
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("rate-limit")
            .unwrap()
            .render_help()
            .to_string();
        let at = |heading: &str| {
            help.find(heading)
                .unwrap_or_else(|| panic!("no {heading:?} in\n{help}"))
        };
        assert!(at("Where:") < at("--netns <") && at("--container <") < at("Pod selectors:"));
        assert!(
            at("Pod selectors:") < at("--label <") && at("--seed <") < at("Container runtime:")
        );
        assert!(at("Container runtime:") < at("--docker-socket <"), "{help}");
    }

    #[test]
    fn json_round_trip_and_strictness() {
        let s: FaultSpec = serde_json::from_str(
            r#"{"kind":"process-kill","pid":42,"signal":"TERM","duration":"30s"}"#,
        )
        .unwrap();
        assert_eq!(s.kind(), "process-kill");
        assert_eq!(s.duration(), Duration::from_secs(30));
        let back: FaultSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let unknown = serde_json::from_str::<FaultSpec>(
            r#"{"kind":"process-kill","pid":42,"duration":"30s","pidd":1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(unknown.contains("unknown field"), "{unknown}");
        let no_duration =
            serde_json::from_str::<FaultSpec>(r#"{"kind":"cpu-stress","workers":1,"load":50}"#)
                .unwrap_err()
                .to_string();
        assert!(no_duration.contains("duration"), "{no_duration}");
        let bad_kind =
            serde_json::from_str::<FaultSpec>(r#"{"kind":"meteor","duration":"1s"}"#).unwrap_err();
        assert!(
            bad_kind.to_string().contains("unknown variant"),
            "{bad_kind}"
        );
    }

    #[test]
    fn every_kind_parses_from_the_cli() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(subcommand)]
            spec: FaultSpec,
        }
        let cases: &[&[&str]] = &[
            &[
                "x",
                "process-kill",
                "--pid",
                "7",
                "--signal",
                "KILL",
                "--duration",
                "1s",
            ],
            &["x", "process-pause", "--pid", "7", "--duration", "1s"],
            &[
                "x",
                "disk-fill",
                "--path",
                "/tmp",
                "--percent",
                "50",
                "--duration",
                "1s",
            ],
            &[
                "x",
                "disk-fill",
                "--path",
                "/tmp",
                "--bytes",
                "1MiB",
                "--duration",
                "1s",
            ],
            &[
                "x",
                "disk-io",
                "--path",
                "/tmp",
                "--write-rate",
                "1MiB",
                "--duration",
                "1s",
            ],
            &[
                "x",
                "cpu-stress",
                "--workers",
                "2",
                "--load",
                "50",
                "--duration",
                "1s",
            ],
            &["x", "memory-stress", "--bytes", "64MiB", "--duration", "1s"],
        ];
        for args in cases {
            let cli = Cli::try_parse_from(*args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.spec.kind(), args[1]);
        }
        assert!(
            Cli::try_parse_from(["x", "cpu-stress", "--workers", "2", "--load", "50"]).is_err()
        );
    }
}
