//! Bearer tokens for the API: a YAML file of `{name, role, token}` entries (roles `viewer`:
//! reads; `operator`: reads, starts and aborts), checked in constant time against every
//! token (no early exit, no length leak beyond the fixed-size digest comparison).
//!
//! ```yaml
//! - name: ci            # appears in audit events, never the token
//!   role: operator
//!   token: 3f1c…        # at least 16 characters
//! - name: dashboard
//!   role: viewer
//!   token: 9a0b…
//! ```
//!
//! [`TokenStore`] keeps the loaded tokens and replaces them when the file changes (polled:
//! modification time, size, inode — a Kubernetes Secret update swaps a symlink, which the
//! inode catches) or on SIGHUP, without a restart. A file that no longer parses leaves the
//! tokens loaded before in force and is logged as an error, so a botched edit never locks
//! operators out nor lets anyone in.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads, starts and aborts.
    Operator,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    role: Role,
    token: String,
}

/// One token, stored as its SHA-256 digest.
#[derive(Clone)]
struct Token {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// The loaded tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tokens.iter().map(|t| (&t.name, t.role)))
            .finish()
    }
}

/// The identity behind a valid token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

fn digest(s: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, s);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

impl Tokens {
    /// Parses a tokens file's text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, String> {
        let entries: Vec<Entry> =
            serde_yaml_ng::from_str(text).map_err(|e| format!("{file}: {e}"))?;
        if entries.is_empty() {
            return Err(format!(
                "{file}: no tokens; add at least one {{name, role, token}}"
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut tokens = Vec::new();
        for (i, e) in entries.into_iter().enumerate() {
            if e.name.is_empty() || !names.insert(e.name.clone()) {
                return Err(format!(
                    "{file}: entry {i}: name {:?} is empty or used twice",
                    e.name
                ));
            }
            if e.token.len() < 16 {
                return Err(format!(
                    "{file}: entry {i} ({}): the token is shorter than 16 characters",
                    e.name
                ));
            }
            tokens.push(Token {
                name: e.name,
                role: e.role,
                digest: digest(e.token.as_bytes()),
            });
        }
        Ok(Self { tokens })
    }

    /// Reads a tokens file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read tokens file {}: {e}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are none (never true for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token the command line presents to a local agent: the first operator entry of
    /// the tokens file, else its first entry (enough for reads).
    pub fn client_token(path: &Path) -> Result<String, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read tokens file {}: {e}", path.display()))?;
        let entries: Vec<Entry> =
            serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        entries
            .iter()
            .find(|e| e.role == Role::Operator)
            .or(entries.first())
            .map(|e| e.token.clone())
            .ok_or_else(|| format!("{}: no tokens", path.display()))
    }

    /// The identity for a presented token. Every stored digest is compared, whatever matches.
    pub fn check(&self, presented: &str) -> Option<Identity> {
        let d = digest(presented.as_bytes());
        let mut found = None;
        for t in &self.tokens {
            if constant_time_eq(&t.digest, &d) && found.is_none() {
                found = Some(Identity {
                    name: t.name.clone(),
                    role: t.role,
                });
            }
        }
        found
    }

    /// The identity for an `Authorization` header value (`Bearer <token>`; the scheme in any
    /// case, as RFC 9110 §11.1 has it).
    pub fn from_header(&self, value: Option<&str>) -> Option<Identity> {
        let (scheme, token) = value?.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        self.check(token.trim())
    }
}

/// What identifies one version of the tokens file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    mtime: Option<SystemTime>,
    len: u64,
    dev: u64,
    ino: u64,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        // `metadata` follows symlinks: a Secret volume's `..data` swap changes the inode.
        let m = std::fs::metadata(path)?;
        Ok(Self {
            mtime: m.modified().ok(),
            len: m.len(),
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The file is as last loaded (or as last refused): nothing read.
    Unchanged,
    /// The new file is in force, with this many tokens.
    Replaced(usize),
}

/// The tokens in force, and the file they come from; replaced as a whole on reload.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    current: RwLock<Arc<Tokens>>,
    /// The version of the file last looked at (loaded or refused), so a refused file is
    /// reported once, not at every poll.
    seen: Mutex<Option<Stamp>>,
}

impl TokenStore {
    /// Loads `path`; an unreadable or invalid file is an error (the agent does not start).
    pub fn load(path: &Path) -> Result<Self, String> {
        let seen = Stamp::of(path).ok();
        let tokens = Tokens::load(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(tokens)),
            seen: Mutex::new(seen),
        })
    }

    /// The tokens file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tokens in force now.
    pub fn current(&self) -> Arc<Tokens> {
        // A poisoned lock still holds a whole `Arc` (replacement is one assignment).
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the file if it changed since it was last looked at (`force`: whatever its
    /// stamp says — SIGHUP). On error the tokens in force stay, and the error says why.
    /// Blocking file I/O: call it from a blocking thread.
    pub fn reload(&self, force: bool) -> Result<Reload, String> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stamp = Stamp::of(&self.path)
            .map_err(|e| format!("cannot read tokens file {}: {e}", self.path.display()))?;
        if !force && *seen == Some(stamp) {
            return Ok(Reload::Unchanged);
        }
        *seen = Some(stamp);
        let tokens = Tokens::load(&self.path)?;
        let n = tokens.len();
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(tokens);
        Ok(Reload::Replaced(n))
    }

    /// Reloads on change (polled every `interval`; zero: no polling) and on SIGHUP, until
    /// `cancel`. Every outcome that changes something, or refuses to, is logged.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP; the tokens file is reloaded only when it changes");
                None
            }
        };
        let mut poll = (!interval.is_zero()).then(|| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            let tick = async {
                match poll.as_mut() {
                    Some(t) => t.tick().await,
                    None => std::future::pending().await,
                }
            };
            let force = tokio::select! {
                () = cancel.cancelled() => return,
                Some(()) = hangup => true,
                _ = tick => false,
            };
            let store = self.clone();
            match tokio::task::spawn_blocking(move || store.reload(force)).await {
                Ok(Ok(Reload::Unchanged)) => {}
                Ok(Ok(Reload::Replaced(n))) => tracing::info!(
                    target: "faultline::audit",
                    file = %self.path.display(),
                    tokens = n,
                    trigger = if force { "SIGHUP" } else { "file changed" },
                    "API tokens reloaded; the previous tokens no longer work"
                ),
                Ok(Err(e)) => tracing::error!(
                    target: "faultline::audit",
                    error = %e,
                    "API tokens NOT reloaded; the tokens loaded before stay in force until the file is fixed"
                ),
                Err(e) => tracing::error!(error = %e, "API tokens reload task failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "- {name: ci, role: operator, token: aaaaaaaaaaaaaaaaaaaa}\n- {name: dash, role: viewer, token: bbbbbbbbbbbbbbbbbbbb}\n";

    #[test]
    fn tokens_map_to_names_and_roles() {
        let t = Tokens::parse(FILE, "t.yaml").unwrap();
        assert_eq!(
            t.from_header(Some("Bearer aaaaaaaaaaaaaaaaaaaa")),
            Some(Identity {
                name: "ci".into(),
                role: Role::Operator
            })
        );
        assert_eq!(
            t.from_header(Some("Bearer bbbbbbbbbbbbbbbbbbbb"))
                .map(|i| i.role),
            Some(Role::Viewer)
        );
        assert_eq!(t.from_header(Some("Bearer aaaaaaaaaaaaaaaaaaab")), None);
        assert_eq!(t.from_header(Some("Basic aaaaaaaaaaaaaaaaaaaa")), None);
        for scheme in ["bearer", "BEARER", "beaRer"] {
            assert!(
                t.from_header(Some(&format!("{scheme} aaaaaaaaaaaaaaaaaaaa")))
                    .is_some(),
                "the scheme is case-insensitive: {scheme}"
            );
        }
        assert_eq!(t.from_header(Some("Bearer")), None);
        assert_eq!(t.from_header(Some("Bearerx aaaaaaaaaaaaaaaaaaaa")), None);
        assert_eq!(t.from_header(None), None);
        assert!(format!("{t:?}").contains("ci") && !format!("{t:?}").contains("aaaa"));
    }

    #[test]
    fn bad_files_are_refused_with_reasons() {
        assert!(Tokens::parse("[]", "t").unwrap_err().contains("no tokens"));
        assert!(
            Tokens::parse("- {name: a, role: viewer, token: short}", "t")
                .unwrap_err()
                .contains("16")
        );
        assert!(
            Tokens::parse("- {name: a, role: root, token: aaaaaaaaaaaaaaaaaaaa}", "t").is_err()
        );
        assert!(
            Tokens::parse(
                "- {name: a, role: viewer, token: aaaaaaaaaaaaaaaaaaaa, x: 1}",
                "t"
            )
            .is_err()
        );
    }

    #[test]
    fn store_reloads_on_change_and_keeps_old_tokens_when_the_new_file_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        std::fs::write(&path, FILE).unwrap();
        let store = TokenStore::load(&path).unwrap();
        assert_eq!(store.reload(false).unwrap(), Reload::Unchanged);
        let ok = |s: &TokenStore, t: &str| s.current().check(t).is_some();
        assert!(ok(&store, "aaaaaaaaaaaaaaaaaaaa"));

        // Rotation by rename (as editors and Secret volumes do): new inode.
        let tmp = dir.path().join("tokens.new");
        std::fs::write(
            &tmp,
            "- {name: ci, role: operator, token: cccccccccccccccccccc}\n",
        )
        .unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(store.reload(false).unwrap(), Reload::Replaced(1));
        assert!(!ok(&store, "aaaaaaaaaaaaaaaaaaaa"));
        assert!(ok(&store, "cccccccccccccccccccc"));

        // A broken file: an error naming the file, the old tokens stay, reported once.
        std::fs::write(&tmp, "- {name: ci, role: operator, token: short}\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let e = store.reload(false).unwrap_err();
        assert!(e.contains("tokens.yaml") && e.contains("16"), "{e}");
        assert!(ok(&store, "cccccccccccccccccccc"));
        assert_eq!(store.reload(false).unwrap(), Reload::Unchanged);
        // A forced reload (SIGHUP) reads it again, and refuses it again.
        assert!(store.reload(true).is_err());
        assert!(ok(&store, "cccccccccccccccccccc"));

        // A deleted file: an error, the old tokens stay.
        std::fs::remove_file(&path).unwrap();
        assert!(store.reload(false).unwrap_err().contains("cannot read"));
        assert!(ok(&store, "cccccccccccccccccccc"));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
