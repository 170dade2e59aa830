//! JUnit XML: one `<testsuite>` per drill (the scenario), one `<testcase>` per objective
//! (`rto`, `rpo`), so CI pipelines show a missed objective as a failed test. A drill that
//! could not measure (steady state failed, aborted, error) marks each objective as an error
//! with the reason; a drill without objectives has one `drill` test case for its verdict.

use std::fmt::Write as _;

use super::{DrillReport, Verdict, secs};

/// XML-escapes text for attributes and element content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// Renders the report as JUnit XML.
pub fn render(r: &DrillReport) -> String {
    let measured = matches!(r.verdict, Verdict::Passed | Verdict::Failed);
    struct Case {
        name: String,
        failure: Option<String>,
        error: Option<String>,
        out: String,
    }
    let mut cases = Vec::new();
    for o in &r.objectives {
        let out = format!(
            "target {}; measured {}{}; {}",
            secs(o.target_seconds),
            o.measured_seconds.map_or("—".into(), secs),
            o.precision_seconds
                .map_or(String::new(), |p| format!(" ± {}", secs(p))),
            o.detail
        );
        let (failure, error) = if !measured {
            (
                None,
                Some(format!("drill {}: {}", r.verdict.as_str(), r.reason)),
            )
        } else if o.met {
            (None, None)
        } else {
            (
                Some(format!("{} objective missed: {out}", o.name.to_uppercase())),
                None,
            )
        };
        cases.push(Case {
            name: o.name.clone(),
            failure,
            error,
            out,
        });
    }
    if cases.is_empty() {
        let bad = r.verdict != Verdict::Passed;
        cases.push(Case {
            name: "drill".into(),
            failure: None,
            error: bad.then(|| format!("drill {}: {}", r.verdict.as_str(), r.reason)),
            out: r.reason.clone(),
        });
    }
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let errors = cases.iter().filter(|c| c.error.is_some()).count();
    let time = (r.finished_at - r.started_at).max(0.0);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"faultline drills\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">",
        cases.len()
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{}\" id=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\" timestamp=\"{}\">",
        escape(&r.scenario),
        escape(&r.id),
        cases.len(),
        crate::timefmt::format_utc(r.started_at)
    );
    let _ = writeln!(x, "    <properties>");
    for (k, v) in [
        ("verdict", r.verdict.as_str().to_owned()),
        ("requester", r.requester.clone()),
        (
            "probe_interval_seconds",
            r.probe_interval_seconds.to_string(),
        ),
    ] {
        let _ = writeln!(x, "      <property name=\"{k}\" value=\"{}\"/>", escape(&v));
    }
    let _ = writeln!(x, "    </properties>");
    for c in &cases {
        let _ = write!(
            x,
            "    <testcase name=\"{}\" classname=\"faultline.drill.{}\" time=\"{time:.3}\">",
            escape(&c.name),
            escape(&r.scenario)
        );
        if let Some(f) = &c.failure {
            let _ = write!(
                x,
                "<failure message=\"{}\" type=\"objective-missed\">{}</failure>",
                escape(f),
                escape(f)
            );
        }
        if let Some(e) = &c.error {
            let _ = write!(
                x,
                "<error message=\"{}\" type=\"{}\">{}</error>",
                escape(e),
                r.verdict.as_str(),
                escape(e)
            );
        }
        let _ = writeln!(x, "<system-out>{}</system-out></testcase>", escape(&c.out));
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    #[test]
    fn one_case_per_objective_with_the_missed_one_failed() {
        let x = render(&fixture::report());
        assert!(x.contains("tests=\"2\" failures=\"1\" errors=\"0\""), "{x}");
        assert!(x.contains("<testcase name=\"rto\""));
        let rpo = x.split("<testcase name=\"rpo\"").nth(1).unwrap();
        assert!(rpo.contains("<failure"), "{rpo}");
        let rto = x
            .split("<testcase name=\"rto\"")
            .nth(1)
            .unwrap()
            .split("</testcase>")
            .next()
            .unwrap();
        assert!(!rto.contains("<failure"), "{rto}");
        // Escaping of the scenario name `web <restart>`.
        assert!(x.contains("web &lt;restart&gt;"));
    }

    #[test]
    fn unmeasured_drills_are_errors() {
        let mut r = fixture::report();
        r.verdict = Verdict::SteadyStateFailed;
        let x = render(&r);
        assert!(x.contains("failures=\"0\" errors=\"2\""), "{x}");
        r.objectives.clear();
        let x = render(&r);
        assert!(
            x.contains("<testcase name=\"drill\"") && x.contains("<error"),
            "{x}"
        );
        assert_eq!(escape("a\u{1}b&"), "a?b&amp;");
    }
}
