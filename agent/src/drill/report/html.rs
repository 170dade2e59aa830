//! The drill as a self-contained HTML page (no scripts, no external resources): a header
//! with the verdict, one card per objective (measured ± precision against the target), and
//! an inline SVG timeline — phases, fault windows, every probe round (green pass, red fail),
//! canary markers (kept or lost), the fault and recovery points and the RTO/RPO targets
//! drawn as lines — then the event table.

use std::fmt::Write as _;

use super::junit::escape;
use super::{DrillReport, EventKind, secs};

const W: f64 = 1100.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 20.0;

/// Renders the page.
pub fn render(r: &DrillReport) -> String {
    let color = match r.verdict {
        super::Verdict::Passed => "#1a7f37",
        super::Verdict::Running => "#57606a",
        _ => "#cf222e",
    };
    let mut h = head(&format!("faultline drill {} — {}", r.id, r.scenario), color);
    h.push_str(&body(r));
    h.push_str("</body></html>\n");
    h
}

/// The document up to and including `<body>`: the title and the shared style sheet, with
/// `badge_color` for the verdict badge (also used by the game-day page).
pub fn head(title: &str, badge_color: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:24px;color:#1f2328;background:#fff}}\
         h1{{font-size:22px;margin:0 0 4px}}.badge{{display:inline-block;padding:3px 10px;border-radius:12px;color:#fff;font-weight:600;background:{badge_color}}}\
         .cards{{display:flex;flex-wrap:wrap;gap:16px;margin:16px 0}}svg{{max-width:100%;height:auto}}.card{{border:1px solid #d0d7de;border-radius:8px;padding:12px 16px;min-width:220px}}\
         .met{{color:#1a7f37;font-weight:700}}.missed{{color:#cf222e;font-weight:700}}\
         table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #d0d7de;padding:3px 8px;text-align:left}}\
         .muted{{color:#57606a}}</style></head><body>\n",
        title = escape(title),
    )
}

/// The colour of a drill phase in the timelines.
pub fn phase_color(name: &str) -> &'static str {
    match name {
        "steady-state" => "#54aeff",
        "faults" => "#ff8182",
        "detection" => "#d4a72c",
        "recovery" => "#4ac26b",
        "verification" => "#8250df",
        _ => "#8c959f",
    }
}

/// The report's content (header, objective cards, the SVG timeline, the event table),
/// without the document around it: the drill page's body, and one section of the game-day
/// page per drill.
pub fn body(r: &DrillReport) -> String {
    let mut h = String::with_capacity(32 * 1024);
    let verdict = r.verdict.as_str();
    let color = match r.verdict {
        super::Verdict::Passed => "#1a7f37",
        super::Verdict::Running => "#57606a",
        _ => "#cf222e",
    };
    let _ = writeln!(
        h,
        "<h1>Drill <code>{}</code> — {}</h1><p><span class=\"badge\" id=\"verdict\" style=\"background:{color}\">{}</span> \
         <span class=\"muted\">{} · started {} · {} · by {}</span></p><p>{}</p>",
        escape(&r.id),
        escape(&r.scenario),
        escape(&verdict.to_uppercase()),
        escape(&r.description),
        crate::timefmt::format_utc(r.started_at),
        secs(r.finished_at - r.started_at),
        escape(&r.requester),
        escape(&r.reason)
    );
    h.push_str("<div class=\"cards\">\n");
    for o in &r.objectives {
        let _ = writeln!(
            h,
            "<div class=\"card\" id=\"objective-{}\"><div class=\"muted\">{}</div>\
             <div style=\"font-size:26px\">{}{}</div><div>target {} — <span class=\"{}\">{}</span></div>\
             <div class=\"muted\">{}</div></div>",
            escape(&o.name),
            escape(&o.name.to_uppercase()),
            o.measured_seconds.map_or("—".into(), secs),
            o.precision_seconds
                .map_or(String::new(), |p| format!(" <small>± {}</small>", secs(p))),
            secs(o.target_seconds),
            if o.met { "met" } else { "missed" },
            if o.met { "MET" } else { "MISSED" },
            escape(&o.detail)
        );
    }
    if let Some(d) = r.detection_seconds {
        let _ = writeln!(
            h,
            "<div class=\"card\"><div class=\"muted\">DETECTION</div><div style=\"font-size:26px\">{}</div>\
             <div class=\"muted\">fault → first failing probe</div></div>",
            secs(d)
        );
    }
    h.push_str("</div>\n");
    svg(&mut h, r);
    h.push_str("<h2>Timeline</h2><table><tr><th>t</th><th>event</th><th>name</th><th>ok</th><th>detail</th></tr>\n");
    for e in r
        .timeline
        .iter()
        .filter(|e| !matches!(e.kind, EventKind::Probe | EventKind::Marker))
    {
        let _ = writeln!(
            h,
            "<tr><td>+{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            secs(e.at - r.started_at),
            e.kind,
            escape(&e.name),
            e.ok.map_or("", |ok| if ok { "✓" } else { "✗" }),
            escape(&e.detail)
        );
    }
    h.push_str("</table>\n");
    h
}

/// A label's estimated width: 6.5 px a character of the 11 px font, generous for the
/// labels used here.
fn label_width(text: &str) -> f64 {
    text.chars().count() as f64 * 6.5
}

/// Where a label of `text` next to `x` goes, and its anchor: to the right of `x`, or to its
/// left (anchored at its end) where it would run past the picture's right edge.
fn label_at(x: f64, text: &str) -> (f64, &'static str) {
    if x + 3.0 + label_width(text) > W - 2.0 {
        (x - 3.0, "end")
    } else {
        (x + 3.0, "start")
    }
}

/// The labels of the vertical lines, placed so that none covers another: each goes to the
/// right of its line, else to its left, on the first of its rows where it overlaps no label
/// placed before it (on the first row, as [`label_at`] says, when none is free).
#[derive(Default)]
struct Labels {
    /// Placed: (row's y, left, right).
    placed: Vec<(f64, f64, f64)>,
}

impl Labels {
    /// (x, anchor, y) for `text` next to `x`, on one of `rows`.
    fn place(&mut self, x: f64, text: &str, rows: &[f64]) -> (f64, &'static str, f64) {
        let w = label_width(text);
        let free = |placed: &[(f64, f64, f64)], y: f64, a: f64, b: f64| {
            a >= 2.0
                && b <= W - 2.0
                && placed
                    .iter()
                    .all(|&(py, pa, pb)| py != y || b + 4.0 <= pa || a >= pb + 4.0)
        };
        let spot = rows
            .iter()
            .flat_map(|&y| [(x + 3.0, "start", y), (x - 3.0, "end", y)])
            .find(|&(at, anchor, y)| {
                let (a, b) = if anchor == "start" {
                    (at, at + w)
                } else {
                    (at - w, at)
                };
                free(&self.placed, y, a, b)
            })
            .unwrap_or_else(|| {
                let (at, anchor) = label_at(x, text);
                (at, anchor, rows.first().copied().unwrap_or(14.0))
            });
        let (a, b) = if spot.1 == "start" {
            (spot.0, spot.0 + w)
        } else {
            (spot.0 - w, spot.0)
        };
        self.placed.push((spot.2, a, b));
        spot
    }
}

fn svg(h: &mut String, r: &DrillReport) {
    let t0 = r.started_at;
    let t1 = r.finished_at.max(t0 + 0.001);
    let span = t1 - t0;
    let x = |t: f64| LEFT + (t - t0).clamp(0.0, span) / span * (W - LEFT - RIGHT);
    let lanes = ["phases", "faults", "probes", "canary"];
    let lane_y = |i: usize| 30.0 + i as f64 * 46.0;
    let height = lane_y(lanes.len()) + 40.0;
    let _ = writeln!(
        h,
        "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" \
         viewBox=\"0 0 {W} {height}\" font-size=\"11\" font-family=\"system-ui,sans-serif\">\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{height}\" fill=\"#f6f8fa\"/>"
    );
    for (i, name) in lanes.iter().enumerate() {
        let _ = writeln!(
            h,
            "<text x=\"8\" y=\"{}\" fill=\"#57606a\">{name}</text>\
             <line x1=\"{LEFT}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#d0d7de\"/>",
            lane_y(i) + 20.0,
            W - RIGHT,
            lane_y(i) + 36.0,
            lane_y(i) + 36.0
        );
    }
    for p in &r.phases {
        let c = phase_color(&p.name);
        let (a, b) = (x(p.start), x(p.end).max(x(p.start) + 2.0));
        let _ = writeln!(
            h,
            "<rect x=\"{a:.1}\" y=\"{}\" width=\"{:.1}\" height=\"28\" fill=\"{c}\" opacity=\"0.8\"><title>{} {}</title></rect>\
             <text x=\"{:.1}\" y=\"{}\" fill=\"#fff\">{}</text>",
            lane_y(0),
            b - a,
            escape(&p.name),
            secs(p.end - p.start),
            a + 3.0,
            lane_y(0) + 18.0,
            if b - a > 60.0 {
                escape(&p.name)
            } else {
                String::new()
            }
        );
    }
    for f in &r.faults {
        let a = x(f.applied_at);
        let b = f.reverted_at.map_or(x(t1), x).max(a + 3.0);
        // After the bar, or before it where the bar reaches the right edge.
        let label = match label_at(b, &f.kind) {
            (_, "end") => (a - 3.0, "end"),
            fits => fits,
        };
        let _ = writeln!(
            h,
            "<rect class=\"fault\" x=\"{a:.1}\" y=\"{}\" width=\"{:.1}\" height=\"28\" fill=\"#cf222e\" opacity=\"0.75\">\
             <title>{} {} → {}</title></rect><text x=\"{:.1}\" y=\"{}\" fill=\"#1f2328\" text-anchor=\"{}\">{}</text>",
            lane_y(1),
            b - a,
            escape(&f.kind),
            escape(&f.targets.join(", ")),
            f.reverted_at.map_or("not reverted".into(), |t| format!(
                "reverted +{}",
                secs(t - t0)
            )),
            label.0,
            lane_y(1) + 18.0,
            label.1,
            escape(&f.kind)
        );
    }
    let w = ((r.probe_interval_seconds / span) * (W - LEFT - RIGHT)).clamp(1.0, 30.0);
    for round in &r.rounds {
        let _ = writeln!(
            h,
            "<rect class=\"probe {}\" x=\"{:.1}\" y=\"{}\" width=\"{:.1}\" height=\"28\" fill=\"{}\"/>",
            if round.ok { "pass" } else { "fail" },
            x(round.at),
            lane_y(2),
            (w - 0.5).max(1.0),
            if round.ok { "#2da44e" } else { "#cf222e" }
        );
    }
    let survived = r.rpo.as_ref().and_then(|m| m.newest_surviving_seq);
    for e in r.timeline.iter().filter(|e| e.kind == EventKind::Marker) {
        let kept = matches!((e.seq, survived), (Some(s), Some(n)) if s <= n);
        let c = if e.ok != Some(true) {
            "#8c959f"
        } else if kept || survived.is_none() && r.rpo.is_none() {
            "#2da44e"
        } else {
            "#cf222e"
        };
        let _ = writeln!(
            h,
            "<line class=\"marker\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"{c}\" stroke-width=\"2\"/>",
            x(e.at),
            lane_y(3) + 4.0,
            lane_y(3) + 28.0
        );
    }
    // Above the lanes: two rows of labels; below them, one above the time axis.
    let (top, bottom) = ([13.0, 25.0], [height - 24.0]);
    let mut labels = Labels::default();
    let mut vline = |h: &mut String, t: f64, color: &str, dash: &str, label: &str, row: f64| {
        let (at, anchor, y) = labels.place(x(t), label, if row > 0.0 { &bottom } else { &top });
        let _ = writeln!(
            h,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"20\" y2=\"{1}\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/>\
             <text x=\"{at:.1}\" y=\"{y}\" fill=\"{color}\" text-anchor=\"{anchor}\">{label}</text>",
            x(t),
            lane_y(4) - 6.0,
        );
    };
    if let Some(f) = r.fault_at {
        vline(h, f, "#cf222e", "", "fault", 0.0);
        for o in &r.objectives {
            match o.name.as_str() {
                "rto" => vline(
                    h,
                    f + o.target_seconds,
                    "#bc4c00",
                    "6 3",
                    &format!("RTO target {}", secs(o.target_seconds)),
                    1.0,
                ),
                "rpo" => vline(
                    h,
                    f - o.target_seconds,
                    "#8250df",
                    "6 3",
                    &format!("RPO target {}", secs(o.target_seconds)),
                    1.0,
                ),
                _ => {}
            }
        }
    }
    if let Some(rto) = &r.rto {
        vline(
            h,
            rto.recovered_at,
            "#1a7f37",
            "",
            &format!("recovered (RTO {})", secs(rto.seconds)),
            0.0,
        );
    }
    if let (Some(f), Some(at)) = (
        r.fault_at,
        r.rpo.as_ref().and_then(|m| m.newest_surviving_at),
    ) {
        let _ = writeln!(
            h,
            "<line id=\"rpo-span\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{2}\" y2=\"{2}\" stroke=\"#8250df\" stroke-width=\"4\"><title>RPO {3}</title></line>",
            x(at),
            x(f),
            lane_y(3) + 34.0,
            secs(f - at)
        );
    }
    axis_and_close(h, t0, span, height, &x);
}

/// Ten time ticks (`+Ns` from `t0`) along the bottom of a timeline of `height`, then the end of
/// the `<svg>`; `x` maps a time to its horizontal position. Shared with the game-day report.
pub(crate) fn axis_and_close(
    h: &mut String,
    t0: f64,
    span: f64,
    height: f64,
    x: &dyn Fn(f64) -> f64,
) {
    let ticks = 10;
    for i in 0..=ticks {
        let t = t0 + span * f64::from(i) / f64::from(ticks);
        // The last label ends at its tick: centred, it would run past the right edge.
        let anchor = if i == ticks { "end" } else { "middle" };
        let _ = writeln!(
            h,
            "<text x=\"{:.1}\" y=\"{}\" fill=\"#57606a\" text-anchor=\"{anchor}\">+{}</text>",
            x(t),
            height - 8.0,
            secs(t - t0)
        );
    }
    h.push_str("</svg>\n");
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_labels_never_cover_each_other() {
        let mut l = super::Labels::default();
        let rows = [13.0, 25.0];
        let fault = l.place(700.0, "fault", &rows);
        assert_eq!(fault, (703.0, "start", 13.0));
        // Just left of it: to the left of its own line, on the same row.
        let rec = l.place(690.0, "recovered (RTO 249.0 ms)", &rows);
        assert_eq!(rec, (687.0, "end", 13.0));
        // Between them: the second row.
        let third = l.place(695.0, "RTO", &rows);
        assert_eq!(third.2, 25.0);
    }

    #[test]
    fn a_label_at_the_right_edge_is_drawn_to_the_left_of_its_line() {
        assert_eq!(super::label_at(500.0, "RTO"), (503.0, "start"));
        let (x, anchor) = super::label_at(super::W - 20.0, "recovered");
        assert_eq!(anchor, "end");
        assert!(x < super::W - 20.0);
    }

    use super::super::fixture;
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_draws_every_element() {
        let page = render(&fixture::report());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.contains("<script") && !page.contains("src=\"http"));
        assert!(page.contains("<svg id=\"timeline\""));
        assert_eq!(page.matches("class=\"probe ").count(), 40);
        assert_eq!(page.matches("class=\"probe fail\"").count(), 10);
        assert_eq!(page.matches("class=\"fault\"").count(), 1);
        assert!(page.contains("RTO target 5.000 s"));
        assert!(page.contains("id=\"rpo-span\""));
        assert!(page.contains("web &lt;restart&gt;"));
        assert!(page.contains("class=\"missed\""));
    }
}
