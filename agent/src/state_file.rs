//! Durable replacement of a small state file (drill reports, backup state and schedules):
//! write a temporary file of a unique name beside it, fsync, rename over the file, fsync the
//! directory. A reader sees the old or the new content, never a mix, and nothing more.
//!
//! The temporary name is unique per write (`tempfile`), because several processes share one
//! state dir — the agent, `drill run`, `backup check` — and a fixed `<file>.tmp` let one
//! writer's rename publish another's half-written bytes. The journal of faults has its own
//! writer in the chaos crate (`faultline_chaos::Journal`), whose temporary names also tell
//! its sweep which writers are still alive.

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` durably, creating its directory if needed.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// [`write_atomic`] off the async workers.
pub(crate) async fn write_atomic_async(path: &Path, bytes: Vec<u8>) -> std::io::Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writers_of_one_file_never_publish_a_torn_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        let writers: Vec<_> = (0..4u8)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let body = vec![b'a' + w; 64 * 1024];
                    for _ in 0..50 {
                        write_atomic(&path, &body).unwrap();
                    }
                })
            })
            .collect();
        for _ in 0..200 {
            if let Ok(b) = std::fs::read(&path) {
                assert_eq!(b.len(), 64 * 1024);
                assert!(b.iter().all(|c| *c == b[0]), "a mix of two writers");
            }
        }
        for w in writers {
            w.join().unwrap();
        }
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|d| d.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("state.json")]);
    }
}
