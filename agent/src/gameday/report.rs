//! The combined game-day report: every run (stage × agent) with the drill report its agent
//! returned, how the agents were found (DNS) and which each step chose (with the seed of the
//! `count:` draws), each agent's outcome (its worst RTO and RPO, `unreachable` with since
//! when, `not-selected`),
//! the game-wide objectives judged on the worst node, the verdict, and one timeline merging
//! the game's own events with every drill's. JSON (serde) and a self-contained HTML page
//! whose per-run sections are the drill report's own rendering
//! ([`crate::drill::report::html::body`]).
//!
//! [`judge`] is pure: runs and objectives in, objectives, verdict and reason out.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::drill::report::junit::escape;
use crate::drill::report::{DrillReport, ObjectiveResult, Verdict, html, secs};

/// The outcome of an agent no step chose.
pub const NOT_SELECTED: &str = "not-selected";

/// Format version of the JSON report.
pub const GAME_REPORT_VERSION: u32 = 1;

/// How the game ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GameVerdict {
    /// Every drill passed, every agent answered, every game objective met.
    Passed,
    /// Something was missed: a drill did not pass, an agent was unreachable, an objective
    /// was missed.
    Failed,
    /// Aborted (Ctrl-C, an abort condition, `max_duration`): every agent's kill switch was
    /// pulled.
    Aborted,
}

impl GameVerdict {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            GameVerdict::Passed => "passed",
            GameVerdict::Failed => "failed",
            GameVerdict::Aborted => "aborted",
        }
    }
}

/// What became of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// The drill ended on its agent; see its verdict.
    Finished,
    /// The agent stopped answering while the drill ran (or before it could start).
    Unreachable,
    /// The agent refused to start the drill (busy, unknown scenario, refused fault).
    StartFailed,
    /// Not started: the game was aborted first or the agent was already unreachable.
    Skipped,
    /// Still running when the game ended (the kill switch was pulled).
    Running,
}

impl RunStatus {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Finished => "finished",
            RunStatus::Unreachable => "unreachable",
            RunStatus::StartFailed => "start-failed",
            RunStatus::Skipped => "skipped",
            RunStatus::Running => "running",
        }
    }
}

/// One drill of the game: a step's scenario on one agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The stage's name.
    pub stage: String,
    /// The agent.
    pub agent: String,
    /// The scenario's name.
    pub scenario: String,
    /// What became of it.
    pub status: RunStatus,
    /// The drill id on the agent.
    pub drill_id: Option<String>,
    /// The drill's verdict (the last one read).
    pub verdict: Option<Verdict>,
    /// Measured RTO, seconds.
    pub rto_seconds: Option<f64>,
    /// ± seconds.
    pub rto_precision_seconds: Option<f64>,
    /// Measured RPO (canary, else backup point), seconds.
    pub rpo_seconds: Option<f64>,
    /// ± seconds (canary RPO only).
    pub rpo_precision_seconds: Option<f64>,
    /// The slowest probe round during faults and recovery, seconds.
    pub probe_latency_max_seconds: Option<f64>,
    /// The median probe round during faults and recovery, seconds.
    pub probe_latency_median_seconds: Option<f64>,
    /// When the agent stopped answering, Unix seconds.
    pub unreachable_since: Option<f64>,
    /// Why it did not finish, where it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The agent's drill report (the last one read).
    pub report: Option<DrillReport>,
}

impl RunResult {
    /// A run that has not started.
    pub fn new(stage: &str, agent: &str, scenario: &str) -> Self {
        Self {
            stage: stage.to_owned(),
            agent: agent.to_owned(),
            scenario: scenario.to_owned(),
            status: RunStatus::Skipped,
            drill_id: None,
            verdict: None,
            rto_seconds: None,
            rto_precision_seconds: None,
            rpo_seconds: None,
            rpo_precision_seconds: None,
            probe_latency_max_seconds: None,
            probe_latency_median_seconds: None,
            unreachable_since: None,
            error: None,
            report: None,
        }
    }

    /// Takes the measurements of a drill report read from the agent.
    pub fn set_report(&mut self, r: DrillReport) {
        self.verdict = Some(r.verdict);
        self.rto_seconds = r.rto.map(|m| m.seconds);
        self.rto_precision_seconds = r.rto.map(|m| m.precision_seconds);
        self.rpo_seconds = r.rpo.as_ref().map(|m| m.seconds).or(r.backup_rpo_seconds);
        self.rpo_precision_seconds = r.rpo.as_ref().map(|m| m.precision_seconds);
        let mut lat: Vec<f64> = r.rounds.iter().map(|x| x.latency).collect();
        lat.sort_by(f64::total_cmp);
        self.probe_latency_max_seconds = lat.last().copied();
        self.probe_latency_median_seconds = lat.get(lat.len() / 2).copied();
        self.report = Some(r);
    }
}

/// What one step chose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// The stage.
    pub stage: String,
    /// The step's scenario.
    pub scenario: String,
    /// As the file put it: `[node1, node2]`, `count 2` or `all`.
    pub rule: String,
    /// The agents that run it.
    pub chosen: Vec<String>,
    /// The other agents.
    pub not_selected: Vec<String>,
}

/// How the agents were found, when through DNS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// The DNS name asked.
    pub dns: String,
    /// The DNS server(s) asked.
    pub resolver: String,
    /// Every address the name had, with the node its agent reported.
    pub agents: Vec<DiscoveredAgent>,
}

/// One address of the name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredAgent {
    /// The IP address.
    pub address: String,
    /// The node its `GET /v1/info` named.
    pub node: String,
    /// The agent's version.
    pub version: String,
}

/// One agent's part in the game.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentResult {
    /// The inventory name, or the node a found agent reported.
    pub name: String,
    /// Its API.
    pub url: String,
    /// `passed`, `failed` (a drill of it did not pass or start), `unreachable`, `skipped`
    /// (its runs did not start), or `not-selected` (no step chose it).
    pub outcome: String,
    /// When it stopped answering, Unix seconds.
    pub unreachable_since: Option<f64>,
    /// When the runner gave it up (`unreachable_after` later), Unix seconds.
    pub declared_unreachable_at: Option<f64>,
    /// The worst RTO of its drills, seconds.
    pub rto_seconds: Option<f64>,
    /// The worst RPO of its drills, seconds.
    pub rpo_seconds: Option<f64>,
    /// What its kill switch answered, when it was pulled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_switch: Option<String>,
}

/// One event of the combined timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GameEvent {
    /// Unix seconds.
    pub at: f64,
    /// The agent, when the event is one agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// `game-start`, `stage-start`, `drill-start`, `drill-end`, `unreachable`, `abort`,
    /// `kill-switch`, `game-end`, or a drill event's kind (`fault-apply`, `recovered`…).
    pub kind: String,
    /// What it concerns.
    pub name: String,
    /// Success, where that applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// Details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GameReport {
    /// [`GAME_REPORT_VERSION`].
    pub version: u32,
    /// The game's name.
    pub name: String,
    /// Its description.
    #[serde(default)]
    pub description: String,
    /// The game-day file.
    pub source: String,
    /// Unix seconds.
    pub started_at: f64,
    /// Unix seconds.
    pub finished_at: f64,
    /// The outcome.
    pub verdict: GameVerdict,
    /// The seed of the `count:` draws.
    #[serde(default)]
    pub seed: u64,
    /// How the agents were found (DNS), when they were not listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
    /// What each step chose.
    #[serde(default)]
    pub selections: Vec<Selection>,
    /// One line on why.
    pub reason: String,
    /// What aborted the game, if something did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_by: Option<String>,
    /// The worst RTO over every node, seconds.
    pub rto_seconds: Option<f64>,
    /// The worst RPO over every node, seconds.
    pub rpo_seconds: Option<f64>,
    /// Game-wide objectives.
    pub objectives: Vec<ObjectiveResult>,
    /// Per agent.
    pub agents: Vec<AgentResult>,
    /// Every run, in plan order.
    pub runs: Vec<RunResult>,
    /// The game's and every drill's events, in time order (probe rounds and canary
    /// markers stay in the runs' reports).
    pub timeline: Vec<GameEvent>,
}

fn worst(v: impl Iterator<Item = f64>) -> Option<f64> {
    v.fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
}

/// Judges a game: fills the agents' outcomes and worst figures, the overall RTO/RPO, the
/// objectives, the verdict and the reason. `aborted_by` set means aborted.
pub fn judge(r: &mut GameReport, rto: Option<f64>, rpo: Option<f64>) {
    for a in &mut r.agents {
        let runs: Vec<&RunResult> = r.runs.iter().filter(|x| x.agent == a.name).collect();
        a.rto_seconds = worst(runs.iter().filter_map(|x| x.rto_seconds));
        a.rpo_seconds = worst(runs.iter().filter_map(|x| x.rpo_seconds));
        a.outcome = if runs.is_empty() {
            NOT_SELECTED
        } else if a.unreachable_since.is_some() && a.declared_unreachable_at.is_some() {
            "unreachable"
        } else if runs.iter().all(|x| x.status == RunStatus::Skipped) {
            "skipped"
        } else if runs
            .iter()
            .filter(|x| x.status != RunStatus::Skipped)
            .all(|x| x.verdict == Some(Verdict::Passed))
        {
            "passed"
        } else {
            "failed"
        }
        .to_owned();
    }
    r.rto_seconds = worst(r.runs.iter().filter_map(|x| x.rto_seconds));
    r.rpo_seconds = worst(r.runs.iter().filter_map(|x| x.rpo_seconds));
    let ran: Vec<&RunResult> = r
        .runs
        .iter()
        .filter(|x| x.status != RunStatus::Skipped)
        .collect();
    r.objectives.clear();
    for (name, target, measured, pick) in [
        ("rto", rto, r.rto_seconds, 0),
        ("rpo", rpo, r.rpo_seconds, 1),
    ] {
        let Some(target) = target else { continue };
        let value = |x: &RunResult| {
            if pick == 0 {
                x.rto_seconds
            } else {
                x.rpo_seconds
            }
        };
        let unmeasured: Vec<String> = ran
            .iter()
            .filter(|x| value(x).is_none())
            .map(|x| format!("{} ({})", x.agent, x.scenario))
            .collect();
        let over: Vec<String> = ran
            .iter()
            .filter_map(|x| {
                value(x)
                    .filter(|v| *v > target)
                    .map(|v| format!("{} {}", x.agent, secs(v)))
            })
            .collect();
        let met = !ran.is_empty() && unmeasured.is_empty() && over.is_empty();
        let detail = if met {
            format!("every node within {}", secs(target))
        } else {
            let mut parts = Vec::new();
            if !over.is_empty() {
                parts.push(format!("over the target: {}", over.join(", ")));
            }
            if !unmeasured.is_empty() {
                parts.push(format!("not measured: {}", unmeasured.join(", ")));
            }
            if ran.is_empty() {
                parts.push("no drill ran".into());
            }
            parts.join("; ")
        };
        r.objectives.push(ObjectiveResult {
            name: name.into(),
            target_seconds: target,
            measured_seconds: measured,
            precision_seconds: None,
            met,
            detail,
        });
    }
    let mut problems = Vec::new();
    for a in r.agents.iter().filter(|a| a.outcome == "unreachable") {
        problems.push(format!(
            "{} unreachable since +{}",
            a.name,
            secs(a.unreachable_since.unwrap_or(r.started_at) - r.started_at)
        ));
    }
    for x in &r.runs {
        match x.status {
            RunStatus::Finished if x.verdict != Some(Verdict::Passed) => problems.push(format!(
                "{} on {}: {}",
                x.scenario,
                x.agent,
                x.verdict.map_or("no verdict", Verdict::as_str)
            )),
            RunStatus::StartFailed => problems.push(format!(
                "{} on {} did not start: {}",
                x.scenario,
                x.agent,
                x.error.as_deref().unwrap_or("")
            )),
            _ => {}
        }
    }
    for o in r.objectives.iter().filter(|o| !o.met) {
        problems.push(format!("objective {} missed ({})", o.name, o.detail));
    }
    (r.verdict, r.reason) = match (&r.aborted_by, problems.is_empty()) {
        (Some(by), _) => (GameVerdict::Aborted, format!("aborted: {by}")),
        (None, true) => {
            let idle = r
                .agents
                .iter()
                .filter(|a| a.outcome == NOT_SELECTED)
                .count();
            let mut reason = format!(
                "{} drills passed on {} agents",
                ran.len(),
                r.agents.len() - idle
            );
            if idle > 0 {
                let _ = write!(reason, " ({idle} not selected)");
            }
            (GameVerdict::Passed, reason)
        }
        (None, false) => (GameVerdict::Failed, problems.join("; ")),
    };
}

impl GameReport {
    /// A short multi-line summary for people.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "game day {}: {}\n  {}\n",
            self.name,
            self.verdict.as_str().to_uppercase(),
            self.reason
        );
        if let Some(d) = &self.discovery {
            let _ = writeln!(
                s,
                "  {} agents found through DNS: {} (resolver {})",
                d.agents.len(),
                d.dns,
                d.resolver
            );
        }
        for x in &self.selections {
            let _ = writeln!(
                s,
                "  {}/{}: {} (seed {}) chose {}; not selected: {}",
                x.stage,
                x.scenario,
                x.rule,
                self.seed,
                x.chosen.join(", "),
                if x.not_selected.is_empty() {
                    "—".to_owned()
                } else {
                    x.not_selected.join(", ")
                }
            );
        }
        for a in &self.agents {
            let _ = writeln!(
                s,
                "  agent {:<12} {:<12} RTO {:<10} RPO {}{}",
                a.name,
                a.outcome,
                a.rto_seconds.map_or("—".into(), secs),
                a.rpo_seconds.map_or("—".into(), secs),
                a.unreachable_since.map_or(String::new(), |t| format!(
                    "  (no answer since +{})",
                    secs(t - self.started_at)
                ))
            );
        }
        for x in &self.runs {
            let _ = writeln!(
                s,
                "  run {}/{} on {}: {}{}{}",
                x.stage,
                x.scenario,
                x.agent,
                x.status.as_str(),
                x.verdict
                    .map_or(String::new(), |v| format!(" ({})", v.as_str())),
                x.probe_latency_max_seconds
                    .map_or(String::new(), |l| format!(", slowest probe {}", secs(l)))
            );
        }
        for o in &self.objectives {
            let _ = writeln!(
                s,
                "  objective {}: {} (target {}, worst {}) — {}",
                o.name,
                if o.met { "MET" } else { "MISSED" },
                secs(o.target_seconds),
                o.measured_seconds.map_or("—".into(), secs),
                o.detail
            );
        }
        s
    }

    /// Adds each run's drill events to the timeline (tagged with the agent) and sorts it.
    pub fn merge_drill_events(&mut self) {
        for x in &self.runs {
            let Some(rep) = &x.report else { continue };
            for e in rep.timeline.iter().filter(|e| !e.kind.is_routine()) {
                let kind = serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                self.timeline.push(GameEvent {
                    at: e.at,
                    agent: Some(x.agent.clone()),
                    kind,
                    name: e.name.clone(),
                    ok: e.ok,
                    detail: e.detail.clone(),
                });
            }
        }
        self.timeline.sort_by(|a, b| a.at.total_cmp(&b.at));
    }
}

const W: f64 = 1100.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 20.0;

/// The page: verdict, objective cards, one lane per agent over the whole game (each drill's
/// phases, fault windows, failing probe rounds, the unreachable span), the combined event
/// table, then each run's drill report as the drill page renders it.
pub fn html(r: &GameReport) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let color = match r.verdict {
        GameVerdict::Passed => "#1a7f37",
        _ => "#cf222e",
    };
    h.push_str(&html::head(
        &format!("faultline game day — {}", r.name),
        color,
    ));
    let _ = writeln!(
        h,
        "<h1>Game day — {}</h1><p><span class=\"badge\" id=\"game-verdict\">{}</span> \
         <span class=\"muted\">{} · started {} · {} · from {}</span></p><p id=\"reason\">{}</p>",
        escape(&r.name),
        escape(&r.verdict.as_str().to_uppercase()),
        escape(&r.description),
        crate::timefmt::format_utc(r.started_at),
        secs(r.finished_at - r.started_at),
        escape(&r.source),
        escape(&r.reason)
    );
    h.push_str("<div class=\"cards\">\n");
    for o in &r.objectives {
        let _ = writeln!(
            h,
            "<div class=\"card\" id=\"objective-{}\"><div class=\"muted\">WORST {}</div>\
             <div style=\"font-size:26px\">{}</div><div>target {} — <span class=\"{}\">{}</span></div>\
             <div class=\"muted\">{}</div></div>",
            escape(&o.name),
            escape(&o.name.to_uppercase()),
            o.measured_seconds.map_or("—".into(), secs),
            secs(o.target_seconds),
            if o.met { "met" } else { "missed" },
            if o.met { "MET" } else { "MISSED" },
            escape(&o.detail)
        );
    }
    h.push_str("</div>\n<h2>Agents</h2><table id=\"agents\"><tr><th>agent</th><th>outcome</th><th>RTO</th><th>RPO</th><th>unreachable since</th><th>kill switch</th></tr>\n");
    for a in &r.agents {
        let _ = writeln!(
            h,
            "<tr class=\"agent {}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&a.outcome),
            escape(&a.name),
            escape(&a.outcome),
            a.rto_seconds.map_or("—".into(), secs),
            a.rpo_seconds.map_or("—".into(), secs),
            a.unreachable_since
                .map_or(String::new(), |t| format!("+{}", secs(t - r.started_at))),
            escape(a.kill_switch.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>\n");
    selections(&mut h, r);
    lanes(&mut h, r);
    h.push_str("<h2>Timeline</h2><table><tr><th>t</th><th>agent</th><th>event</th><th>name</th><th>ok</th><th>detail</th></tr>\n");
    for e in &r.timeline {
        let _ = writeln!(
            h,
            "<tr><td>+{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            secs(e.at - r.started_at),
            escape(e.agent.as_deref().unwrap_or("")),
            escape(&e.kind),
            escape(&e.name),
            e.ok.map_or("", |ok| if ok { "✓" } else { "✗" }),
            escape(&e.detail)
        );
    }
    h.push_str("</table>\n");
    for x in &r.runs {
        let _ = writeln!(
            h,
            "<hr><h2 class=\"run\">{} · {} on {} — {}</h2>",
            escape(&x.stage),
            escape(&x.scenario),
            escape(&x.agent),
            escape(x.status.as_str())
        );
        if let Some(e) = &x.error {
            let _ = writeln!(h, "<p class=\"missed\">{}</p>", escape(e));
        }
        if let Some(rep) = &x.report {
            h.push_str(&html::body(rep));
        }
    }
    h.push_str("</body></html>\n");
    h
}

/// How the agents were found and which each step chose.
fn selections(h: &mut String, r: &GameReport) {
    if let Some(d) = &r.discovery {
        let _ = writeln!(
            h,
            "<p id=\"discovery\">{} agents found through DNS: <code>{}</code> (resolver {})</p>",
            d.agents.len(),
            escape(&d.dns),
            escape(&d.resolver)
        );
    }
    let _ = writeln!(
        h,
        "<h2>Selection</h2><p class=\"muted\">seed {}</p><table id=\"selections\"><tr><th>stage</th><th>scenario</th><th>agents</th><th>chosen</th><th>not selected</th></tr>",
        r.seed
    );
    for x in &r.selections {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&x.stage),
            escape(&x.scenario),
            escape(&x.rule),
            escape(&x.chosen.join(", ")),
            escape(&x.not_selected.join(", "))
        );
    }
    h.push_str("</table>\n");
}

fn lanes(h: &mut String, r: &GameReport) {
    let t0 = r.started_at;
    let t1 = r.finished_at.max(t0 + 0.001);
    let span = t1 - t0;
    let x = |t: f64| LEFT + (t - t0).clamp(0.0, span) / span * (W - LEFT - RIGHT);
    let lane_y = |i: usize| 20.0 + i as f64 * 50.0;
    let height = lane_y(r.agents.len()) + 30.0;
    let _ = writeln!(
        h,
        "<h2>Game timeline</h2><svg id=\"game-timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" \
         viewBox=\"0 0 {W} {height}\" font-size=\"11\" font-family=\"system-ui,sans-serif\">\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{height}\" fill=\"#f6f8fa\"/>"
    );
    for (i, a) in r.agents.iter().enumerate() {
        let y = lane_y(i);
        let _ = writeln!(
            h,
            "<text x=\"8\" y=\"{}\" fill=\"#1f2328\">{}</text><line x1=\"{LEFT}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#d0d7de\"/>",
            y + 22.0,
            escape(&a.name),
            W - RIGHT,
            y + 44.0,
            y + 44.0
        );
        for run in r.runs.iter().filter(|x| x.agent == a.name) {
            let Some(rep) = &run.report else { continue };
            for p in &rep.phases {
                let c = html::phase_color(&p.name);
                let (a0, b0) = (x(p.start), x(p.end).max(x(p.start) + 2.0));
                let _ = writeln!(
                    h,
                    "<rect class=\"phase\" x=\"{a0:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"16\" fill=\"{c}\" opacity=\"0.8\"><title>{} {} {}</title></rect>",
                    b0 - a0,
                    escape(&run.scenario),
                    escape(&p.name),
                    secs(p.end - p.start)
                );
            }
            for f in &rep.faults {
                let a0 = x(f.applied_at);
                let b0 = f.reverted_at.map_or(x(t1), x).max(a0 + 3.0);
                let _ = writeln!(
                    h,
                    "<rect class=\"fault\" x=\"{a0:.1}\" y=\"{}\" width=\"{:.1}\" height=\"12\" fill=\"#cf222e\" opacity=\"0.75\"><title>{} {}</title></rect>",
                    y + 18.0,
                    b0 - a0,
                    escape(&f.kind),
                    escape(&f.targets.join(", "))
                );
            }
            for round in rep.rounds.iter().filter(|r| !r.ok) {
                let _ = writeln!(
                    h,
                    "<rect class=\"probe fail\" x=\"{:.1}\" y=\"{}\" width=\"2\" height=\"10\" fill=\"#cf222e\"/>",
                    x(round.at),
                    y + 32.0
                );
            }
            if let Some(m) = rep.rto {
                let _ = writeln!(
                    h,
                    "<line class=\"recovered\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#1a7f37\" stroke-width=\"2\"><title>recovered, RTO {3}</title></line>",
                    x(m.recovered_at),
                    y,
                    y + 44.0,
                    secs(m.seconds)
                );
            }
        }
        if let Some(since) = a.unreachable_since {
            let a0 = x(since);
            let _ = writeln!(
                h,
                "<rect class=\"unreachable\" x=\"{a0:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"44\" fill=\"#57606a\" opacity=\"0.35\"><title>unreachable since +{}</title></rect>\
                 <text x=\"{:.1}\" y=\"{}\" fill=\"#1f2328\">unreachable</text>",
                (x(t1) - a0).max(2.0),
                secs(since - t0),
                a0 + 4.0,
                y + 28.0
            );
        }
    }
    html::axis_and_close(h, t0, span, height, &x);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::report::fixture;

    fn game() -> GameReport {
        let t0 = 1_700_000_000.0;
        let mut passed = fixture::report();
        passed.verdict = Verdict::Passed;
        let mut a = RunResult::new("stage-1", "node1", "kill");
        a.status = RunStatus::Finished;
        a.drill_id = Some(passed.id.clone());
        a.set_report(passed);
        let mut b = RunResult::new("stage-1", "node3", "pause");
        b.status = RunStatus::Unreachable;
        b.unreachable_since = Some(t0 + 3.0);
        GameReport {
            version: GAME_REPORT_VERSION,
            name: "gd".into(),
            description: "<x>".into(),
            source: "g.yaml".into(),
            started_at: t0,
            finished_at: t0 + 10.0,
            verdict: GameVerdict::Passed,
            seed: 0,
            discovery: None,
            selections: vec![],
            reason: String::new(),
            aborted_by: None,
            rto_seconds: None,
            rpo_seconds: None,
            objectives: vec![],
            agents: ["node1", "node3"]
                .iter()
                .map(|n| AgentResult {
                    name: (*n).into(),
                    url: format!("http://{n}"),
                    outcome: String::new(),
                    unreachable_since: (*n == "node3").then_some(t0 + 3.0),
                    declared_unreachable_at: (*n == "node3").then_some(t0 + 5.0),
                    rto_seconds: None,
                    rpo_seconds: None,
                    kill_switch: None,
                })
                .collect(),
            runs: vec![a, b],
            timeline: vec![],
        }
    }

    #[test]
    fn an_unreachable_agent_fails_the_game_and_the_worst_node_is_judged() {
        let mut g = game();
        judge(&mut g, Some(2.0), None);
        assert_eq!(g.verdict, GameVerdict::Failed, "{}", g.reason);
        assert!(
            g.reason.contains("node3 unreachable since +3.000 s"),
            "{}",
            g.reason
        );
        assert_eq!(g.agents[0].outcome, "passed");
        assert_eq!(g.agents[1].outcome, "unreachable");
        assert_eq!(g.rto_seconds, Some(1.05));
        assert_eq!(g.agents[0].rto_seconds, Some(1.05));
        assert!(!g.objectives[0].met);
        assert!(
            g.objectives[0].detail.contains("not measured: node3"),
            "{}",
            g.objectives[0].detail
        );
        // Without the unreachable node's run every objective holds; no step chose it.
        g.runs.pop();
        g.agents[1].unreachable_since = None;
        g.agents[1].declared_unreachable_at = None;
        judge(&mut g, Some(2.0), Some(1.0));
        assert_eq!(g.verdict, GameVerdict::Passed, "{}", g.reason);
        assert_eq!(g.agents[1].outcome, NOT_SELECTED);
        assert_eq!(
            g.reason, "1 drills passed on 1 agents (1 not selected)",
            "{}",
            g.reason
        );
        // A run that never started leaves its agent `skipped`, not `not-selected`.
        g.runs.push(RunResult::new("stage-2", "node3", "pause"));
        judge(&mut g, None, None);
        assert_eq!(g.agents[1].outcome, "skipped");
        g.runs.pop();
        judge(&mut g, Some(1.0), None);
        assert_eq!(g.verdict, GameVerdict::Failed);
        assert!(
            g.reason.contains("over the target: node1 1.050 s"),
            "{}",
            g.reason
        );
        g.aborted_by = Some("SIGINT".into());
        judge(&mut g, None, None);
        assert_eq!(g.verdict, GameVerdict::Aborted);
    }

    #[test]
    fn json_round_trip_summary_timeline_and_page() {
        let mut g = game();
        g.seed = 42;
        g.selections = vec![Selection {
            stage: "stage-1".into(),
            scenario: "kill".into(),
            rule: "count 1".into(),
            chosen: vec!["node1".into()],
            not_selected: vec!["node3".into()],
        }];
        g.discovery = Some(Discovery {
            dns: "faultline-api.faultline.svc".into(),
            resolver: "10.96.0.10:53".into(),
            agents: vec![DiscoveredAgent {
                address: "10.0.0.1".into(),
                node: "node1".into(),
                version: "0.1.0".into(),
            }],
        });
        judge(&mut g, Some(2.0), None);
        g.merge_drill_events();
        assert!(
            g.timeline
                .iter()
                .any(|e| e.kind == "fault-apply" && e.agent.as_deref() == Some("node1"))
        );
        let back: GameReport = serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(back, g);
        let s = g.summary();
        assert!(
            s.contains("FAILED") && s.contains("agent node3") && s.contains("unreachable"),
            "{s}"
        );
        assert!(
            s.contains("stage-1/kill: count 1 (seed 42) chose node1; not selected: node3")
                && s.contains("1 agents found through DNS: faultline-api.faultline.svc"),
            "{s}"
        );
        let page = html(&g);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("id=\"selections\"") && page.contains("id=\"discovery\""));
        assert!(!page.contains("<script"));
        assert!(page.contains("id=\"game-timeline\""));
        assert_eq!(page.matches("class=\"unreachable\"").count(), 1);
        assert!(page.contains("&lt;x&gt;"));
        // The run's own drill rendering is embedded.
        assert!(page.contains("<svg id=\"timeline\""));
    }
}
