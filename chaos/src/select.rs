//! Pod and label selectors: how a platform team names its targets ("one random pod of
//! `app=payments` in namespace `shop`") instead of container ids or process names.
//!
//! Every container fault and every process fault carries the same fields (the
//! [`with_pod_selectors!`] macro adds them to each spec struct, so the CLI flags, the API's
//! JSON, drill scenarios and game-day steps spell them alike):
//!
//! - `--namespace NS`, `--pod NAME`, `--label KEY=VALUE` (repeatable, all must hold),
//!   `--container-name NAME`: which running containers match ([`PodSelector`]);
//! - `--count N` / `--percent P`: pick N, or P % rounded up, of the matches at random
//!   ([`Pick`]; all of them when neither is given), with `--seed S` or a random seed;
//! - `--cri-socket` / `--docker-socket`: which runtime to ask (see `container/runtime.rs`).
//!
//! In JSON and YAML `label` is a list of `"key=value"` strings or a map (`{app: web}`).
//!
//! The pick is reproducible: the matches are sorted by namespace, pod, container name and
//! id, then shuffled by a generator seeded with the seed, so the same seed over the same
//! matches picks the same containers (with the same faultline build). What was matched, the
//! seed and the picks are a [`Selection`], which the plan, the audit events and the fault's
//! listing carry.
//!
//! Not here: asking the runtimes (`container/runtime.rs`), the guards a match must pass
//! (`guard.rs`), and what a fault does to its picks.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::FaultError;
use crate::fault::PodRef;
use crate::units::Percent;

/// One `key=value` label requirement.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LabelMatch {
    /// The label's key (`app`, `app.kubernetes.io/name`).
    pub key: String,
    /// The value it must have (may be empty).
    pub value: String,
}

impl LabelMatch {
    /// A requirement `key=value`. Kubernetes label keys and values hold no `=` (keys) and no
    /// whitespace, and neither may these: so `key=value` always reads back as the same pair.
    pub fn new(key: &str, value: &str) -> Result<Self, String> {
        let bad_key = key.is_empty() || key.contains('=') || key.contains(char::is_whitespace);
        if bad_key || value.contains(char::is_whitespace) {
            return Err(format!(
                "invalid label {key}={value}: expected KEY=VALUE, a non-empty key without `=`, and no whitespace"
            ));
        }
        Ok(LabelMatch {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

impl FromStr for LabelMatch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((key, value)) => LabelMatch::new(key, value),
            None => Err(format!("invalid label {s:?}: expected KEY=VALUE")),
        }
    }
}

impl fmt::Display for LabelMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// `label:` in JSON and YAML: written as a list of `"key=value"` strings, read from that, a
/// single string or a map.
pub(crate) mod labels_serde {
    use super::*;

    pub fn serialize<S: Serializer>(labels: &[LabelMatch], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(labels.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<LabelMatch>, D::Error> {
        use serde::de::Error;
        let parse = |s: &str| s.parse::<LabelMatch>().map_err(D::Error::custom);
        let text = |v: serde_json::Value| match v {
            serde_json::Value::String(s) => Ok(s),
            serde_json::Value::Number(n) => Ok(n.to_string()),
            serde_json::Value::Bool(b) => Ok(b.to_string()),
            other => Err(D::Error::custom(format!(
                "a label value must be a string, found {other}"
            ))),
        };
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(vec![parse(&s)?]),
            serde_json::Value::Array(items) => {
                items.into_iter().map(|v| parse(&text(v)?)).collect()
            }
            serde_json::Value::Object(map) => map
                .into_iter()
                .map(|(key, v)| LabelMatch::new(&key, &text(v)?).map_err(D::Error::custom))
                .collect(),
            other => Err(D::Error::custom(format!(
                "label: expected a list of \"key=value\" strings or a map, found {other}"
            ))),
        }
    }
}

/// Which running containers match: every field that is set must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSelector {
    /// The pod's namespace.
    pub namespace: Option<String>,
    /// The pod's name.
    pub pod: Option<String>,
    /// Labels of the pod (or, for a container without a pod, of the container).
    pub labels: Vec<LabelMatch>,
    /// The container's name (in its pod spec; the Docker name elsewhere).
    pub container_name: Option<String>,
}

impl PodSelector {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.namespace.is_none()
            && self.pod.is_none()
            && self.labels.is_empty()
            && self.container_name.is_none()
    }

    /// Whether `c` matches.
    pub fn matches(&self, c: &Candidate) -> bool {
        let pod = c.pod.as_ref();
        self.namespace
            .as_ref()
            .is_none_or(|ns| pod.is_some_and(|p| &p.namespace == ns))
            && self
                .pod
                .as_ref()
                .is_none_or(|name| pod.is_some_and(|p| &p.name == name))
            && self
                .container_name
                .as_ref()
                .is_none_or(|name| &c.name == name)
            && self.labels.iter().all(|want| {
                c.labels
                    .get(&want.key)
                    .is_some_and(|have| have == &want.value)
            })
    }
}

impl fmt::Display for PodSelector {
    /// `namespace=shop pod=web-1 label app=web container-name=app`: the flags as given.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(ns) = &self.namespace {
            parts.push(format!("namespace={ns}"));
        }
        if let Some(pod) = &self.pod {
            parts.push(format!("pod={pod}"));
        }
        for l in &self.labels {
            parts.push(format!("label {l}"));
        }
        if let Some(c) = &self.container_name {
            parts.push(format!("container-name={c}"));
        }
        f.write_str(&parts.join(" "))
    }
}

/// How many of the matches are picked.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Pick {
    /// All of them.
    #[default]
    All,
    /// This many (all when fewer match).
    Count(usize),
    /// This share, rounded up.
    Percent(f64),
}

impl Pick {
    /// How many of `n` matches.
    pub fn of(self, n: usize) -> usize {
        match self {
            Pick::All => n,
            Pick::Count(c) => c.min(n),
            Pick::Percent(p) => ((n as f64 * p / 100.0).ceil() as usize).min(n),
        }
    }
}

impl fmt::Display for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pick::All => f.write_str("all"),
            Pick::Count(c) => write!(f, "count={c}"),
            Pick::Percent(p) => write!(f, "percent={p}"),
        }
    }
}

/// The container runtime sockets to ask: a spec's `--cri-socket`/`--docker-socket`, or the
/// engine's defaults from the agent's config ([`crate::Env::sockets`]). `None` for both
/// means "find them": the CRI runtime whose socket exists, else the Docker Engine socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeSockets {
    /// `--cri-socket`.
    pub cri: Option<PathBuf>,
    /// `--docker-socket`.
    pub docker: Option<PathBuf>,
}

/// A spec's selector fields, checked: what to match, how many to pick, and where to look.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodQuery {
    /// What matches.
    pub selector: PodSelector,
    /// How many are picked.
    pub pick: Pick,
    /// The seed asked for, if any.
    pub seed: Option<u64>,
    /// Where to look.
    pub sockets: RuntimeSockets,
}

impl PodQuery {
    /// The query of a spec's selector fields; refuses `--count`/`--percent` without a
    /// selector, both at once, and zero.
    pub(crate) fn new(
        kind: &'static str,
        selector: PodSelector,
        count: Option<usize>,
        percent: Option<Percent>,
        seed: Option<u64>,
        sockets: RuntimeSockets,
    ) -> Result<Self, FaultError> {
        let invalid = |message: &str| FaultError::Invalid {
            kind,
            message: message.to_owned(),
        };
        let pick = match (count, percent) {
            (Some(_), Some(_)) => return Err(invalid("give --count or --percent, not both")),
            (Some(0), None) => return Err(invalid("--count must be at least 1")),
            (Some(c), None) => Pick::Count(c),
            (None, Some(p)) if p.0 <= 0.0 => {
                return Err(invalid("--percent must be above 0"));
            }
            (None, Some(p)) => Pick::Percent(p.0),
            (None, None) => Pick::All,
        };
        if pick != Pick::All && selector.is_empty() {
            return Err(invalid(
                "--count and --percent pick among the containers a pod selector matches: add --namespace, --pod, --label or --container-name",
            ));
        }
        Ok(PodQuery {
            selector,
            pick,
            seed,
            sockets,
        })
    }

    /// The selector and the pick, as recorded (`namespace=shop label app=web count=1`).
    pub fn describe(&self) -> String {
        match self.pick {
            Pick::All => self.selector.to_string(),
            pick => format!("{} {pick}", self.selector),
        }
    }
}

/// A running container a selector is matched against.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Candidate {
    /// Container id.
    pub id: String,
    /// Its name (in its pod spec; the Docker name elsewhere).
    pub name: String,
    /// Its pod, when it has one.
    pub pod: Option<PodRef>,
    /// The labels `--label` is matched against: the pod's (on a CRI runtime the sandbox
    /// carries them) over the container's own.
    pub labels: BTreeMap<String, String>,
}

impl Candidate {
    /// `shop/web-1/app (0123456789ab)`, or `app (0123456789ab)` without a pod.
    pub fn describe(&self) -> String {
        let short = self.id.get(..12).unwrap_or(&self.id);
        match &self.pod {
            Some(p) => format!("{p}/{} ({short})", self.name),
            None => format!("{} ({short})", self.name),
        }
    }

    fn sort_key(&self) -> (String, String, String, String) {
        let (ns, pod) = self
            .pod
            .as_ref()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .unwrap_or_default();
        (ns, pod, self.name.clone(), self.id.clone())
    }
}

/// What a selector matched and picked: recorded in the plan, the audit events and the
/// fault's listing, so a drill report can say which pod was hit and a pick can be replayed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// The selector and the pick as given (`namespace=shop label app=web count=1`).
    pub selector: String,
    /// Every match ([`Candidate::describe`]), sorted.
    pub matched: Vec<String>,
    /// The picked ones, sorted.
    pub picked: Vec<String>,
    /// The seed of the random pick.
    pub seed: u64,
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} matching [{}] picked by seed {}: {}",
            self.picked.len(),
            self.matched.len(),
            self.selector,
            self.seed,
            self.picked.join(", ")
        )
    }
}

/// Picks `query.pick` of `matches` with `query.seed` (a random one when not given); returns
/// the picks (sorted) and the [`Selection`] that records them.
pub fn pick<T: AsRef<Candidate>>(query: &PodQuery, mut matches: Vec<T>) -> (Vec<T>, Selection) {
    matches.sort_by_key(|c| c.as_ref().sort_key());
    let matched = matches.iter().map(|c| c.as_ref().describe()).collect();
    let seed = query.seed.unwrap_or_else(rand::random);
    let n = query.pick.of(matches.len());
    if n < matches.len() {
        matches.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        matches.truncate(n);
        matches.sort_by_key(|c| c.as_ref().sort_key());
    }
    let selection = Selection {
        selector: query.describe(),
        matched,
        picked: matches.iter().map(|c| c.as_ref().describe()).collect(),
        seed,
    };
    (matches, selection)
}

impl AsRef<Candidate> for Candidate {
    fn as_ref(&self) -> &Candidate {
        self
    }
}

/// Adds the pod-selector fields (see the module docs) to a spec struct, and a
/// `pod_query(kind)` method that checks them into a [`PodQuery`]. serde's `flatten` cannot
/// be combined with `deny_unknown_fields`, so the fields are written into each struct.
macro_rules! with_pod_selectors {
    ($(#[$meta:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($body)*
            /// Only containers of pods in this Kubernetes namespace.
            #[arg(long, help_heading = "Pod selectors")]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub namespace: Option<String>,
            /// Only containers of the pod with this name.
            #[arg(long, help_heading = "Pod selectors")]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub pod: Option<String>,
            /// Only containers whose pod has this label (KEY=VALUE); repeat it to require
            /// several.
            #[arg(long = "label", value_name = "KEY=VALUE", help_heading = "Pod selectors")]
            #[serde(
                default,
                skip_serializing_if = "Vec::is_empty",
                with = "crate::select::labels_serde"
            )]
            pub label: Vec<crate::select::LabelMatch>,
            /// Only containers with this name (in their pod spec; the Docker name elsewhere).
            #[arg(long, help_heading = "Pod selectors")]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub container_name: Option<String>,
            /// Pick this many of the matching containers, at random (default: all).
            #[arg(long, help_heading = "Pod selectors")]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub count: Option<usize>,
            /// Pick this share of the matching containers, rounded up, at random.
            #[arg(long, help_heading = "Pod selectors")]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub percent: Option<crate::units::Percent>,
            /// Seed of the random pick (recorded; a random one when not given).
            #[arg(long, help_heading = "Pod selectors")]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub seed: Option<u64>,
            /// The CRI runtime's socket (containerd, CRI-O). Default: the first of
            /// /run/containerd/containerd.sock and /var/run/crio/crio.sock that exists, else
            /// the Docker socket.
            #[arg(long, help_heading = "Container runtime")]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub cri_socket: Option<std::path::PathBuf>,
            /// The Docker Engine API socket (Docker, or podman's `podman system service`).
            /// Default: /var/run/docker.sock when no CRI socket is found or given.
            #[arg(long, help_heading = "Container runtime")]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub docker_socket: Option<std::path::PathBuf>,
        }

        impl $name {
            /// Sets the seed of the pick to `seed` when pod selectors are used without one,
            /// so that plans made later pick the same containers; whether it did.
            pub(crate) fn pin_seed(&mut self, seed: u64) -> bool {
                let selects = self.namespace.is_some()
                    || self.pod.is_some()
                    || !self.label.is_empty()
                    || self.container_name.is_some();
                if selects && self.seed.is_none() {
                    self.seed = Some(seed);
                    return true;
                }
                false
            }

            /// The selector fields, checked.
            pub(crate) fn pod_query(
                &self,
                kind: &'static str,
            ) -> Result<crate::select::PodQuery, crate::error::FaultError> {
                crate::select::PodQuery::new(
                    kind,
                    crate::select::PodSelector {
                        namespace: self.namespace.clone(),
                        pod: self.pod.clone(),
                        labels: self.label.clone(),
                        container_name: self.container_name.clone(),
                    },
                    self.count,
                    self.percent,
                    self.seed,
                    crate::select::RuntimeSockets {
                        cri: self.cri_socket.clone(),
                        docker: self.docker_socket.clone(),
                    },
                )
            }
        }
    };
}
pub(crate) use with_pod_selectors;

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(ns: &str, pod: &str, name: &str, id: &str, app: &str) -> Candidate {
        Candidate {
            id: id.into(),
            name: name.into(),
            pod: Some(PodRef {
                namespace: ns.into(),
                name: pod.into(),
                uid: String::new(),
            }),
            labels: BTreeMap::from([
                ("app".to_owned(), app.to_owned()),
                ("tier".to_owned(), "front".to_owned()),
            ]),
        }
    }

    fn query(selector: PodSelector, pick: Pick, seed: Option<u64>) -> PodQuery {
        PodQuery {
            selector,
            pick,
            seed,
            sockets: RuntimeSockets::default(),
        }
    }

    #[test]
    fn labels_parse_from_flags_lists_and_maps() {
        assert_eq!(
            "app=web".parse::<LabelMatch>().unwrap(),
            LabelMatch {
                key: "app".into(),
                value: "web".into()
            }
        );
        assert_eq!("k=".parse::<LabelMatch>().unwrap().value, "");
        assert_eq!("k=a=b".parse::<LabelMatch>().unwrap().value, "a=b");
        assert!("app".parse::<LabelMatch>().is_err());
        assert!("=web".parse::<LabelMatch>().is_err());
        assert!(" app=web".parse::<LabelMatch>().is_err());
        assert!("app=we b".parse::<LabelMatch>().is_err());
        #[derive(Debug, Deserialize, Serialize)]
        struct L {
            #[serde(with = "labels_serde")]
            label: Vec<LabelMatch>,
        }
        let from_list: L = serde_json::from_str(r#"{"label":["app=web","tier=front"]}"#).unwrap();
        let from_map: L =
            serde_json::from_str(r#"{"label":{"app":"web","tier":"front"}}"#).unwrap();
        assert_eq!(from_list.label, from_map.label);
        let one: L = serde_json::from_str(r#"{"label":"app=web"}"#).unwrap();
        assert_eq!(one.label.len(), 1);
        assert_eq!(
            serde_json::to_string(&from_list).unwrap(),
            r#"{"label":["app=web","tier=front"]}"#
        );
        let bad = serde_json::from_str::<L>(r#"{"label":["app"]}"#).unwrap_err();
        assert!(bad.to_string().contains("KEY=VALUE"), "{bad}");
        // A map key with `=` could not read back as the same pair from its `key=value` form.
        assert!(serde_json::from_str::<L>(r#"{"label":{"a=b":"c"}}"#).is_err());
    }

    #[test]
    fn every_set_field_must_hold() {
        let c = candidate("shop", "web-1", "app", "aa", "web");
        let sel = |f: &dyn Fn(&mut PodSelector)| {
            let mut s = PodSelector::default();
            f(&mut s);
            s.matches(&c)
        };
        assert!(sel(&|_| {}));
        assert!(sel(&|s| s.namespace = Some("shop".into())));
        assert!(!sel(&|s| s.namespace = Some("kube-system".into())));
        assert!(sel(&|s| s.pod = Some("web-1".into())));
        assert!(!sel(&|s| s.pod = Some("web-2".into())));
        assert!(sel(&|s| s.container_name = Some("app".into())));
        assert!(sel(&|s| s.labels = vec!["app=web".parse().unwrap()]));
        assert!(sel(&|s| {
            s.labels = vec!["app=web".parse().unwrap(), "tier=front".parse().unwrap()];
        }));
        assert!(!sel(&|s| {
            s.labels = vec!["app=web".parse().unwrap(), "tier=back".parse().unwrap()];
        }));
        // A container without a pod never matches a namespace or pod name.
        let bare = Candidate {
            pod: None,
            ..c.clone()
        };
        let ns = PodSelector {
            namespace: Some("shop".into()),
            ..PodSelector::default()
        };
        assert!(!ns.matches(&bare));
    }

    #[test]
    fn picks_are_seeded_sorted_and_recorded() {
        let all: Vec<Candidate> = (0..5)
            .map(|i| {
                candidate(
                    "shop",
                    &format!("web-{i}"),
                    "app",
                    &format!("{i:064}"),
                    "web",
                )
            })
            .collect();
        let sel = PodSelector {
            labels: vec!["app=web".parse().unwrap()],
            ..PodSelector::default()
        };
        let (a, rec) = pick(&query(sel.clone(), Pick::Count(2), Some(7)), all.clone());
        let (b, _) = pick(
            &query(sel.clone(), Pick::Count(2), Some(7)),
            all.iter().rev().cloned().collect(),
        );
        assert_eq!(a, b, "same seed, same matches in any order: same picks");
        assert_eq!(a.len(), 2);
        assert_eq!(rec.seed, 7);
        assert_eq!(rec.selector, "label app=web count=2");
        assert_eq!(rec.matched.len(), 5);
        assert!(rec.matched.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(
            rec.picked,
            a.iter().map(Candidate::describe).collect::<Vec<_>>()
        );
        assert!(rec.picked[0].starts_with("shop/web-"), "{rec:?}");
        // Different seeds pick differently at least sometimes.
        let picks: std::collections::BTreeSet<Vec<String>> = (0..20)
            .map(|s| {
                pick(&query(sel.clone(), Pick::Count(2), Some(s)), all.clone())
                    .1
                    .picked
            })
            .collect();
        assert!(picks.len() > 1);
        // Percent rounds up; All takes everything; an unseeded pick records its seed.
        let (p, rec) = pick(&query(sel.clone(), Pick::Percent(30.0), None), all.clone());
        assert_eq!(p.len(), 2);
        let (_, again) = pick(&query(sel, Pick::Percent(30.0), Some(rec.seed)), all);
        assert_eq!(
            again.picked, rec.picked,
            "the recorded seed replays the pick"
        );
    }

    #[test]
    fn count_and_percent_need_a_selector_and_one_of_them() {
        let q = |sel: PodSelector, c, p: Option<f64>| {
            PodQuery::new(
                "container-kill",
                sel,
                c,
                p.map(Percent),
                None,
                RuntimeSockets::default(),
            )
        };
        let sel = PodSelector {
            namespace: Some("shop".into()),
            ..PodSelector::default()
        };
        assert!(q(sel.clone(), Some(1), None).is_ok());
        assert!(q(sel.clone(), None, Some(50.0)).is_ok());
        assert!(q(sel.clone(), Some(1), Some(50.0)).is_err());
        assert!(q(sel.clone(), Some(0), None).is_err());
        assert!(q(sel, None, Some(0.0)).is_err());
        let e = q(PodSelector::default(), Some(1), None).unwrap_err();
        assert!(e.to_string().contains("--label"), "{e}");
        assert!(q(PodSelector::default(), None, None).is_ok());
    }
}
