//! `faultline fault inject|list|revert`: the command line over the `faultline_chaos` engine,
//! plus the two hooks the rest of the agent needs — [`worker_mode`] (the binary doubles as
//! the fault helper process) and [`recover_at_start`] (`faultline run` reverts what a
//! killed agent left in the journal).
//!
//! Two paths, chosen once per command and named on stderr (never both):
//!
//! - **Through the running agent** ([`via_agent`]) when the config enables the API and
//!   something accepts connections at `api.listen` ([`crate::api::client::find`]): `inject`
//!   is `POST /v1/faults` (the agent's engine applies, journals and reverts it), held in the
//!   foreground like the in-process path (Ctrl-C is `DELETE /v1/faults/{id}`); `list` is
//!   `GET /v1/faults`; `revert ID` is `DELETE /v1/faults/{id}`, `revert --all` the kill
//!   switch `POST /v1/abort`.
//! - **In-process** when no agent is reachable: `inject` recovers the journal in
//!   `--state-dir` first, applies, holds in the foreground until the deadline or
//!   SIGINT/SIGTERM, reverts, and exits 0. `list` reads the journal; `revert ID|--all`
//!   reverts from the journal (also faults another live `fault inject` holds: that is the
//!   point of a kill switch).
//!
//! Both print the same lines and exit with the same codes. Both list each fault with its
//! check ([`faultline_chaos::Fault::check`], looked up on the system when listed): the
//! agent checks its active faults for `GET /v1/faults`, the in-process `list` checks each
//! journaled one.
//!
//! In-process, the engine's audit events (plan, apply, check, revert, recovery) are
//! tracing lines and, when the config enables OTLP export with an endpoint, OTLP log
//! records sent before the command exits ([`crate::telemetry::events::OneShot`]); through the
//! agent, the agent sends its own.
//!
//! Exit codes: 0 done, 1 the fault failed (or a revert did), 2 usage/configuration,
//! 3 refused by a guard (the message names it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use faultline_chaos::{
    Audit, Engine, FaultError, FaultId, FaultSpec, RecoveryOutcome, Requester, fault::unix_millis,
};

use crate::cli::LogFormatArg;
use crate::faults;
use crate::outcome::Outcome;
use reach::{AgentArgs, Reach};

mod reach;
mod via_agent;

/// `faultline fault …`
#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    /// Inject a fault and hold it until its deadline or SIGINT/SIGTERM, then revert it.
    Inject {
        /// Config file (for the `chaos:` limits); the embedded default when omitted.
        #[arg(long, short, global = true, env = "FAULTLINE_CONFIG")]
        config: Option<PathBuf>,
        /// Print the plan (targets, steps, revert) and exit without applying anything.
        #[arg(long, global = true)]
        dry_run: bool,
        /// Print the applied fault (or the plan) as JSON on stdout.
        #[arg(long, global = true)]
        json: bool,
        /// How to reach a running agent.
        #[command(flatten)]
        agent: AgentArgs,
        /// The fault kind and its options (boxed: the specs with selectors are large).
        #[command(subcommand)]
        spec: Box<FaultSpec>,
    },
    /// List the faults the journal holds.
    List {
        /// Config file; the embedded default when omitted.
        #[arg(long, short, env = "FAULTLINE_CONFIG")]
        config: Option<PathBuf>,
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// How to reach a running agent.
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Revert journaled faults now.
    Revert {
        /// The fault id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<FaultId>,
        /// Every journaled fault (the kill switch).
        #[arg(long)]
        all: bool,
        /// Config file; the embedded default when omitted.
        #[arg(long, short, env = "FAULTLINE_CONFIG")]
        config: Option<PathBuf>,
        /// How to reach a running agent.
        #[command(flatten)]
        agent: AgentArgs,
    },
}

/// If this process was started as a fault helper (`faultline __chaos-worker …`), runs it
/// and returns its exit code.
pub fn worker_mode() -> Option<ExitCode> {
    let mut args = std::env::args();
    args.next();
    if args.next().as_deref() == Some(faultline_chaos::WORKER_ARG) {
        Some(faultline_chaos::helper::child::main(args))
    } else {
        None
    }
}

/// Runs a `fault` subcommand.
pub fn run(cmd: FaultCommand, state_dir: &Path, log_format: Option<LogFormatArg>) -> ExitCode {
    let (config_path, agent_args) = match &cmd {
        FaultCommand::Inject { config, agent, .. }
        | FaultCommand::List { config, agent, .. }
        | FaultCommand::Revert { config, agent, .. } => (config.clone(), agent.clone()),
    };
    let loaded = match crate::cli::load_for_command(config_path.as_deref(), log_format) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let rt = match crate::cli::command_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    // One decision, before anything is applied: through the agent or in this process.
    match rt.block_on(reach::find(&loaded.config.api, &agent_args)) {
        Ok(Reach::Agent(agent)) => {
            eprintln!(
                "faultline: going through the running agent's API at {}",
                agent.base()
            );
            return rt.block_on(via_agent::run(cmd, &agent));
        }
        Ok(Reach::NoAgent(why)) => eprintln!(
            "faultline: {why}; running in-process with the journal in {}",
            state_dir.join("faults").join("journal").display()
        ),
        Err(e) => {
            eprintln!("faultline: {e}");
            return ExitCode::FAILURE;
        }
    }
    // The forwarder tasks run on `rt`'s workers while list and revert block this thread.
    let _in_rt = rt.enter();
    let audit = Audit::default();
    let otlp = loaded.config.one_shot_signals("fault");
    if let Some(o) = &otlp {
        o.forward_audit(&audit);
    }
    let engine = match faults::open_engine(&loaded.config.fault_settings(), state_dir, audit) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("faultline: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match cmd {
        FaultCommand::List { json, .. } => list(&engine, json),
        FaultCommand::Revert { id, .. } => revert(&engine, id),
        FaultCommand::Inject {
            spec,
            dry_run,
            json,
            ..
        } => rt.block_on(inject(engine, *spec, dry_run, json)),
    };
    if let Some(o) = otlp {
        rt.block_on(o.finish());
    }
    code
}

fn failure(e: &FaultError) -> ExitCode {
    eprintln!("faultline: {e}");
    ExitCode::from(Outcome::of_fault_error(e).exit_code())
}

async fn inject(engine: Engine, spec: FaultSpec, dry_run: bool, json: bool) -> ExitCode {
    // Handlers first: a SIGINT/SIGTERM that arrives while the fault is being applied must
    // revert it, not kill this process with the default action.
    let mut stops = match crate::stop::StopRequests::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("faultline: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    faults::recover_at_start(&engine).await;
    let requester = Requester::cli();
    if dry_run {
        return match engine.plan(spec, requester).await {
            Ok(plan) => {
                print_plan(&plan, json);
                ExitCode::SUCCESS
            }
            Err(e) => failure(&e),
        };
    }
    let fault = match engine.inject(spec, requester).await {
        Ok(f) => f,
        Err(e) => return failure(&e),
    };
    print_applied(&fault, json);
    if fault.instant {
        return ExitCode::SUCCESS;
    }
    tokio::select! {
        () = engine.wait(&fault.id) => {}
        sig = stops.recv() => tracing::info!(fault_id = %fault.id, "{sig}: reverting"),
    }
    finish(&engine, &fault.id).await
}

/// The `--dry-run` output.
fn print_plan(plan: &faultline_chaos::Plan, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(plan).unwrap_or_default());
    } else {
        print!("dry run, nothing applied\n{plan}");
    }
}

/// What `inject` prints once the fault is applied.
fn print_applied(fault: &faultline_chaos::ActiveFault, json: bool) {
    if json {
        println!("{}", serde_json::to_string(&fault).unwrap_or_default());
    } else {
        println!(
            "fault {} ({}) applied to: {}",
            fault.id,
            fault.kind,
            fault.targets.join(", ")
        );
        if let Some(selection) = &fault.selection {
            println!("selected: {selection}");
        }
        if let Some(check) = &fault.check {
            println!("check: {check}");
        }
        if !fault.instant {
            let left = fault
                .deadline_unix_ms
                .saturating_sub(unix_millis(std::time::SystemTime::now()));
            println!(
                "holding for {}; Ctrl-C reverts it now",
                humantime::format_duration(std::time::Duration::from_millis(left))
            );
        }
    }
}

/// Reverts whatever is still active and reports; exit 0 when the fault ended reverted.
async fn finish(engine: &Engine, id: &FaultId) -> ExitCode {
    let results = engine.shutdown().await;
    let still = engine.journal().read(id);
    let mut ok = true;
    for (fid, r) in results {
        if let Err(e) = r {
            eprintln!("faultline: revert of {fid} failed: {e}");
            ok = false;
        }
    }
    if matches!(still, Ok(Some(_)) | Err(_)) {
        eprintln!(
            "faultline: fault {id} is still in the journal (its revert failed); run `faultline fault revert {id}`"
        );
        ok = false;
    }
    if ok {
        println!("fault {id} reverted");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn list(engine: &Engine, json: bool) -> ExitCode {
    let check = |e: &faultline_chaos::JournalEntry| engine.check_journaled(e, Requester::cli());
    let entries = match engine.journal().entries() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("faultline: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        let items: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| match e {
                Ok(e) => {
                    let mut v = serde_json::to_value(e).unwrap_or_default();
                    v["owner_alive"] = engine.owner_alive(e).into();
                    v["check"] = serde_json::to_value(check(e)).unwrap_or_default();
                    v
                }
                Err(c) => {
                    serde_json::json!({"corrupt": c.path.display().to_string(), "error": c.error})
                }
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&items).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    if entries.is_empty() {
        println!("no faults in the journal");
    }
    for e in entries {
        match e {
            Ok(e) => {
                let alive = engine.owner_alive(&e);
                let left = e
                    .deadline_unix_ms
                    .saturating_sub(unix_millis(std::time::SystemTime::now()));
                println!(
                    "{}  {}  {:?}  by {}  held by {} ({})  {} left  targets: {}  check: {}",
                    e.id,
                    e.spec.kind(),
                    e.phase,
                    e.requester,
                    e.owner,
                    if alive {
                        "running"
                    } else {
                        "dead: revert with `faultline fault revert`"
                    },
                    humantime::format_duration(std::time::Duration::from_secs(left / 1000)),
                    e.targets
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    check(&e)
                );
            }
            Err(c) => println!("unreadable entry {}: {}", c.path.display(), c.error),
        }
    }
    ExitCode::SUCCESS
}

fn revert(engine: &Engine, id: Option<FaultId>) -> ExitCode {
    let reports = engine.revert_journaled(|fid| id.as_ref().is_none_or(|want| want == fid));
    if let Some(want) = &id
        && !reports.iter().any(|r| r.id.as_ref() == Some(want))
    {
        eprintln!("faultline: no journaled fault {want} (see `faultline fault list`)");
        return ExitCode::FAILURE;
    }
    let mut ok = true;
    for r in &reports {
        let id =
            r.id.as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| r.path.clone());
        match &r.outcome {
            RecoveryOutcome::Reverted => println!("{id}: reverted"),
            RecoveryOutcome::Failed { error } => {
                ok = false;
                println!("{id}: revert FAILED: {error}");
            }
            RecoveryOutcome::Corrupt { error, moved_to } => {
                ok = false;
                println!(
                    "{id}: unreadable ({error}); moved to {}",
                    moved_to.as_deref().unwrap_or("-")
                );
            }
            RecoveryOutcome::HeldByLiveAgent { owner } => println!("{id}: held by {owner}"),
        }
    }
    if reports.is_empty() {
        println!("no faults in the journal");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
