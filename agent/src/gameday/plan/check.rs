//! Checking a game-day file after serde has read it: names, agents, DNS discovery, stages and
//! steps, each problem located by line and dotted field.

use super::*;

pub(super) fn invalid(file: &str, line: usize, field: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_owned(),
        line,
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

/// A located problem: a top-level dotted field, or a field inside an item of a top-level
/// list.
pub(super) struct Problem {
    list: Option<(&'static str, usize)>,
    field: String,
    message: String,
}

impl Problem {
    pub(super) fn locate(self, text: &str, file: &str) -> ConfigError {
        let (line, field) = match self.list {
            Some((list, i)) => (
                nested_line(text, list, i, &self.field),
                if self.field.is_empty() {
                    format!("{list}[{i}]")
                } else {
                    format!("{list}[{i}].{}", self.field)
                },
            ),
            None => (line_of(text, &self.field), self.field),
        };
        ConfigError::Invalid {
            file: file.to_owned(),
            line,
            field,
            message: self.message,
        }
    }
}

/// [`item_line`], also inside a nested list (`parallel[1].agents` of a plan stage).
pub(super) fn nested_line(text: &str, list: &str, i: usize, field: &str) -> usize {
    let Some((head, rest)) = field.split_once('[') else {
        return item_line(text, list, i, field);
    };
    let (Some((idx, tail)), start) = (rest.split_once(']'), item_line(text, list, i, head)) else {
        return item_line(text, list, i, field);
    };
    let (Ok(j), true) = (idx.parse::<usize>(), start > 0) else {
        return start;
    };
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let base = lines.get(start - 1).map_or(0, |l| indent(l));
    let items: Vec<usize> = (start..lines.len())
        .take_while(|&n| {
            lines[n].trim().is_empty()
                || indent(lines[n]) > base
                || lines[n].trim_start().starts_with("- ") && indent(lines[n]) >= base && n == start
        })
        .filter(|&n| lines[n].trim_start().starts_with("- "))
        .collect();
    let Some(&first) = items.get(j) else {
        return start;
    };
    let key = tail.trim_start_matches('.');
    if key.is_empty() {
        return first + 1;
    }
    let stop = items.get(j + 1).copied().unwrap_or(lines.len());
    (first..stop)
        .find(|&n| {
            let t = lines[n].trim_start().trim_start_matches("- ");
            t.starts_with(&format!("{key}:"))
        })
        .map_or(first + 1, |n| n + 1)
}

pub(super) fn at(field: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        list: None,
        field: field.into(),
        message: message.into(),
    }
}

pub(super) fn item(
    list: &'static str,
    i: usize,
    field: &str,
    message: impl Into<String>,
) -> Problem {
    Problem {
        list: Some((list, i)),
        field: field.to_owned(),
        message: message.into(),
    }
}

pub(super) fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The token and CA settings an inventory entry and `agents: {dns: …}` share.
pub(super) struct Credentials<'a> {
    token_file: Option<&'a PathBuf>,
    token_env: Option<&'a String>,
    ca_file: Option<&'a PathBuf>,
    /// Plain HTTP, where a CA file means nothing.
    plain_http: Option<&'static str>,
}

impl<'a> Credentials<'a> {
    pub(super) fn of_entry(a: &'a AgentEntry) -> Self {
        Self {
            token_file: a.token_file.as_ref(),
            token_env: a.token_env.as_ref(),
            ca_file: a.ca_file.as_ref(),
            plain_http: a
                .url
                .starts_with("http://")
                .then_some("a CA file needs an https:// url"),
        }
    }

    pub(super) fn of_dns(d: &'a DnsAgents) -> Self {
        Self {
            token_file: d.token_file.as_ref(),
            token_env: d.token_env.as_ref(),
            ca_file: d.ca_file.as_ref(),
            plain_http: (d.scheme == Scheme::Http).then_some("a CA file needs scheme: https"),
        }
    }

    /// What can be checked without reading anything: (field, message).
    pub(super) fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.token_file.is_some() == self.token_env.is_some() {
            return Err(("token_file", "set exactly one of token_file, token_env"));
        }
        if self.token_env.is_some_and(|v| v.is_empty()) {
            return Err(("token_env", "names no variable"));
        }
        if let (Some(_), Some(message)) = (self.ca_file, self.plain_http) {
            return Err(("ca_file", message));
        }
        Ok(())
    }

    /// Reads the token (file or variable; relative paths against `base`) and checks the CA
    /// file: (token, CA file) or (field, message).
    pub(super) fn read(
        &self,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(String, Option<PathBuf>), (&'static str, String)> {
        let (field, token) = match (self.token_file, self.token_env) {
            (Some(p), None) => {
                let p = base.join(p);
                let t = std::fs::read_to_string(&p)
                    .map_err(|e| ("token_file", format!("cannot read {}: {e}", p.display())))?;
                ("token_file", t)
            }
            (None, Some(v)) => (
                "token_env",
                env(v).ok_or_else(|| ("token_env", format!("the variable {v} is not set")))?,
            ),
            _ => {
                return Err((
                    "token_file",
                    "set exactly one of token_file, token_env".into(),
                ));
            }
        };
        let token = token.trim().to_owned();
        if token.is_empty() {
            return Err((field, "the token is empty".into()));
        }
        let ca_file = self.ca_file.map(|p| base.join(p));
        if let Some(ca) = &ca_file {
            crate::agent_client::roots(Some(ca)).map_err(|e| ("ca_file", e))?;
        }
        Ok((token, ca_file))
    }
}

/// Checks the inventory; returns its names.
pub(super) fn check_inventory(list: &[AgentEntry]) -> Result<BTreeSet<&str>, Problem> {
    if list.is_empty() {
        return Err(at("agents", "needs at least one agent"));
    }
    let mut names = BTreeSet::new();
    for (i, a) in list.iter().enumerate() {
        if !valid_name(&a.name) {
            return Err(item(
                "agents",
                i,
                "name",
                format!("{:?}: use 1-64 of [A-Za-z0-9._-]", a.name),
            ));
        }
        if !names.insert(a.name.as_str()) {
            return Err(item(
                "agents",
                i,
                "name",
                format!("agent {:?} is listed twice", a.name),
            ));
        }
        match a.url.parse::<http::Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http" | "https"))
                    && u.host().is_some()
                    && u.path_and_query().is_none_or(|p| p.query().is_none()) => {}
            _ => {
                return Err(item(
                    "agents",
                    i,
                    "url",
                    format!(
                        "{:?} must be an http:// or https:// base URL such as https://10.0.0.11:9465",
                        a.url
                    ),
                ));
            }
        }
        Credentials::of_entry(a)
            .check()
            .map_err(|(f, m)| item("agents", i, f, m))?;
    }
    Ok(names)
}

pub(super) fn check_dns(d: &DnsAgents) -> Result<(), Problem> {
    if !agents::valid_dns_name(&d.dns) {
        return Err(at(
            "agents.dns",
            format!(
                "{:?} is not a DNS name (such as faultline-api.faultline.svc.cluster.local)",
                d.dns
            ),
        ));
    }
    if d.port == 0 {
        return Err(at("agents.port", "must be a port (1-65535)"));
    }
    if let Some(r) = &d.resolver {
        agents::parse_resolver(r).map_err(|m| at("agents.resolver", m))?;
    }
    Credentials::of_dns(d)
        .check()
        .map_err(|(f, m)| at(format!("agents.{f}"), m))
}

pub(super) fn check(g: &GameDayFile) -> Result<(), Problem> {
    if !valid_name(&g.name) {
        return Err(at(
            "name",
            format!("{:?}: use 1-64 of [A-Za-z0-9._-]", g.name),
        ));
    }
    // The inventory's names; `None` when the agents are found at run time.
    let known = match &g.agents {
        Agents::Inventory(list) => Some(check_inventory(list)?),
        Agents::Dns(d) => {
            check_dns(d)?;
            None
        }
    };
    if g.poll_interval.0 < Duration::from_millis(50) {
        return Err(at("poll_interval", "must be at least 50ms"));
    }
    if g.request_timeout.0 < Duration::from_millis(100) {
        return Err(at("request_timeout", "must be at least 100ms"));
    }
    if g.unreachable_after.0 < g.poll_interval.0 {
        return Err(at(
            "unreachable_after",
            format!("must be at least poll_interval ({})", g.poll_interval),
        ));
    }
    if g.max_duration.0 < Duration::from_secs(1) {
        return Err(at("max_duration", "must be at least 1s"));
    }
    if g.plan.is_empty() {
        return Err(at("plan", "needs at least one stage"));
    }
    for (i, s) in g.plan.iter().enumerate() {
        if let Some(n) = &s.name
            && !valid_name(n)
        {
            return Err(item(
                "plan",
                i,
                "name",
                format!("{n:?}: use 1-64 of [A-Za-z0-9._-]"),
            ));
        }
        let single = s.scenario.is_some() || s.scenario_file.is_some() || s.agents.is_some();
        if single != s.parallel.is_empty() {
            return Err(item(
                "plan",
                i,
                "",
                "a stage is either one step (scenario or scenario_file, and agents) or `parallel:` steps",
            ));
        }
        if single {
            let none = Targets::Named(Vec::new());
            check_step(
                s.scenario.as_ref(),
                s.scenario_file.as_ref(),
                s.agents.as_ref().unwrap_or(&none),
                known.as_ref(),
            )
            .map_err(|(f, m)| item("plan", i, &f, m))?;
        }
        let mut seen = BTreeSet::new();
        for (j, st) in s.parallel.iter().enumerate() {
            check_step(
                st.scenario.as_ref(),
                st.scenario_file.as_ref(),
                &st.agents,
                known.as_ref(),
            )
            .map_err(|(f, m)| item("plan", i, &format!("parallel[{j}].{f}"), m))?;
            if st.agents == Targets::All && s.parallel.len() > 1 {
                return Err(item(
                    "plan",
                    i,
                    &format!("parallel[{j}].agents"),
                    "`all` takes every agent, so no other step of this stage could run; give the other steps a stage of their own",
                ));
            }
            let Targets::Named(names) = &st.agents else {
                continue;
            };
            for a in names {
                if !seen.insert(a.as_str()) {
                    return Err(item(
                        "plan",
                        i,
                        &format!("parallel[{j}].agents"),
                        format!(
                            "agent {a:?} has two steps in this stage; an agent runs one drill of a stage at a time"
                        ),
                    ));
                }
            }
        }
    }
    for (f, d) in [
        ("objectives.rto", &g.objectives.rto),
        ("objectives.rpo", &g.objectives.rpo),
    ] {
        if d.is_some_and(|d| d.0.is_zero()) {
            return Err(at(f, "must be above 0s"));
        }
    }
    if g.abort_when.verdicts.contains(&Verdict::Running) {
        return Err(at(
            "abort_when.verdicts",
            "`running` is not a final verdict",
        ));
    }
    let mut probe_names = BTreeSet::new();
    for (i, p) in g.abort_when.probes.iter().enumerate() {
        let field = format!("abort_when.probes[{i}]");
        if p.metric.is_some() {
            return Err(at(
                "abort_when.probes",
                format!(
                    "{field}: metric probes read an agent's own collectors; use http, tcp or command here"
                ),
            ));
        }
        scenario::check_probe(p)
            .map_err(|(f, m)| at("abort_when.probes", format!("{field}.{f}: {m}")))?;
        if !probe_names.insert(p.name.as_str()) {
            return Err(at(
                "abort_when.probes",
                format!("{field}: probe name {:?} is used twice", p.name),
            ));
        }
    }
    Ok(())
}

pub(super) fn check_step(
    scenario: Option<&String>,
    file: Option<&PathBuf>,
    agents: &Targets,
    known: Option<&BTreeSet<&str>>,
) -> Result<(), (String, String)> {
    match (scenario, file) {
        (Some(n), None) if !n.is_empty() => {}
        (None, Some(f)) if !f.as_os_str().is_empty() => {}
        _ => {
            return Err((
                "scenario".into(),
                "set exactly one of scenario (a name in the agent's drills:) or scenario_file"
                    .into(),
            ));
        }
    }
    let names = match agents {
        Targets::All => return Ok(()),
        Targets::Count(0) => return Err(("agents".into(), "count must be at least 1".into())),
        Targets::Count(n) => {
            return match known {
                Some(k) if *n > k.len() => Err((
                    "agents".into(),
                    format!("count {n} but agents: lists {}", k.len()),
                )),
                _ => Ok(()),
            };
        }
        Targets::Named(names) => names,
    };
    if names.is_empty() {
        return Err(("agents".into(), "needs at least one agent".into()));
    }
    let mut seen = BTreeSet::new();
    for a in names {
        if let Some(known) = known
            && !known.contains(a.as_str())
        {
            return Err((
                "agents".into(),
                format!(
                    "{a:?} is not in agents: (known: {})",
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if a.is_empty() {
            return Err(("agents".into(), "an agent name is empty".into()));
        }
        if !seen.insert(a.as_str()) {
            return Err(("agents".into(), format!("{a:?} is listed twice")));
        }
    }
    Ok(())
}
