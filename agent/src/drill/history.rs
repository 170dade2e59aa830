//! Drill history: one JSON report per drill under `<state-dir>/drills/<id>.json`, written
//! atomically (temporary file, fsync, rename, directory fsync), so results survive an agent
//! restart and the API still serves them. Blocking file I/O: async callers use
//! `spawn_blocking`.

use std::path::{Path, PathBuf};

use super::report::{DrillReport, Summary};

/// Why the history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// File system.
    #[error("drill history {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A report that is not valid JSON.
    #[error("drill report {}: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// Whether `id` is a safe drill id (it becomes a file name).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The history directory.
#[derive(Clone, Debug)]
pub struct History {
    dir: PathBuf,
}

impl History {
    /// `<state_dir>/drills`, created if missing.
    pub fn open(state_dir: &Path) -> Result<Self, HistoryError> {
        let dir = state_dir.join("drills");
        std::fs::create_dir_all(&dir).map_err(|source| HistoryError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores a report (replacing one with the same id).
    pub fn save(&self, r: &DrillReport) -> Result<PathBuf, HistoryError> {
        let path = self.dir.join(format!("{}.json", r.id));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| HistoryError::Io { path: p, source }
        };
        if !valid_id(&r.id) {
            return Err(HistoryError::Corrupt {
                path,
                message: "unsafe drill id".into(),
            });
        }
        let json = serde_json::to_vec_pretty(r).map_err(|e| HistoryError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        crate::state_file::write_atomic(&path, &json).map_err(io(&path))?;
        Ok(path)
    }

    /// One report.
    pub fn get(&self, id: &str) -> Result<Option<DrillReport>, HistoryError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let path = self.dir.join(format!("{id}.json"));
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| HistoryError::Corrupt {
                        path,
                        message: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(HistoryError::Io { path, source }),
        }
    }

    /// Summaries of every stored report, newest first (unreadable files are skipped with a
    /// warning).
    pub fn list(&self) -> Result<Vec<Summary>, HistoryError> {
        let rd = std::fs::read_dir(&self.dir).map_err(|source| HistoryError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            match self.get(id) {
                Ok(Some(r)) => out.push(Summary::from(&r)),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable drill report"),
            }
        }
        out.sort_by(|a, b| b.started_at.total_cmp(&a.started_at));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::report::fixture;
    use super::*;

    #[test]
    fn reports_survive_a_reopen_and_list_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        let mut a = fixture::report();
        a.id = "drill-1".into();
        let mut b = fixture::report();
        b.id = "drill-2".into();
        b.started_at += 100.0;
        h.save(&a).unwrap();
        h.save(&b).unwrap();
        std::fs::write(h.dir().join("broken.json"), "{").unwrap();
        let h2 = History::open(dir.path()).unwrap();
        assert_eq!(h2.get("drill-1").unwrap().unwrap(), a);
        let ids: Vec<String> = h2.list().unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["drill-2", "drill-1"]);
        assert!(h2.get("../etc/passwd").unwrap().is_none());
        assert!(h2.get("nope").unwrap().is_none());
        assert!(h2.get("broken").is_err());
    }
}
