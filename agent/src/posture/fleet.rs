//! The fleet's evidence: each agent's history pulled through its API (`GET /v1/history`,
//! page by page, over the one agent client), all agents at once. An agent that does not
//! answer, or answers no, is evidence of its own: the report lists it as unreachable, never
//! leaves it out silently.

use super::history::HistoryPage;
use super::report::NodeEvidence;
use crate::agent_client::AgentClient;

/// The most pages read from one agent (with [`super::history::MAX_PAGE`] items each), so a
/// misbehaving agent cannot keep the report waiting for ever.
const MAX_PAGES: usize = 500;

/// Reads one agent's history since `since` (Unix seconds).
pub async fn fetch(client: &AgentClient, since: f64) -> Result<HistoryPage, String> {
    let mut all: Option<HistoryPage> = None;
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut path = format!("/v1/history?since={since:.3}");
        if let Some(a) = &after {
            path.push_str("&after=");
            path.push_str(&percent_encode(a));
        }
        let page: HistoryPage = client
            .call_json("GET", &path, None)
            .await
            .map_err(|e| e.to_string())?;
        after = page.next.clone();
        match &mut all {
            None => all = Some(page),
            Some(acc) => {
                acc.items.extend(page.items);
                acc.skipped += page.skipped;
            }
        }
        if after.is_none() {
            return Ok(all.unwrap_or_default());
        }
    }
    Err(format!(
        "{}: more than {MAX_PAGES} pages of history; narrow --since",
        client.name()
    ))
}

/// Every agent's evidence, asked together.
pub async fn gather(clients: &[AgentClient], since: f64) -> Vec<NodeEvidence> {
    let asks = clients.iter().map(|c| async move {
        NodeEvidence {
            node: c.name().to_owned(),
            drill_href: format!("{}/v1/drills/{{id}}/html", c.base()),
            history: fetch(c, since).await,
        }
    });
    futures::future::join_all(asks).await
}

/// The query-string form of a cursor (`<time>|<id>`: ids are `[A-Za-z0-9._-]`).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Decodes `%XX` escapes of a query value (the API's side of [`percent_encode`]).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_survive_the_query_string() {
        let c = "1790000000.123|drill-1790000000123-ab_c.d";
        assert_eq!(percent_decode(&percent_encode(c)), c);
        assert!(!percent_encode(c).contains('|'));
        assert_eq!(percent_decode("a%7Cb%zz"), "a|b%zz");
    }
}
