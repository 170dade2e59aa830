//! The `backups:` section of the agent config: one entry per backup source.
//!
//! One flat, strict struct serves every kind (`deny_unknown_fields` catches typos); which
//! fields a kind accepts or requires is checked in [`validate`], whose errors name the field
//! as `backups[<index>].<field>` with its line, the same way the rest of the config reports.
//! Defaults live here, in the `Default` impls and the `default_*` functions.
//!
//! ```yaml
//! backups:
//!   - name: app-files            # [A-Za-z0-9._-], unique; used in metrics and the state file
//!     kind: restic               # restic | borg | pgbackrest | files | command
//!     repository: /srv/restic/app
//!     password_file: /etc/faultline/restic.pass   # or password_env: RESTIC_PASS
//!     rpo: 26h                   # newest backup older than this → unhealthy
//!     rto: 30m                   # optional restore-time target for the restore test
//!     service: payments          # optional: results roll up by service in `report posture`
//!     tier: tier-1               # optional: the service's tier, reported as written
//!     max_shrink: 0.5            # flag when the newest is < 50 % of the previous one's size
//!     freshness: { every: 5m, timeout: 2m }
//!     integrity: { every: 24h, timeout: 1h, read_data_subsets: 7 }
//!     restore:
//!       every: 7d
//!       timeout: 1h
//!       expect_paths: [/srv/app/config.yaml]
//!       manifest: /srv/app/SHA256SUMS   # sha256sum output made at backup time
//!       sample: 20                       # verify 20 random manifest entries (all if absent)
//!   - name: home
//!     kind: borg
//!     repository: /srv/borg/home
//!     password_file: /etc/faultline/borg.pass     # handed over as BORG_PASSPHRASE
//!     env: {BORG_BASE_DIR: /var/lib/faultline/borg}
//!     rpo: 26h
//!     integrity: { every: 24h, max_duration: 10m }  # or verify_data: true
//!     restore: { every: 7d, random_within: 3d, expect_paths: [/home/app/.profile] }
//!   - name: db
//!     kind: pgbackrest
//!     stanza: main
//!     config: /etc/pgbackrest/pgbackrest.conf
//!     user: postgres             # the restore test's PostgreSQL refuses to run as root
//!     rpo: 26h
//!     rto: 30m
//!     restore:
//!       every: 7d
//!       query: "select count(*) from orders"
//!       expect: ">= 1"           # >=, >, <=, <, ==, !=, contains, nonempty
//!   - name: dumps
//!     kind: files
//!     path: /var/backups/mysql
//!     glob: "*.sql.gz"
//!     manifest: /var/backups/mysql/SHA256SUMS   # checked by the integrity check
//!     rpo: 26h
//!   - name: tape
//!     kind: command
//!     list_command: [/usr/local/bin/my-backup, list, --json]  # [{"time", "size", "id"}]
//!     check_command: [/usr/local/bin/my-backup, verify]       # exit 0 = healthy
//!     restore_command: [/usr/local/bin/my-backup, restore, "{id}", "{dir}"]
//!     rpo: 26h
//!     restore: { every: 7d, expect_paths: [etc/app.conf] }
//! ```

use faultline_chaos::units::HumanDuration;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::yaml::{ConfigError, item_line};

/// Which tool a source uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// restic repository.
    Restic,
    /// borg repository.
    Borg,
    /// pgBackRest stanza.
    Pgbackrest,
    /// Backup files in a directory (dumps, tarballs).
    Files,
    /// Any tool, through commands.
    Command,
}

impl SourceKind {
    /// The lower-case name used in config, metrics and events.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Restic => "restic",
            SourceKind::Borg => "borg",
            SourceKind::Pgbackrest => "pgbackrest",
            SourceKind::Files => "files",
            SourceKind::Command => "command",
        }
    }
}

/// One backup source.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSourceConfig {
    /// Unique name, `[A-Za-z0-9._-]`.
    pub name: String,
    /// The tool.
    pub kind: SourceKind,
    /// Recovery point objective: the newest backup may be at most this old.
    pub rpo: HumanDuration,
    /// Restore-time objective: a restore test (restore + verification) must finish within it.
    #[serde(default)]
    pub rto: Option<HumanDuration>,
    /// The service this backup belongs to: results roll up by it in the posture report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The service's tier (`tier-1`, `gold`…): free text of `[A-Za-z0-9._-]`, reported as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Flag a size anomaly when the newest backup is smaller than the previous one by more
    /// than this share (0.5 = lost more than half).
    #[serde(default = "default_max_shrink")]
    pub max_shrink: f64,
    /// restic/borg: the repository.
    #[serde(default)]
    pub repository: Option<String>,
    /// restic/borg: file holding the password/passphrase.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// restic/borg: name of the agent's environment variable holding it.
    #[serde(default)]
    pub password_env: Option<String>,
    /// pgbackrest: the stanza.
    #[serde(default)]
    pub stanza: Option<String>,
    /// pgbackrest: its config file (`--config`).
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// pgbackrest: PostgreSQL's bin directory for the restore test (default
    /// `/usr/lib/postgresql/<PG_VERSION of the restored data>/bin`).
    #[serde(default)]
    pub pg_bin_dir: Option<PathBuf>,
    /// files: the directory holding the backup files.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// files: which files are backups (glob on the file name, default `*`).
    #[serde(default)]
    pub glob: Option<String>,
    /// files: `sha256sum` manifest of the backup files, checked by the integrity check.
    #[serde(default)]
    pub manifest: Option<PathBuf>,
    /// command: prints the backup list as JSON (see `parse::command`).
    #[serde(default)]
    pub list_command: Option<Vec<String>>,
    /// command: integrity check, judged by exit code.
    #[serde(default)]
    pub check_command: Option<Vec<String>>,
    /// command: restores into `$FAULTLINE_RESTORE_DIR` (also substituted for `{dir}` in the
    /// arguments), judged by exit code; the restored tree is then verified.
    #[serde(default)]
    pub restore_command: Option<Vec<String>>,
    /// The tool's binary, when not `restic`/`borg`/`pgbackrest` on `PATH`.
    #[serde(default)]
    pub binary: Option<PathBuf>,
    /// Run the tools as this user (the agent must be root). pgBackRest restore tests need
    /// the PostgreSQL user: the server refuses to run as root.
    #[serde(default)]
    pub user: Option<String>,
    /// Extra environment for the tools (e.g. `BORG_BASE_DIR`, `AWS_PROFILE`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Freshness and inventory check.
    #[serde(default)]
    pub freshness: FreshnessConfig,
    /// The tool's integrity check.
    #[serde(default)]
    pub integrity: IntegrityConfig,
    /// The restore test; not scheduled unless present.
    #[serde(default)]
    pub restore: Option<RestoreConfig>,
}

fn default_max_shrink() -> f64 {
    0.5
}

/// Schedule of the freshness check.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FreshnessConfig {
    /// How often.
    pub every: HumanDuration,
    /// Timeout for the listing commands.
    pub timeout: HumanDuration,
}

impl Default for FreshnessConfig {
    fn default() -> Self {
        Self {
            every: HumanDuration(Duration::from_secs(300)),
            timeout: HumanDuration(Duration::from_secs(120)),
        }
    }
}

/// Schedule and options of the integrity check.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrityConfig {
    /// Run it on a schedule.
    pub enabled: bool,
    /// How often.
    pub every: HumanDuration,
    /// Timeout for the check command.
    pub timeout: HumanDuration,
    /// restic: read the data in `t` parts, one per run (`--read-data-subset=n/t`), so `t`
    /// runs read the whole repository. Absent: structure only.
    pub read_data_subsets: Option<u32>,
    /// borg: `--verify-data` (reads and decrypts all data).
    pub verify_data: bool,
    /// borg: partial repository check of at most this long per run (`--repository-only
    /// --max-duration`); borg remembers where it stopped.
    pub max_duration: Option<HumanDuration>,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            every: HumanDuration(Duration::from_secs(24 * 3600)),
            timeout: HumanDuration(Duration::from_secs(3600)),
            read_data_subsets: None,
            verify_data: false,
            max_duration: None,
        }
    }
}

/// The restore test.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestoreConfig {
    /// Run it on a schedule.
    pub enabled: bool,
    /// How often.
    pub every: HumanDuration,
    /// Timeout for the restore command (verification has its own share of the same budget).
    pub timeout: HumanDuration,
    /// Restore a random backup among those made within this window (default: the latest).
    pub random_within: Option<HumanDuration>,
    /// Where scratch directories are made (default `<state-dir>/backup/scratch`).
    pub scratch_dir: Option<PathBuf>,
    /// Paths (as they were at backup time) that must exist after the restore.
    pub expect_paths: Vec<String>,
    /// `sha256sum` manifest (paths as at backup time) the restored files must match.
    pub manifest: Option<PathBuf>,
    /// Verify this many random manifest entries (all when absent).
    pub sample: Option<usize>,
    /// pgbackrest: SQL run on the restored database.
    pub query: Option<String>,
    /// pgbackrest: the predicate the query's first value must satisfy (`>= 1000`, `== ok`,
    /// `!= 0`, `contains x`, `nonempty`).
    pub expect: Option<Predicate>,
    /// pgbackrest: database to connect to.
    pub database: String,
}

impl Default for RestoreConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            every: HumanDuration(Duration::from_secs(7 * 24 * 3600)),
            timeout: HumanDuration(Duration::from_secs(2 * 3600)),
            random_within: None,
            scratch_dir: None,
            expect_paths: Vec::new(),
            manifest: None,
            sample: None,
            query: None,
            expect: None,
            database: "postgres".into(),
        }
    }
}

/// A comparison a verification value must satisfy.
#[derive(Clone, Debug, PartialEq)]
pub enum Predicate {
    /// `== v` (numeric when both sides are numbers).
    Eq(String),
    /// `!= v`.
    Ne(String),
    /// `> n`.
    Gt(f64),
    /// `>= n`.
    Ge(f64),
    /// `< n`.
    Lt(f64),
    /// `<= n`.
    Le(f64),
    /// `contains s`.
    Contains(String),
    /// `nonempty`.
    NonEmpty,
}

impl Predicate {
    /// Parses `>= 1000`, `== ok`, `contains x`, `nonempty`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "nonempty" {
            return Ok(Predicate::NonEmpty);
        }
        if let Some(v) = s.strip_prefix("contains ") {
            return Ok(Predicate::Contains(v.trim().to_owned()));
        }
        let num = |v: &str| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| format!("{s:?}: {:?} is not a number", v.trim()))
        };
        for (op, _) in [
            (">=", 0),
            ("<=", 0),
            ("==", 0),
            ("!=", 0),
            (">", 0),
            ("<", 0),
        ] {
            if let Some(v) = s.strip_prefix(op) {
                return Ok(match op {
                    ">=" => Predicate::Ge(num(v)?),
                    "<=" => Predicate::Le(num(v)?),
                    ">" => Predicate::Gt(num(v)?),
                    "<" => Predicate::Lt(num(v)?),
                    "==" => Predicate::Eq(v.trim().to_owned()),
                    _ => Predicate::Ne(v.trim().to_owned()),
                });
            }
        }
        Err(format!(
            "{s:?} is not a predicate; write one of `>= 1000`, `> 0`, `<= 5`, `< 5`, `== ok`, `!= 0`, `contains text`, `nonempty`"
        ))
    }

    /// Whether `value` satisfies it.
    pub fn holds(&self, value: &str) -> bool {
        let v = value.trim();
        let n = v.parse::<f64>().ok();
        let same = |want: &str| match (n, want.parse::<f64>().ok()) {
            (Some(a), Some(b)) => a == b,
            _ => v == want,
        };
        match self {
            Predicate::Eq(w) => same(w),
            Predicate::Ne(w) => !same(w),
            Predicate::Gt(w) => n.is_some_and(|a| a > *w),
            Predicate::Ge(w) => n.is_some_and(|a| a >= *w),
            Predicate::Lt(w) => n.is_some_and(|a| a < *w),
            Predicate::Le(w) => n.is_some_and(|a| a <= *w),
            Predicate::Contains(w) => v.contains(w.as_str()),
            Predicate::NonEmpty => !v.is_empty(),
        }
    }
}

impl std::fmt::Display for Predicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Predicate::Eq(v) => write!(f, "== {v}"),
            Predicate::Ne(v) => write!(f, "!= {v}"),
            Predicate::Gt(v) => write!(f, "> {v}"),
            Predicate::Ge(v) => write!(f, ">= {v}"),
            Predicate::Lt(v) => write!(f, "< {v}"),
            Predicate::Le(v) => write!(f, "<= {v}"),
            Predicate::Contains(v) => write!(f, "contains {v}"),
            Predicate::NonEmpty => f.write_str("nonempty"),
        }
    }
}

impl<'de> Deserialize<'de> for Predicate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Predicate::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Predicate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A problem with one source: the field (relative to the source) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Field path inside the source, e.g. `restore.query`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

fn fe(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Checks one source: kind-specific required and refused fields, ranges.
pub fn check_source(c: &BackupSourceConfig) -> Result<(), FieldError> {
    let kind = c.kind.as_str();
    if c.name.is_empty()
        || !c
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(fe(
            "name",
            format!(
                "{:?} must be non-empty and use only letters, digits, '.', '_' and '-'",
                c.name
            ),
        ));
    }
    for (field, v) in [("service", &c.service), ("tier", &c.tier)] {
        if let Some(v) = v
            && !crate::yaml::valid_label(v)
        {
            return Err(fe(field, format!("{v:?}: use 1-64 of [A-Za-z0-9._-]")));
        }
    }
    if c.rpo.0.is_zero() {
        return Err(fe("rpo", "must be above zero"));
    }
    if c.rto.is_some_and(|d| d.0.is_zero()) {
        return Err(fe("rto", "must be above zero"));
    }
    if !(c.max_shrink > 0.0 && c.max_shrink <= 1.0) {
        return Err(fe(
            "max_shrink",
            format!(
                "{} must be a share above 0 and at most 1 (0.5 = half)",
                c.max_shrink
            ),
        ));
    }
    for (field, d) in [
        ("freshness.every", c.freshness.every),
        ("freshness.timeout", c.freshness.timeout),
        ("integrity.every", c.integrity.every),
        ("integrity.timeout", c.integrity.timeout),
    ] {
        if d.0 < Duration::from_millis(100) {
            return Err(fe(field, format!("{d} is too short; use at least 100ms")));
        }
    }
    let uses = |present: bool, field: &str, kinds: &[SourceKind]| -> Result<(), FieldError> {
        if present && !kinds.contains(&c.kind) {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            return Err(fe(
                field,
                format!("is not used by kind {kind} (only by {})", names.join(", ")),
            ));
        }
        Ok(())
    };
    use SourceKind::{Borg, Command, Files, Pgbackrest, Restic};
    uses(c.repository.is_some(), "repository", &[Restic, Borg])?;
    uses(c.password_file.is_some(), "password_file", &[Restic, Borg])?;
    uses(c.password_env.is_some(), "password_env", &[Restic, Borg])?;
    uses(c.stanza.is_some(), "stanza", &[Pgbackrest])?;
    uses(c.config.is_some(), "config", &[Pgbackrest])?;
    uses(c.pg_bin_dir.is_some(), "pg_bin_dir", &[Pgbackrest])?;
    uses(c.path.is_some(), "path", &[Files])?;
    uses(c.glob.is_some(), "glob", &[Files])?;
    uses(c.manifest.is_some(), "manifest", &[Files])?;
    uses(c.list_command.is_some(), "list_command", &[Command])?;
    uses(c.check_command.is_some(), "check_command", &[Command])?;
    uses(c.restore_command.is_some(), "restore_command", &[Command])?;
    uses(c.binary.is_some(), "binary", &[Restic, Borg, Pgbackrest])?;
    uses(
        c.integrity.read_data_subsets.is_some(),
        "integrity.read_data_subsets",
        &[Restic],
    )?;
    uses(c.integrity.verify_data, "integrity.verify_data", &[Borg])?;
    uses(
        c.integrity.max_duration.is_some(),
        "integrity.max_duration",
        &[Borg],
    )?;
    if let Some(r) = &c.restore {
        uses(r.query.is_some(), "restore.query", &[Pgbackrest])?;
        uses(r.expect.is_some(), "restore.expect", &[Pgbackrest])?;
        if r.query.is_some() != r.expect.is_some() {
            return Err(fe(
                "restore.expect",
                "restore.query and restore.expect go together: the query's first value must satisfy the predicate",
            ));
        }
        if r.every.0 < Duration::from_millis(100) || r.timeout.0 < Duration::from_millis(100) {
            return Err(fe(
                "restore.every",
                "restore.every and restore.timeout must be at least 100ms",
            ));
        }
        if r.sample == Some(0) {
            return Err(fe(
                "restore.sample",
                "must be at least 1 (leave it out to verify every manifest entry)",
            ));
        }
        if c.kind == Command && c.restore_command.is_none() {
            return Err(fe(
                "restore_command",
                "a restore test of a command source needs restore_command",
            ));
        }
    }
    if c.integrity.read_data_subsets == Some(0) {
        return Err(fe(
            "integrity.read_data_subsets",
            "must be at least 1 (1 reads all data every run)",
        ));
    }
    if c.integrity.verify_data && c.integrity.max_duration.is_some() {
        return Err(fe(
            "integrity.max_duration",
            "borg cannot combine --verify-data with a partial (--max-duration) check; choose one",
        ));
    }
    if c.password_file.is_some() && c.password_env.is_some() {
        return Err(fe(
            "password_env",
            "set password_file or password_env, not both",
        ));
    }
    match c.kind {
        Restic | Borg => {
            if c.repository.as_deref().is_none_or(str::is_empty) {
                return Err(fe("repository", format!("kind {kind} needs a repository")));
            }
            if c.kind == Restic && c.password_file.is_none() && c.password_env.is_none() {
                return Err(fe(
                    "password_file",
                    "restic needs password_file or password_env",
                ));
            }
        }
        Pgbackrest => {
            if c.stanza.as_deref().is_none_or(str::is_empty) {
                return Err(fe("stanza", "kind pgbackrest needs a stanza"));
            }
        }
        Files => {
            if c.path.is_none() {
                return Err(fe(
                    "path",
                    "kind files needs the directory holding the backup files",
                ));
            }
            if let Some(g) = &c.glob {
                globset::Glob::new(g)
                    .map_err(|e| fe("glob", format!("{g:?} is not a valid glob: {e}")))?;
            }
        }
        Command => {
            if c.list_command.as_ref().is_none_or(Vec::is_empty) {
                return Err(fe(
                    "list_command",
                    "kind command needs a list_command such as [\"/usr/local/bin/my-backup\", \"list\", \"--json\"]",
                ));
            }
            for (field, cmd) in [
                ("check_command", &c.check_command),
                ("restore_command", &c.restore_command),
            ] {
                if cmd.as_ref().is_some_and(Vec::is_empty) {
                    return Err(fe(field, "must name a program"));
                }
            }
        }
    }
    Ok(())
}

/// Validates the whole list (each source, unique names); errors carry the file, the line
/// and `backups[<i>].<field>`.
pub fn validate(sources: &[BackupSourceConfig], text: &str, file: &str) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for (i, c) in sources.iter().enumerate() {
        let located = |e: FieldError| ConfigError::Invalid {
            file: file.to_owned(),
            line: item_line(text, "backups", i, &e.field),
            field: format!("backups[{i}].{}", e.field),
            message: e.message,
        };
        check_source(c).map_err(located)?;
        if !seen.insert(c.name.as_str()) {
            return Err(located(fe(
                "name",
                format!("{:?} is used by more than one source", c.name),
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
