//! Stress faults, carried out by one helper process each (the agent binary in worker mode,
//! see [`crate::helper`]): `cpu-stress` (N threads, each busy L% of every 100 ms period)
//! and `memory-stress` (allocate and touch N bytes, hold them; the helper sets its
//! `oom_score_adj` to 1000 so the OOM killer takes it before anything else).
//!
//! Revert ends the helper (pid + start time checked). The helper dies with the agent
//! (`PR_SET_PDEATHSIG`), and the journal ends a leftover one after a crash.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::FaultError;
use crate::fault::{Context, Effect, Fault, Plan, RevertRecord, Target};
use crate::helper;
use crate::procfs;
use crate::units::{ByteSize, HumanDuration, Percent};

/// Most CPU workers one fault may start.
pub const MAX_CPU_WORKERS: u32 = 1024;

/// `cpu-stress`: `workers` threads at `load` percent each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct CpuStressSpec {
    /// Worker threads (each loads about one CPU).
    #[arg(long, default_value_t = 1)]
    #[serde(default = "one")]
    pub workers: u32,
    /// Load per worker, percent (duty cycle over 100 ms periods).
    #[arg(long)]
    pub load: Percent,
    /// How long the fault lasts (required; capped by chaos.max_duration).
    #[arg(long)]
    pub duration: HumanDuration,
}

fn one() -> u32 {
    1
}

/// `memory-stress`: allocate and touch `bytes`, held for the duration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct MemoryStressSpec {
    /// How much memory (256MiB, 1G…); at most chaos.memory_max_share of MemAvailable.
    #[arg(long)]
    pub bytes: ByteSize,
    /// How long the fault lasts (required; capped by chaos.max_duration).
    #[arg(long)]
    pub duration: HumanDuration,
}

fn helper_effect(record: &RevertRecord, ctx: &Context, what: &str) -> Effect {
    let env = &ctx.env;
    match record
        .helpers
        .iter()
        .find(|p| procfs::is_alive(&env.proc_root, p, &env.boot_id))
    {
        Some(p) => {
            let detail = procfs::read_stat(&env.proc_root, p.pid)
                .map(|s| {
                    format!(
                        "{what}: helper {p} running, {} ticks CPU, {} pages resident",
                        s.utime + s.stime,
                        s.rss_pages
                    )
                })
                .unwrap_or_else(|| format!("{what}: helper {p} running"));
            Effect::in_effect(detail)
        }
        None => Effect::not_in_effect(format!("{what}: no helper running")),
    }
}

impl Fault for CpuStressSpec {
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
        const KIND: &str = "cpu-stress";
        if self.workers == 0 || self.workers > MAX_CPU_WORKERS {
            return Err(FaultError::Invalid {
                kind: KIND,
                message: format!("--workers must be 1 to {MAX_CPU_WORKERS}"),
            });
        }
        if self.load.0 <= 0.0 {
            return Err(FaultError::Invalid {
                kind: KIND,
                message: "--load must be more than 0".into(),
            });
        }
        Ok(Plan {
            id: ctx.id.clone(),
            kind: KIND.into(),
            duration: self.duration,
            targets: vec![Target::Cpu {
                workers: self.workers,
                load: self.load.0,
            }],
            actions: vec![format!(
                "start a helper process with {} thread(s), each busy {} of every 100 ms",
                self.workers, self.load
            )],
            reverts: vec!["end the helper (SIGKILL, pid + start time checked)".into()],
            instant: false,
            record: RevertRecord::default(),
            selection: None,
        })
    }

    fn apply(&self, plan: &Plan, ctx: &Context) -> Result<RevertRecord, FaultError> {
        let args = vec![
            "cpu".to_owned(),
            "--workers".into(),
            self.workers.to_string(),
            "--load".into(),
            self.load.0.to_string(),
        ];
        let worker = helper::spawn(&ctx.env, &args, Duration::from_secs(10))?;
        let mut record = plan.record.clone();
        record.helpers.push(worker);
        Ok(record)
    }

    fn check(&self, record: &RevertRecord, ctx: &Context) -> Result<Effect, FaultError> {
        Ok(helper_effect(record, ctx, "cpu-stress"))
    }

    fn revert(&self, record: &RevertRecord, ctx: &Context) -> Result<(), FaultError> {
        helper::end_all(&record.helpers, &ctx.env)
    }
}

impl Fault for MemoryStressSpec {
    fn plan(&self, ctx: &Context) -> Result<Plan, FaultError> {
        const KIND: &str = "memory-stress";
        if self.bytes.0 == 0 {
            return Err(FaultError::Invalid {
                kind: KIND,
                message: "--bytes must be more than 0".into(),
            });
        }
        Ok(Plan {
            id: ctx.id.clone(),
            kind: KIND.into(),
            duration: self.duration,
            targets: vec![Target::Memory {
                bytes: self.bytes.0,
            }],
            actions: vec![format!(
                "start a helper process that allocates and touches {}",
                self.bytes
            )],
            reverts: vec!["end the helper (SIGKILL, pid + start time checked)".into()],
            instant: false,
            record: RevertRecord::default(),
            selection: None,
        })
    }

    fn apply(&self, plan: &Plan, ctx: &Context) -> Result<RevertRecord, FaultError> {
        let args = vec![
            "memory".to_owned(),
            "--bytes".into(),
            self.bytes.0.to_string(),
        ];
        // Touching memory takes time: allow about 1 s per GiB on a slow host, at least 10 s.
        let timeout = Duration::from_secs(10 + self.bytes.0 / (1 << 30));
        let worker = helper::spawn(&ctx.env, &args, timeout)?;
        let mut record = plan.record.clone();
        record.helpers.push(worker);
        Ok(record)
    }

    fn check(&self, record: &RevertRecord, ctx: &Context) -> Result<Effect, FaultError> {
        Ok(helper_effect(record, ctx, "memory-stress"))
    }

    fn revert(&self, record: &RevertRecord, ctx: &Context) -> Result<(), FaultError> {
        helper::end_all(&record.helpers, &ctx.env)
    }
}
