//! The child side of helper processes: what runs inside one, the agent binary in its hidden
//! mode `faultline __chaos-worker --parent PID (cpu|memory|io) …` ([`super::parent`] starts
//! it). The binary's `main` hands its arguments to [`main`] when the first one is
//! [`crate::WORKER_ARG`]; nothing else in the agent starts.
//!
//! First thing, the helper asks the kernel to SIGKILL it when its parent dies
//! (`PR_SET_PDEATHSIG`), then exits if its parent is already not the pid it was given — so
//! no helper outlives the agent, even one killed with SIGKILL. It prints
//! [`super::READY_LINE`] once it is doing its job and runs until it is killed.
//!
//! Its work runs on plain threads with blocking sleeps: this process has no async runtime.
#![allow(clippy::disallowed_methods)] // std::thread::sleep: worker threads, no async runtime here

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;

use super::READY_LINE;

#[derive(Debug, Parser)]
#[command(name = "__chaos-worker", about = "faultline's fault helper (internal)")]
struct Args {
    /// The agent's pid; the worker exits when it is not its parent.
    #[arg(long)]
    parent: i32,
    #[command(subcommand)]
    job: Job,
}

#[derive(Debug, Subcommand)]
enum Job {
    /// Busy threads.
    Cpu {
        #[arg(long)]
        workers: u32,
        #[arg(long)]
        load: f64,
    },
    /// Allocate and touch memory.
    Memory {
        #[arg(long)]
        bytes: u64,
    },
    /// Read or write at a rate.
    Io {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        direction: String,
        #[arg(long)]
        rate: u64,
        #[arg(long)]
        scratch: u64,
    },
}

/// Runs the worker; `args` are the arguments after [`crate::WORKER_ARG`]. Returns only on
/// error (a running worker is ended by a signal).
pub fn main<I: IntoIterator<Item = String>>(args: I) -> ExitCode {
    let args = match Args::try_parse_from(std::iter::once("__chaos-worker".to_owned()).chain(args))
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("faultline chaos worker: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        eprintln!("faultline chaos worker: cannot set PR_SET_PDEATHSIG: {e}");
        return ExitCode::FAILURE;
    }
    // The parent may have died between fork and prctl: then nobody would kill us.
    if nix::unistd::getppid().as_raw() != args.parent {
        eprintln!(
            "faultline chaos worker: parent {} is gone; exiting",
            args.parent
        );
        return ExitCode::FAILURE;
    }
    let result = match args.job {
        Job::Cpu { workers, load } => cpu(workers, load),
        Job::Memory { bytes } => memory(bytes),
        Job::Io {
            file,
            direction,
            rate,
            scratch,
        } => io(&file, &direction, rate, scratch),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faultline chaos worker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ready() -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY_LINE}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot report ready: {e}"))
}

fn hold() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

const PERIOD: Duration = Duration::from_millis(100);

fn cpu(workers: u32, load: f64) -> Result<(), String> {
    let busy = PERIOD.mul_f64((load / 100.0).clamp(0.0, 1.0));
    for i in 0..workers {
        std::thread::Builder::new()
            .name(format!("cpu-{i}"))
            .spawn(move || {
                loop {
                    let start = Instant::now();
                    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
                    while start.elapsed() < busy {
                        for _ in 0..1000 {
                            x = std::hint::black_box(x.rotate_left(5) ^ x.wrapping_mul(31));
                        }
                    }
                    if let Some(rest) = PERIOD.checked_sub(start.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
            })
            .map_err(|e| format!("cannot start cpu thread {i}: {e}"))?;
    }
    ready()?;
    hold()
}

fn memory(bytes: u64) -> Result<(), String> {
    // Be the OOM killer's first choice, never the workload's neighbour.
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    let n = usize::try_from(bytes).map_err(|_| format!("{bytes} bytes do not fit in memory"))?;
    let mut buf: Vec<u8> = Vec::new();
    buf.try_reserve_exact(n)
        .map_err(|e| format!("cannot allocate {bytes} bytes: {e}"))?;
    // Write every byte (not just one per page) so no page stays shared with the zero page.
    buf.resize(n, 0x5A);
    std::hint::black_box(&buf);
    ready()?;
    hold()
}

fn io(file: &PathBuf, direction: &str, rate: u64, scratch: u64) -> Result<(), String> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    let chunk_len = usize::try_from((rate / 10).clamp(4096, 8 << 20)).unwrap_or(4096);
    let mut chunk = vec![0xC3u8; chunk_len];
    let write = match direction {
        "write" => true,
        "read" => {
            let mut left = scratch;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])
                    .map_err(|e| format!("cannot prepare {}: {e}", file.display()))?;
                left -= n as u64;
            }
            f.sync_all()
                .map_err(|e| format!("cannot sync {}: {e}", file.display()))?;
            false
        }
        other => return Err(format!("unknown direction {other:?}")),
    };
    ready()?;
    let start = Instant::now();
    let mut done: u64 = 0;
    let mut offset: u64 = 0;
    loop {
        let n = chunk
            .len()
            .min(usize::try_from(scratch - offset).unwrap_or(chunk.len()));
        if write {
            f.write_all_at(&chunk[..n], offset)
                .map_err(|e| format!("write {}: {e}", file.display()))?;
            f.sync_data()
                .map_err(|e| format!("fdatasync {}: {e}", file.display()))?;
        } else {
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| format!("seek {}: {e}", file.display()))?;
            f.read_exact(&mut chunk[..n])
                .map_err(|e| format!("read {}: {e}", file.display()))?;
        }
        done += n as u64;
        offset += n as u64;
        if offset >= scratch {
            offset = 0;
            if !write {
                // Drop the file from the page cache so the next pass reads the device.
                let _ = nix::fcntl::posix_fadvise(
                    &f,
                    0,
                    0,
                    nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
                );
            }
        }
        let due = Duration::from_secs_f64(done as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}
