//! The Docker Engine API's answers as types, parsed from bytes: container inspect, the
//! container list, one line of the event stream, image inspect, an error body. Pure, so the
//! JSON Docker sends is tested as it is; what a caller makes of an answer (a fault's state, a
//! collector's metadata) is the caller's.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The part of `GET /containers/{id}/json` that faultline uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ContainerInfo {
    /// Full id.
    #[serde(rename = "Id")]
    pub id: String,
    /// Name with Docker's leading `/`.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// The image it runs, as Docker resolved it (an image id, `sha256:…`).
    #[serde(rename = "Image", default)]
    pub image: String,
    /// Run state.
    #[serde(rename = "State", default)]
    pub state: ContainerState,
    /// How it was created.
    #[serde(rename = "Config", default)]
    pub config: InspectConfig,
}

/// `State` of an inspected container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ContainerState {
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited`, `dead`.
    #[serde(rename = "Status", default)]
    pub status: String,
    /// Running (true also while paused).
    #[serde(rename = "Running", default)]
    pub running: bool,
    /// Paused.
    #[serde(rename = "Paused", default)]
    pub paused: bool,
    /// Main process pid on the host (0 when not running).
    #[serde(rename = "Pid", default)]
    pub pid: i64,
    /// When it was last started (RFC 3339).
    #[serde(rename = "StartedAt", default)]
    pub started_at: String,
}

/// `Config` of an inspected container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct InspectConfig {
    /// The image reference it was created from, as given (`app:1.2`, or an image id).
    #[serde(rename = "Image", default)]
    pub image: String,
    /// Its labels (`null` when it has none).
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

impl ContainerInfo {
    /// The name without Docker's leading `/`.
    pub fn short_name(&self) -> &str {
        self.name.trim_start_matches('/')
    }
}

/// The part of `GET /images/{id}/json` that faultline uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ImageInfo {
    /// `name:tag` references of the image (`null` when it has none).
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
}

/// One event of the `/events` stream (only what is used).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `start`, `die`, `destroy`, `rename`, … (`exec_start: sh` and the like keep their suffix).
    pub action: String,
    /// The container ID.
    pub id: String,
}

#[derive(Debug, Deserialize)]
struct ListEntry {
    #[serde(rename = "Id")]
    id: String,
}

#[derive(Debug, Deserialize)]
struct RawEvent {
    #[serde(rename = "Type", default)]
    kind: String,
    #[serde(rename = "Action", default)]
    action: String,
    #[serde(rename = "Actor", default)]
    actor: RawActor,
}

#[derive(Debug, Default, Deserialize)]
struct RawActor {
    #[serde(rename = "ID", default)]
    id: String,
}

/// `GET /containers/{id}/json`.
pub fn parse_inspect(body: &[u8]) -> Result<ContainerInfo, serde_json::Error> {
    serde_json::from_slice(body)
}

/// `GET /images/{id}/json`.
pub fn parse_image(body: &[u8]) -> Result<ImageInfo, serde_json::Error> {
    serde_json::from_slice(body)
}

/// IDs from `GET /containers/json`.
pub fn parse_list(body: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    let entries: Vec<ListEntry> = serde_json::from_slice(body)?;
    Ok(entries.into_iter().map(|e| e.id).collect())
}

/// One line of the event stream; `Ok(None)` for events that are not about a container.
pub fn parse_event(line: &[u8]) -> Result<Option<Event>, serde_json::Error> {
    let e: RawEvent = serde_json::from_slice(line)?;
    Ok(
        (e.kind == "container" && !e.actor.id.is_empty()).then_some(Event {
            action: e.action,
            id: e.actor.id,
        }),
    )
}

/// The Engine's error `message` from an error body (or the body itself).
pub fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Msg {
        message: String,
    }
    serde_json::from_slice::<Msg>(body)
        .map(|m| m.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_owned())
}

/// Whether `s` is usable as a container reference in an API path (id or name).
pub fn valid_container_ref(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4a57c14d26338e3942ed0c74fa408ccc2b867eb66855835dbda05e806e749147";

    #[test]
    fn inspect_answers_parse() {
        let body = br#"{"Id":"abc123","Name":"/web","State":{"Status":"paused","Running":true,"Paused":true,"Restarting":false,"Pid":42,"StartedAt":"2024-01-01T00:00:00Z"},"Config":{}}"#;
        let i = parse_inspect(body).unwrap();
        assert_eq!(i.short_name(), "web");
        assert!(i.state.paused && i.state.running);
        assert_eq!(i.state.pid, 42);
        assert!(parse_inspect(b"{}").is_err());
    }

    #[test]
    fn error_bodies_give_the_message() {
        assert_eq!(
            error_message(br#"{"message":"No such container: x"}"#),
            "No such container: x"
        );
        assert_eq!(error_message(b"plain\n"), "plain");
    }

    #[test]
    fn container_refs_are_checked() {
        assert!(valid_container_ref("web-1"));
        assert!(valid_container_ref("0123abcdef"));
        assert!(!valid_container_ref("../images"));
        assert!(!valid_container_ref("a?b"));
        assert!(!valid_container_ref(""));
    }

    #[test]
    fn list_and_events_parse() {
        assert_eq!(
            parse_list(format!(r#"[{{"Id":"{ID}","Names":["/a"]}}]"#).as_bytes()).unwrap(),
            vec![ID.to_owned()]
        );
        assert!(parse_list(b"{}").is_err());
        let ev = format!(
            r#"{{"status":"start","id":"{ID}","Type":"container","Action":"start","Actor":{{"ID":"{ID}","Attributes":{{"name":"a"}}}},"time":1}}"#
        );
        assert_eq!(
            parse_event(ev.as_bytes()).unwrap(),
            Some(Event {
                action: "start".into(),
                id: ID.into()
            })
        );
        assert_eq!(
            parse_event(br#"{"Type":"network","Action":"connect","Actor":{"ID":"n"}}"#).unwrap(),
            None
        );
        assert!(parse_event(b"not json").is_err());
    }
}
