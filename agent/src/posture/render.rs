//! The posture report's renderings besides JSON: a self-contained HTML page (no scripts,
//! no external resources; inline SVG plots of each objective's measured values against its
//! target line and of each source's restore durations against its RTO; laid out to print on
//! A4 without cutting a section), Markdown for a review document or a pull request, and
//! JUnit XML with one test case per objective per period for CI gates.

use std::fmt::Write as _;

use super::report::{
    CheckStats, Figures, ObjectivePosture, Posture, ScenarioPosture, ServicePosture, SourcePosture,
};
use crate::backup::{CheckKind, Status};
use crate::drill::report::junit::escape;
use crate::drill::report::{Verdict, secs};

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "—".into(), |r| format!("{:.1} %", r * 100.0))
}

/// Seconds for people: `347.9 ms`, `4.200 s`, and from a minute on `1h 30m`.
fn duration(v: f64) -> String {
    if v >= 60.0 {
        crate::backup::human(v)
    } else {
        secs(v)
    }
}

fn opt_secs(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), duration)
}

fn day(t: f64) -> String {
    crate::timefmt::format_utc(t)
        .get(..10)
        .unwrap_or_default()
        .to_owned()
}

fn when(t: f64) -> String {
    crate::timefmt::format_utc(t).replace('T', " ")
}

/// `stable`, `worsening`… with an arrow.
fn trend_label(f: &Figures) -> String {
    let arrow = match f.trend.direction.as_str() {
        "worsening" => "↗ ",
        "improving" => "↘ ",
        "stable" => "→ ",
        _ => "",
    };
    format!("{arrow}{}", f.trend.direction)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#1f2328;background:#fff;font-size:14px}\
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 6px;border-bottom:2px solid #d0d7de;padding-bottom:4px}\
h3{font-size:15px;margin:16px 0 6px}.muted{color:#57606a}.tier{display:inline-block;margin-left:8px;padding:1px 8px;border-radius:10px;background:#ddf4ff;color:#0969da;font-size:12px;vertical-align:middle}\
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0}.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;min-width:150px}\
.card .v{font-size:22px;font-weight:700}.ok{color:#1a7f37}.bad{color:#cf222e}.warn{color:#9a6700}\
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}td,th{border:1px solid #d0d7de;padding:3px 7px;text-align:left;vertical-align:top}th{background:#f6f8fa}\
section.item{break-inside:avoid;page-break-inside:avoid;margin-bottom:14px}svg{max-width:100%;height:auto;display:block}\
a{color:#0969da}@page{size:A4;margin:12mm}\
@media print{body{margin:0;font-size:11px}h2{break-after:avoid;page-break-after:avoid}a{color:inherit;text-decoration:none}table{font-size:10px}}";

/// The HTML page.
pub fn html(p: &Posture) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>DR posture {} – {}</title><style>{STYLE}</style></head><body>\n",
        day(p.since),
        day(p.until)
    );
    let _ = write!(
        h,
        "<h1>DR posture</h1><div class=\"muted\">{} to {}{} · nodes: ",
        when(p.since),
        when(p.until),
        p.service_filter
            .as_ref()
            .map_or_else(String::new, |s| format!(" · service {}", escape(s)))
    );
    for (i, n) in p.nodes.iter().enumerate() {
        if i > 0 {
            h.push_str(", ");
        }
        if n.status == "ok" {
            let _ = write!(
                h,
                "<span class=\"node\" data-node=\"{0}\">{0}</span>",
                escape(&n.node)
            );
        } else {
            let _ = write!(
                h,
                "<span class=\"node bad\" data-node=\"{0}\" data-status=\"unreachable\" title=\"{1}\">{0} (unreachable)</span>",
                escape(&n.node),
                escape(n.error.as_deref().unwrap_or(""))
            );
        }
    }
    h.push_str("</div>\n");
    let t = &p.totals;
    let card = |h: &mut String, id: &str, label: &str, value: String, class: &str| {
        let _ = write!(
            h,
            "<div class=\"card\"><div class=\"muted\">{label}</div><div class=\"v {class}\" id=\"{id}\">{value}</div></div>"
        );
    };
    h.push_str("<div class=\"cards\">");
    let rate_class = |r: Option<f64>| match r {
        Some(r) if r >= 1.0 => "ok",
        Some(_) => "bad",
        None => "warn",
    };
    card(
        &mut h,
        "total-drill-pass-rate",
        &format!("drill pass rate ({} drills)", t.drills),
        pct(t.drill_pass_rate),
        rate_class(t.drill_pass_rate),
    );
    card(
        &mut h,
        "total-objectives",
        "objectives met / missed",
        format!("{} / {}", t.objectives_met, t.objectives_missed),
        if t.objectives_missed == 0 {
            "ok"
        } else {
            "bad"
        },
    );
    card(
        &mut h,
        "total-restore-pass-rate",
        &format!("restore-test pass rate ({} tests)", t.restore_tests),
        pct(t.restore_pass_rate),
        rate_class(t.restore_pass_rate),
    );
    card(
        &mut h,
        "total-gaps",
        "gaps",
        t.gaps.to_string(),
        if t.gaps == 0 { "ok" } else { "warn" },
    );
    h.push_str("</div>\n");
    for s in &p.services {
        service(&mut h, s);
    }
    gaps(&mut h, p);
    evidence(&mut h, p);
    h.push_str("</body></html>\n");
    h
}

fn service(h: &mut String, s: &ServicePosture) {
    let _ = writeln!(
        h,
        "<h2 id=\"service-{0}\">{0}{1}</h2>",
        escape(&s.service),
        s.tier.as_ref().map_or_else(String::new, |t| format!(
            "<span class=\"tier\">{}</span>",
            escape(t)
        ))
    );
    for sc in &s.scenarios {
        scenario(h, &s.service, sc);
    }
    for src in &s.sources {
        source(h, &s.service, src);
    }
}

fn scenario(h: &mut String, service: &str, sc: &ScenarioPosture) {
    let _ = writeln!(
        h,
        "<section class=\"item scenario\" id=\"scenario-{svc}-{name}\" data-scenario=\"{name}\" data-runs=\"{runs}\" data-pass-rate=\"{rate}\">\
         <h3>Scenario {name} <span class=\"muted\">on {nodes}</span></h3>\
         <div>drills run: <b class=\"runs\">{runs}</b> · passed: <b>{passed}</b> · pass rate: <b class=\"pass-rate {cls}\">{pct}</b>{last}</div>",
        svc = escape(service),
        name = escape(&sc.scenario),
        nodes = escape(&sc.nodes.join(", ")),
        runs = sc.runs,
        passed = sc.passed,
        rate = sc.pass_rate.map_or_else(String::new, |r| format!("{r:.4}")),
        cls = if sc.pass_rate == Some(1.0) {
            "ok"
        } else {
            "bad"
        },
        pct = pct(sc.pass_rate),
        last = sc
            .last_run_at
            .map_or_else(String::new, |t| format!(" · last run {}", when(t))),
    );
    if !sc.objectives.is_empty() {
        h.push_str("<table><tr><th>objective</th><th>target</th><th>evidence</th><th>met</th><th>missed</th><th>compliance</th><th>worst</th><th>median</th><th>trend</th></tr>");
        for o in &sc.objectives {
            objective_row(h, o);
        }
        h.push_str("</table>\n");
    }
    for o in &sc.objectives {
        let points: Vec<Point> = sc
            .drills
            .iter()
            .filter_map(|d| {
                let ro = d.objectives.iter().find(|x| x.name == o.name)?;
                Some(Point {
                    at: d.started_at,
                    value: ro.measured_seconds?,
                    ok: ro.met,
                    href: d.href.clone(),
                    label: format!(
                        "{} on {}: {} {}",
                        d.id,
                        d.node,
                        o.name,
                        opt_secs(ro.measured_seconds)
                    ),
                })
            })
            .collect();
        if !points.is_empty() {
            h.push_str(&plot(
                &format!(
                    "{} of {} per drill against its objective",
                    o.name.to_uppercase(),
                    sc.scenario
                ),
                &points,
                o.target_seconds,
                &format!("{}-{}", sc.scenario, o.name),
            ));
        }
    }
    if !sc.drills.is_empty() {
        h.push_str("<table class=\"drills\"><tr><th>drill</th><th>node</th><th>started</th><th>verdict</th><th>RTO</th><th>RPO</th><th>objectives</th></tr>");
        for d in &sc.drills {
            let objs: Vec<String> = d
                .objectives
                .iter()
                .map(|o| {
                    format!(
                        "<span class=\"{}\">{} {}</span>",
                        if o.met { "ok" } else { "bad" },
                        escape(&o.name),
                        if o.met { "met" } else { "missed" }
                    )
                })
                .collect();
            let _ = write!(
                h,
                "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&d.href),
                escape(&d.id),
                escape(&d.node),
                when(d.started_at),
                if d.verdict == Verdict::Passed {
                    "ok"
                } else {
                    "bad"
                },
                d.verdict.as_str(),
                opt_secs(d.rto_seconds),
                opt_secs(d.rpo_seconds),
                objs.join(" ")
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</section>\n");
}

fn objective_row(h: &mut String, o: &ObjectivePosture) {
    let _ = write!(
        h,
        "<tr class=\"objective\" data-objective=\"{name}\" data-worst=\"{worst}\" data-median=\"{median}\" data-missed=\"{missed}\">\
         <td>{name}</td><td>{target}</td><td>{ev}</td><td>{met}</td><td class=\"{mcls}\">{missed}</td><td class=\"{ccls}\">{comp}</td><td>{w}</td><td>{m}</td><td>{trend}</td></tr>",
        name = escape(&o.name),
        worst = o
            .figures
            .worst_seconds
            .map_or_else(String::new, |v| format!("{v:.4}")),
        median = o
            .figures
            .median_seconds
            .map_or_else(String::new, |v| format!("{v:.4}")),
        target = opt_secs(o.target_seconds),
        ev = o.evidence,
        met = o.met,
        missed = o.missed,
        mcls = if o.missed == 0 { "ok" } else { "bad" },
        ccls = if o.compliance == Some(1.0) {
            "ok"
        } else {
            "bad"
        },
        comp = pct(o.compliance),
        w = opt_secs(o.figures.worst_seconds),
        m = opt_secs(o.figures.median_seconds),
        trend = trend_label(&o.figures),
    );
}

fn stats_cell(s: &CheckStats) -> String {
    format!("{} ({}/{})", pct(s.rate), s.passed, s.runs)
}

fn source(h: &mut String, service: &str, s: &SourcePosture) {
    let _ = writeln!(
        h,
        "<section class=\"item source\" id=\"source-{svc}-{name}\" data-source=\"{name}\" data-restore-pass-rate=\"{rr}\" data-freshness-compliance=\"{fc}\">\
         <h3>Backup source {name} <span class=\"muted\">{kind} on {nodes} · RPO {rpo} · RTO {rto}</span></h3>\
         <table><tr><th>freshness (RPO compliance)</th><th>integrity</th><th>restore tests</th><th>restores within RTO</th><th>restore worst</th><th>restore median</th><th>trend</th></tr>\
         <tr><td>{f}</td><td>{i}</td><td class=\"restore-pass-rate\">{r}</td><td>{w}</td><td>{worst}</td><td>{median}</td><td>{trend}</td></tr></table>",
        svc = escape(service),
        name = escape(&s.source),
        rr = s
            .restore
            .rate
            .map_or_else(String::new, |r| format!("{r:.4}")),
        fc = s
            .freshness
            .rate
            .map_or_else(String::new, |r| format!("{r:.4}")),
        kind = s.kind.map_or("", |k| k.as_str()),
        nodes = escape(&s.nodes.join(", ")),
        rpo = opt_secs(s.rpo_seconds),
        rto = opt_secs(s.rto_seconds),
        f = stats_cell(&s.freshness),
        i = stats_cell(&s.integrity),
        r = stats_cell(&s.restore),
        w = if s.rto_seconds.is_some() {
            stats_cell(&s.restores_within_rto)
        } else {
            "no RTO set".into()
        },
        worst = opt_secs(s.restore_duration.worst_seconds),
        median = opt_secs(s.restore_duration.median_seconds),
        trend = trend_label(&s.restore_duration),
    );
    let points: Vec<Point> = s
        .checks
        .iter()
        .filter(|c| c.check == CheckKind::Restore)
        .filter_map(|c| {
            Some(Point {
                at: c.started,
                value: c.restore_seconds?,
                ok: c.status == Status::Healthy
                    && s.rto_seconds
                        .is_none_or(|r| c.restore_seconds.is_some_and(|v| v <= r)),
                href: c.href.clone(),
                label: format!("{} on {}: {}", c.id, c.node, opt_secs(c.restore_seconds)),
            })
        })
        .collect();
    if !points.is_empty() {
        h.push_str(&plot(
            &format!(
                "restore + verification time of {} against its RTO",
                s.source
            ),
            &points,
            s.rto_seconds,
            &format!("{}-restore", s.source),
        ));
    }
    h.push_str("</section>\n");
}

fn gaps(h: &mut String, p: &Posture) {
    h.push_str("<section class=\"item\"><h2 id=\"gaps\">Gaps</h2>");
    if p.gaps.is_empty() {
        h.push_str("<p class=\"ok\">None: every configured scenario ran on schedule, every source was restore-tested, every objective has evidence.</p>");
    } else {
        h.push_str("<table><tr><th>kind</th><th>service</th><th>node</th><th>what</th><th>detail</th></tr>");
        for g in &p.gaps {
            let _ = write!(
                h,
                "<tr class=\"gap\" data-kind=\"{k}\" data-subject=\"{s}\"><td class=\"warn\">{k}</td><td>{svc}</td><td>{n}</td><td>{s}</td><td>{d}</td></tr>",
                k = escape(&g.kind),
                svc = escape(&g.service),
                n = escape(&g.node),
                s = escape(&g.subject),
                d = escape(&g.detail)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>\n");
}

fn evidence(h: &mut String, p: &Posture) {
    let checks: Vec<_> = p
        .services
        .iter()
        .flat_map(|s| {
            s.sources
                .iter()
                .flat_map(|src| src.checks.iter().map(move |c| (src, c)))
        })
        .collect();
    if checks.is_empty() {
        return;
    }
    h.push_str("<h2 id=\"evidence\">Backup check records</h2><table><tr><th>record</th><th>node</th><th>source</th><th>check</th><th>started</th><th>status</th><th>restore</th><th>summary</th></tr>");
    for (src, c) in checks {
        let _ = write!(
            h,
            "<tr id=\"check-{id}\"><td>{id}</td><td>{n}</td><td>{s}</td><td>{k}</td><td>{t}</td><td class=\"{cls}\">{st}</td><td>{r}</td><td>{sum}</td></tr>",
            id = escape(&c.id),
            n = escape(&c.node),
            s = escape(&src.source),
            k = c.check.as_str(),
            t = when(c.started),
            cls = if c.status == Status::Healthy {
                "ok"
            } else {
                "bad"
            },
            st = crate::backup::event::status_str(c.status),
            r = opt_secs(c.restore_seconds),
            sum = escape(&c.summary)
        );
    }
    h.push_str("</table>\n");
}

/// One point of a plot.
struct Point {
    at: f64,
    value: f64,
    ok: bool,
    href: String,
    label: String,
}

/// An SVG plot of `points` over time against the `target` line.
fn plot(title: &str, points: &[Point], target: Option<f64>, id: &str) -> String {
    const W: f64 = 720.0;
    const H: f64 = 200.0;
    const L: f64 = 70.0;
    const R: f64 = 20.0;
    const T: f64 = 26.0;
    const B: f64 = 34.0;
    let top = points
        .iter()
        .map(|p| p.value)
        .chain(target)
        .fold(0.0_f64, f64::max)
        .max(1e-3)
        * 1.15;
    let (t0, t1) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.at), b.max(p.at))
        });
    let span = (t1 - t0).max(1e-9);
    let x = |t: f64| {
        if points.len() == 1 {
            L + (W - L - R) / 2.0
        } else {
            L + (t - t0) / span * (W - L - R - 10.0) + 5.0
        }
    };
    let y = |v: f64| T + (1.0 - v / top) * (H - T - B);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"plot\" id=\"plot-{id}\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{t}\" xmlns=\"http://www.w3.org/2000/svg\"><title>{t}</title>\
         <text x=\"{L}\" y=\"16\" font-size=\"13\" font-weight=\"600\" fill=\"#1f2328\">{t}</text>\
         <rect x=\"{L}\" y=\"{T}\" width=\"{pw}\" height=\"{ph}\" fill=\"#f6f8fa\" stroke=\"#d0d7de\"/>",
        id = escape(id),
        t = escape(title),
        pw = W - L - R,
        ph = H - T - B,
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = top / 1.15 * frac;
        let _ = write!(
            s,
            "<line x1=\"{L}\" x2=\"{x2}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#d0d7de\" stroke-width=\"0.5\"/><text x=\"{tx}\" y=\"{ty:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#57606a\">{label}</text>",
            x2 = W - R,
            yy = y(v),
            tx = L - 6.0,
            ty = y(v) + 4.0,
            label = duration(v)
        );
    }
    let _ = write!(
        s,
        "<text x=\"{L}\" y=\"{yb}\" font-size=\"11\" fill=\"#57606a\">{a}</text><text x=\"{xr}\" y=\"{yb}\" font-size=\"11\" text-anchor=\"end\" fill=\"#57606a\">{b}</text>",
        yb = H - 12.0,
        xr = W - R,
        a = when(t0),
        b = when(t1)
    );
    if let Some(t) = target {
        let _ = write!(
            s,
            "<line class=\"objective-line\" x1=\"{L}\" x2=\"{x2}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#cf222e\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/><text x=\"{tx}\" y=\"{ty:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#cf222e\">objective {label}</text>",
            x2 = W - R,
            yy = y(t),
            tx = W - R - 4.0,
            ty = y(t) - 4.0,
            label = duration(t)
        );
    }
    if points.len() > 1 {
        let path: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.at), y(p.value)))
            .collect();
        let _ = write!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#8c959f\" stroke-width=\"1\"/>",
            path.join(" ")
        );
    }
    for p in points {
        let _ = write!(
            s,
            "<a href=\"{href}\"><circle class=\"point {cls}\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"5\" fill=\"{fill}\" stroke=\"#fff\" data-value=\"{v:.4}\"><title>{label}</title></circle></a>",
            href = escape(&p.href),
            cls = if p.ok { "met" } else { "missed" },
            cx = x(p.at),
            cy = y(p.value),
            fill = if p.ok { "#1a7f37" } else { "#cf222e" },
            v = p.value,
            label = escape(&p.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The Markdown document.
pub fn markdown(p: &Posture) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# DR posture, {} to {}\n", when(p.since), when(p.until));
    let nodes: Vec<String> = p
        .nodes
        .iter()
        .map(|n| {
            if n.status == "ok" {
                n.node.clone()
            } else {
                format!(
                    "{} (**unreachable**: {})",
                    n.node,
                    n.error.as_deref().unwrap_or("")
                )
            }
        })
        .collect();
    let t = &p.totals;
    let _ = writeln!(
        m,
        "Nodes: {}\n\n| drills | drill pass rate | objectives met / missed | restore tests | restore pass rate | gaps |\n| --- | --- | --- | --- | --- | --- |\n| {} | {} | {} / {} | {} | {} | {} |\n",
        nodes.join(", "),
        t.drills,
        pct(t.drill_pass_rate),
        t.objectives_met,
        t.objectives_missed,
        t.restore_tests,
        pct(t.restore_pass_rate),
        t.gaps
    );
    for s in &p.services {
        let _ = writeln!(
            m,
            "## {}{}\n",
            s.service,
            s.tier
                .as_ref()
                .map_or_else(String::new, |t| format!(" ({t})"))
        );
        if !s.scenarios.is_empty() {
            m.push_str("| scenario | runs | pass rate | objective | target | compliance | missed | worst | median | trend | latest drill |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
            for sc in &s.scenarios {
                let latest = sc
                    .drills
                    .last()
                    .map_or_else(|| "—".into(), |d| format!("[{}]({})", d.id, d.href));
                if sc.objectives.is_empty() {
                    let _ = writeln!(
                        m,
                        "| {} | {} | {} | — | — | — | — | — | — | — | {latest} |",
                        sc.scenario,
                        sc.runs,
                        pct(sc.pass_rate)
                    );
                }
                for o in &sc.objectives {
                    let _ = writeln!(
                        m,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {latest} |",
                        sc.scenario,
                        sc.runs,
                        pct(sc.pass_rate),
                        o.name,
                        opt_secs(o.target_seconds),
                        pct(o.compliance),
                        o.missed,
                        opt_secs(o.figures.worst_seconds),
                        opt_secs(o.figures.median_seconds),
                        o.figures.trend.direction
                    );
                }
            }
            m.push('\n');
        }
        if !s.sources.is_empty() {
            m.push_str("| source | freshness (RPO compliance) | integrity | restore tests | within RTO | restore worst | restore median | trend |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n");
            for src in &s.sources {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    src.source,
                    stats_cell(&src.freshness),
                    stats_cell(&src.integrity),
                    stats_cell(&src.restore),
                    if src.rto_seconds.is_some() {
                        stats_cell(&src.restores_within_rto)
                    } else {
                        "no RTO".into()
                    },
                    opt_secs(src.restore_duration.worst_seconds),
                    opt_secs(src.restore_duration.median_seconds),
                    src.restore_duration.trend.direction
                );
            }
            m.push('\n');
        }
    }
    m.push_str("## Gaps\n\n");
    if p.gaps.is_empty() {
        m.push_str("None.\n");
    } else {
        m.push_str("| kind | service | node | what | detail |\n| --- | --- | --- | --- | --- |\n");
        for g in &p.gaps {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} |",
                g.kind, g.service, g.node, g.subject, g.detail
            );
        }
    }
    m
}

/// One JUnit case.
struct Case {
    name: String,
    class: String,
    failure: Option<String>,
}

fn objective_case(service: &str, sc: &ScenarioPosture, o: &ObjectivePosture) -> Case {
    let failure = if o.evidence == 0 {
        Some("no drill in the period judged this objective".to_owned())
    } else if o.missed > 0 {
        Some(format!(
            "missed in {} of {} drills (target {}, worst {})",
            o.missed,
            o.evidence,
            opt_secs(o.target_seconds),
            opt_secs(o.figures.worst_seconds)
        ))
    } else {
        None
    };
    Case {
        name: format!("{} {}", sc.scenario, o.name),
        class: format!("posture.{service}"),
        failure,
    }
}

fn source_cases(service: &str, s: &SourcePosture) -> Vec<Case> {
    let class = format!("posture.{service}");
    let judge = |what: &str, st: &CheckStats| match st.rate {
        None => Some(format!("no {what} in the period")),
        Some(r) if r < 1.0 => Some(format!("{} of {} {what} passed", st.passed, st.runs)),
        Some(_) => None,
    };
    let mut out = vec![
        Case {
            name: format!("{} rpo", s.source),
            class: class.clone(),
            failure: judge("freshness checks", &s.freshness),
        },
        Case {
            name: format!("{} restore-test", s.source),
            class: class.clone(),
            failure: judge("restore tests", &s.restore),
        },
    ];
    if s.rto_seconds.is_some() {
        out.push(Case {
            name: format!("{} rto", s.source),
            class,
            failure: judge("timed restore tests within the RTO", &s.restores_within_rto),
        });
    }
    out
}

/// JUnit XML: a suite per service; a case per scenario objective, and per source its RPO
/// (freshness compliance), restore-test pass rate and (with an RTO) restores within it, over
/// the report's period. A case fails when anything in the period missed, or nothing judged it.
pub fn junit(p: &Posture) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let suites: Vec<(String, Vec<Case>)> = p
        .services
        .iter()
        .map(|s| {
            let mut cases: Vec<Case> = s
                .scenarios
                .iter()
                .flat_map(|sc| {
                    sc.objectives
                        .iter()
                        .map(move |o| objective_case(&s.service, sc, o))
                })
                .collect();
            cases.extend(
                s.sources
                    .iter()
                    .flat_map(|src| source_cases(&s.service, src)),
            );
            (s.service.clone(), cases)
        })
        .collect();
    let total: usize = suites.iter().map(|s| s.1.len()).sum();
    let failed: usize = suites
        .iter()
        .map(|s| s.1.iter().filter(|c| c.failure.is_some()).count())
        .sum();
    let _ = writeln!(
        x,
        "<testsuites name=\"DR posture {} to {}\" tests=\"{total}\" failures=\"{failed}\">",
        day(p.since),
        day(p.until)
    );
    for (service, cases) in suites {
        let f = cases.iter().filter(|c| c.failure.is_some()).count();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" timestamp=\"{}\">",
            escape(&service),
            cases.len(),
            crate::timefmt::format_utc(p.until)
        );
        for c in cases {
            let _ = write!(
                x,
                "    <testcase name=\"{}\" classname=\"{}\"",
                escape(&c.name),
                escape(&c.class)
            );
            match c.failure {
                Some(msg) => {
                    let _ = writeln!(
                        x,
                        "><failure message=\"{0}\">{0}</failure></testcase>",
                        escape(&msg)
                    );
                }
                None => x.push_str("/>\n"),
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::posture::report::{Figures, Gap, NodeStatus, Totals, Trend};

    fn posture() -> Posture {
        let fig = |w: f64| Figures {
            measured: 2,
            worst_seconds: Some(w),
            median_seconds: Some(w / 2.0),
            trend: Trend {
                direction: "stable".into(),
                slope_seconds_per_day: Some(0.0),
                points: 2,
            },
        };
        Posture {
            version: 1,
            since: 1_790_000_000.0,
            until: 1_790_086_400.0,
            service_filter: None,
            nodes: vec![NodeStatus {
                node: "n<1>".into(),
                status: "ok".into(),
                error: None,
                drills: 2,
                checks: 0,
                skipped: 0,
            }],
            totals: Totals::default(),
            services: vec![ServicePosture {
                service: "shop".into(),
                tier: Some("tier-1".into()),
                scenarios: vec![ScenarioPosture {
                    scenario: "web".into(),
                    nodes: vec!["n<1>".into()],
                    runs: 2,
                    passed: 1,
                    pass_rate: Some(0.5),
                    last_run_at: Some(1_790_000_100.0),
                    objectives: vec![ObjectivePosture {
                        name: "rto".into(),
                        target_seconds: Some(1.0),
                        evidence: 2,
                        met: 1,
                        missed: 1,
                        compliance: Some(0.5),
                        figures: fig(2.0),
                    }],
                    drills: Vec::new(),
                }],
                sources: Vec::new(),
            }],
            gaps: vec![Gap {
                kind: "scenario-not-run".into(),
                service: "shop".into(),
                node: "n<1>".into(),
                subject: "never".into(),
                detail: "configured, never run in the period".into(),
            }],
        }
    }

    #[test]
    fn html_escapes_and_carries_the_figures() {
        let h = html(&posture());
        assert!(h.contains("n&lt;1&gt;") && !h.contains("n<1>"), "{h}");
        assert!(h.contains("data-pass-rate=\"0.5000\""));
        assert!(h.contains("data-worst=\"2.0000\""));
        assert!(h.contains("data-kind=\"scenario-not-run\""));
        assert!(h.contains("@media print"));
        assert!(!h.contains("<script"));
    }

    #[test]
    fn junit_fails_a_missed_objective_and_markdown_lists_gaps() {
        let x = junit(&posture());
        assert!(x.contains("<testcase name=\"web rto\" classname=\"posture.shop\"><failure message=\"missed in 1 of 2 drills"), "{x}");
        assert!(x.contains("tests=\"1\" failures=\"1\""), "{x}");
        let m = markdown(&posture());
        assert!(m.contains("| scenario-not-run | shop |"), "{m}");
        assert!(
            m.contains("| web | 2 | 50.0 % | rto | 1.000 s | 50.0 % | 1 |"),
            "{m}"
        );
    }
}
