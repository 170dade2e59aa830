//! The RPO canary: a writer that records marker `{seq}` stamped `{ts_ms}` every interval
//! (a command or an HTTP call; exit 0 / 2xx is an acknowledged write), and a reader that
//! reports the newest marker that survived recovery.
//!
//! Reader output ([`parse_survivor`]): `SEQ`, `SEQ TS_MS` (whitespace or `|` separated, as
//! `psql -At` prints), or JSON `{"seq": N, "ts_ms": T}`; empty output means no marker
//! survived.

use std::time::Duration;

use super::measure::Survivor;
use super::probe::{http_call, http_client, run_command};
use super::scenario::CanaryIo;

/// `{seq}` and `{ts_ms}` substituted.
pub fn fill(template: &str, seq: u64, ts_ms: u64) -> String {
    template
        .replace("{seq}", &seq.to_string())
        .replace("{ts_ms}", &ts_ms.to_string())
}

/// Parses the reader's answer. `Ok(None)`: no marker survived.
pub fn parse_survivor(text: &str) -> Result<Option<Survivor>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if t.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(t).map_err(|e| format!("reader JSON: {e}"))?;
        let seq = v
            .get("seq")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| "reader JSON lacks a numeric \"seq\"".to_owned())?;
        let at = v
            .get("ts_ms")
            .and_then(serde_json::Value::as_f64)
            .map(|ms| ms / 1000.0);
        return Ok(Some(Survivor { seq, at }));
    }
    let line = t.lines().next().unwrap_or("");
    let mut parts = line
        .split(|c: char| c.is_whitespace() || c == '|' || c == ',')
        .filter(|p| !p.is_empty());
    let seq = parts
        .next()
        .and_then(|p| p.parse::<u64>().ok())
        .ok_or_else(|| format!("reader printed {line:?}; expected `SEQ [TS_MS]`"))?;
    let at = match parts.next() {
        Some(p) => Some(
            p.parse::<f64>()
                .map_err(|_| format!("reader printed {line:?}; TS_MS {p:?} is not a number"))?
                / 1000.0,
        ),
        None => None,
    };
    Ok(Some(Survivor { seq, at }))
}

/// One call of a canary side; `Ok(stdout or body)` on success.
pub async fn call(io: &CanaryIo, seq: u64, ts_ms: u64, writer: bool) -> Result<String, String> {
    if let Some(argv) = &io.command {
        let argv: Vec<String> = argv.iter().map(|a| fill(a, seq, ts_ms)).collect();
        let out = run_command(&argv, io.timeout.0).await?;
        return if out.code == Some(0) {
            Ok(out.stdout)
        } else {
            Err(format!(
                "exit {}: {}",
                out.code.map_or("by a signal".into(), |c| c.to_string()),
                out.stderr.trim()
            ))
        };
    }
    if let Some(h) = &io.http {
        let client = http_client(io.timeout.0);
        let method = h
            .method
            .clone()
            .unwrap_or_else(|| if writer { "POST" } else { "GET" }.into());
        let url = fill(&h.url, seq, ts_ms);
        let body = h.body.as_ref().map(|b| fill(b, seq, ts_ms));
        let (status, text) = http_call(&client, &method, &url, body, io.timeout.0).await?;
        return if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(format!("HTTP {status}"))
        };
    }
    Err("canary side has neither command nor http".into())
}

/// Reads the newest surviving marker, retrying briefly (a just-restored service may need a
/// moment more than the probes did).
pub async fn read(io: &CanaryIo, attempts: usize) -> Result<Option<Survivor>, String> {
    let mut last = String::new();
    for i in 0..attempts.max(1) {
        match call(io, 0, 0, false).await {
            Ok(text) => return parse_survivor(&text),
            Err(e) => last = e,
        }
        if i + 1 < attempts {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_formats() {
        assert_eq!(parse_survivor("  \n").unwrap(), None);
        assert_eq!(
            parse_survivor("42\n").unwrap(),
            Some(Survivor { seq: 42, at: None })
        );
        assert_eq!(
            parse_survivor("42|1700000000500\n").unwrap(),
            Some(Survivor {
                seq: 42,
                at: Some(1_700_000_000.5)
            })
        );
        assert_eq!(
            parse_survivor("{\"seq\": 7, \"ts_ms\": 2000}").unwrap(),
            Some(Survivor {
                seq: 7,
                at: Some(2.0)
            })
        );
        assert!(parse_survivor("nope").is_err());
        assert!(parse_survivor("3 x").is_err());
        assert!(parse_survivor("{\"s\":1}").is_err());
        assert_eq!(fill("v({seq},{ts_ms})", 3, 99), "v(3,99)");
    }

    #[tokio::test]
    async fn command_sides() {
        let io = CanaryIo {
            command: Some(vec!["echo".into(), "{seq} {ts_ms}".into()]),
            http: None,
            timeout: faultline_chaos::units::HumanDuration(Duration::from_secs(5)),
        };
        assert_eq!(call(&io, 5, 1000, true).await.unwrap().trim(), "5 1000");
        let fail = CanaryIo {
            command: Some(vec!["false".into()]),
            ..io
        };
        assert!(read(&fail, 1).await.is_err());
    }
}
