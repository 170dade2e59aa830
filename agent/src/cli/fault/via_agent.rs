//! `faultline fault …` through a running agent's API (see the parent module for when): the
//! agent's engine applies, journals and reverts the fault; this process only asks, holds in
//! the foreground and reports, with the same output and exit codes as the in-process path.

use std::process::ExitCode;
use std::time::Duration;

use faultline_chaos::{ActiveFault, FaultId, FaultSpec, Plan, fault::unix_millis};

use super::{FaultCommand, print_applied, print_plan};
use crate::agent_client::{AgentClient, Answer, CallError};
use crate::outcome::Outcome;

/// How often a held fault is looked up in the agent's list.
const POLL: Duration = Duration::from_millis(250);

/// Runs one `fault` subcommand against `agent`.
pub async fn run(cmd: FaultCommand, agent: &AgentClient) -> ExitCode {
    match cmd {
        FaultCommand::Inject {
            spec,
            dry_run,
            json,
            ..
        } => inject(agent, &spec, dry_run, json).await,
        FaultCommand::List { json, .. } => list(agent, json).await,
        FaultCommand::Revert { id, .. } => revert(agent, id.as_ref()).await,
    }
}

/// Reports an unexpected answer; exit 3 when a guard refused (422), else 1.
fn refused(what: &str, a: &Answer) -> ExitCode {
    eprintln!(
        "faultline: the agent refused {what} (HTTP {}): {}",
        a.status,
        a.message()
    );
    ExitCode::from(Outcome::of_status(a.status).exit_code())
}

fn unreachable(e: &CallError) -> ExitCode {
    eprintln!("faultline: {e}");
    ExitCode::FAILURE
}

fn parse<T: serde::de::DeserializeOwned>(a: &Answer) -> Result<T, ExitCode> {
    serde_json::from_str(&a.body).map_err(|e| {
        eprintln!(
            "faultline: unexpected answer from the agent ({e}): {}",
            a.body
        );
        ExitCode::FAILURE
    })
}

async fn active(agent: &AgentClient) -> Result<Vec<ActiveFault>, ExitCode> {
    match agent.call("GET", "/v1/faults", None).await {
        Ok(a) if a.status == 200 => parse(&a),
        Ok(a) => Err(refused("the fault list", &a)),
        Err(e) => Err(unreachable(&e)),
    }
}

async fn inject(agent: &AgentClient, spec: &FaultSpec, dry_run: bool, json: bool) -> ExitCode {
    // Handlers first: a SIGINT/SIGTERM while the agent applies the fault must revert it.
    let mut stops = match crate::stop::StopRequests::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("faultline: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let body = match serde_json::to_string(spec) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("faultline: cannot encode the fault: {e}");
            return ExitCode::FAILURE;
        }
    };
    if dry_run {
        return match agent
            .call("POST", "/v1/faults?dry_run=true", Some(body))
            .await
        {
            Ok(a) if a.status == 200 => match parse::<Plan>(&a) {
                Ok(plan) => {
                    print_plan(&plan, json);
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            },
            Ok(a) => refused("the fault", &a),
            Err(e) => unreachable(&e),
        };
    }
    let fault: ActiveFault = match agent.call("POST", "/v1/faults", Some(body)).await {
        Ok(a) if a.status == 201 => match parse(&a) {
            Ok(f) => f,
            Err(code) => return code,
        },
        Ok(a) => return refused("the fault", &a),
        Err(e) => return unreachable(&e),
    };
    print_applied(&fault, json);
    if fault.instant {
        return ExitCode::SUCCESS;
    }
    // Hold: the agent reverts at the deadline (or on its own abort/shutdown); a signal here
    // asks it to revert now.
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            sig = stops.recv() => return revert_now(agent, &fault.id, sig).await,
        }
        match active(agent).await {
            Ok(list) if list.iter().any(|f| f.id == fault.id) => {}
            Ok(_) => {
                println!("fault {} reverted", fault.id);
                return ExitCode::SUCCESS;
            }
            Err(code) => {
                eprintln!(
                    "faultline: lost the agent while it held fault {}; an agent reverts its faults when it stops and at its next start (see `faultline fault list`)",
                    fault.id
                );
                return code;
            }
        }
    }
}

async fn revert_now(agent: &AgentClient, id: &FaultId, why: &str) -> ExitCode {
    tracing::info!(fault_id = %id, "{why}: asking the agent to revert");
    match agent
        .call("DELETE", &format!("/v1/faults/{id}"), None)
        .await
    {
        // 404: it ended meanwhile (deadline, another client's revert).
        Ok(a) if a.status == 200 || a.status == 404 => {
            println!("fault {id} reverted");
            ExitCode::SUCCESS
        }
        Ok(a) => {
            eprintln!(
                "faultline: revert of {id} failed: {}; run `faultline fault revert {id}`",
                a.message()
            );
            ExitCode::FAILURE
        }
        Err(e) => unreachable(&e),
    }
}

async fn list(agent: &AgentClient, json: bool) -> ExitCode {
    let faults = match active(agent).await {
        Ok(f) => f,
        Err(code) => return code,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&faults).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    if faults.is_empty() {
        println!("no faults in the journal");
    }
    for f in faults {
        let left = f
            .deadline_unix_ms
            .saturating_sub(unix_millis(std::time::SystemTime::now()));
        println!(
            "{}  {}  Applied  by {}  held by the agent at {} (running)  {} left  targets: {}  check: {}",
            f.id,
            f.kind,
            f.requester,
            agent.base(),
            humantime::format_duration(Duration::from_secs(left / 1000)),
            f.targets.join(", "),
            f.check
                .as_ref()
                .map_or_else(|| "not checked".to_owned(), ToString::to_string)
        );
    }
    ExitCode::SUCCESS
}

async fn revert(agent: &AgentClient, id: Option<&FaultId>) -> ExitCode {
    let Some(id) = id else {
        return kill_switch(agent).await;
    };
    match agent
        .call("DELETE", &format!("/v1/faults/{id}"), None)
        .await
    {
        Ok(a) if a.status == 200 => {
            println!("{id}: reverted");
            ExitCode::SUCCESS
        }
        Ok(a) if a.status == 404 => {
            eprintln!(
                "faultline: no active fault {id} in the agent at {} (see `faultline fault list`)",
                agent.base()
            );
            ExitCode::FAILURE
        }
        Ok(a) if a.status == 500 => {
            println!("{id}: revert FAILED: {}", a.message());
            ExitCode::FAILURE
        }
        Ok(a) => refused("the revert", &a),
        Err(e) => unreachable(&e),
    }
}

#[derive(serde::Deserialize)]
struct AbortAnswer {
    drills_aborted: Vec<String>,
    faults_reverted: Vec<String>,
    errors: Vec<String>,
}

async fn kill_switch(agent: &AgentClient) -> ExitCode {
    let a = match agent.call("POST", "/v1/abort", None).await {
        Ok(a) if a.status == 200 || a.status == 500 => a,
        Ok(a) => return refused("the kill switch", &a),
        Err(e) => return unreachable(&e),
    };
    let answer: AbortAnswer = match parse(&a) {
        Ok(v) => v,
        Err(code) => return code,
    };
    for d in &answer.drills_aborted {
        println!("drill {d}: aborted");
    }
    for id in &answer.faults_reverted {
        println!("{id}: reverted");
    }
    for e in &answer.errors {
        println!("{e} (revert FAILED)");
    }
    if answer.faults_reverted.is_empty() && answer.errors.is_empty() {
        println!("no faults in the journal");
    }
    if answer.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
