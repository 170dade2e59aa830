//! `faultline-workload`: a small, statically linkable program that puts a known load on the
//! machine, so tests can build a container image `FROM scratch` around it (no image can be
//! pulled on the project's machines) and compare what faultline reports with what was done.
//!
//! ```text
//! faultline-workload [--cpu SHARE] [--mem SIZE] [--write SIZE --write-path PATH]
//!                    [--loopback SIZE] [--listen ADDR] [--duration DUR|forever]
//! ```
//!
//! - `--cpu 0.5` burns half a core (1.5: one and a half), in 100 ms duty cycles, until exit.
//! - `--mem 64MiB` allocates that much and writes to every page, so it is resident.
//! - `--write 10MiB --write-path /data/x` writes that many bytes to the file and `fsync`s it,
//!   so the bytes reach the block layer inside the process's own cgroup (on cgroup v1
//!   buffered writeback is not charged to the writer; `fsync` issued by the writer is).
//! - `--loopback 1MiB` sends that many bytes over a TCP connection to itself on 127.0.0.1.
//! - `--listen 0.0.0.0:7000` serves a TCP echo on the address until exit.
//! - `--duration 30s` exits after that long; the default is to run until SIGTERM or SIGINT.
//!
//! Memory, write and loopback run first, in that order; then one line
//! `ready mem=<bytes> write=<bytes> loopback=<bytes>` goes to stdout, and the CPU burners and
//! the listener run until exit. SIGTERM and SIGINT exit at once with status 0 (as PID 1 in a
//! container the default action would be ignored, making `docker stop` wait for its timeout).
//! Bad arguments print usage to stderr and exit with status 2.
//!
//! Sizes: a number with an optional unit `B`, `KiB`, `MiB`, `GiB` (binary) or `kB`, `MB`,
//! `GB` (decimal). Durations: a number with `ms`, `s`, `m` or `h`, or `forever`.
//!
//! Two more modes, `supervise` (a tiny PID 1 that restarts commands) and `ping` (an echo
//! round trip), serve the multi-node game-day test: see [`modes`].
//!
//! Not for: benchmarking anything; the duty-cycle CPU burn is accurate to a few percent only.
#![forbid(unsafe_code)]
// A stand-alone load generator: its worker threads exist to sleep between bursts, and ending
// the whole process at once on a signal or deadline is the point.
#![allow(clippy::disallowed_methods)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

const USAGE: &str = "usage: faultline-workload supervise|ping … (see the module docs) or faultline-workload [--cpu SHARE] [--mem SIZE] [--write SIZE --write-path PATH] [--loopback SIZE] [--listen ADDR] [--duration DUR|forever]";

/// The parsed command line.
#[derive(Debug, Default, PartialEq)]
struct Args {
    cpu: f64,
    mem: u64,
    write: u64,
    write_path: Option<String>,
    loopback: u64,
    listen: Option<String>,
    duration: Option<Duration>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 64MiB"))?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "{s:?}: unknown size unit {other:?} (B, KiB, MiB, GiB, kB, MB, GB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too large"))
}

fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    if s == "forever" {
        return Ok(None);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 30s"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        other => {
            return Err(format!(
                "{s:?}: unknown duration unit {other:?} (ms, s, m, h)"
            ));
        }
    };
    Ok(Some(d))
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--cpu" => {
                let v = value()?;
                a.cpu = v
                    .parse()
                    .map_err(|_| format!("--cpu {v:?}: expected a share of a core such as 0.5"))?;
                if !(0.0..=64.0).contains(&a.cpu) {
                    return Err(format!("--cpu {v}: must be between 0 and 64"));
                }
            }
            "--mem" => a.mem = parse_size(&value()?)?,
            "--write" => a.write = parse_size(&value()?)?,
            "--write-path" => a.write_path = Some(value()?),
            "--loopback" => a.loopback = parse_size(&value()?)?,
            "--listen" => a.listen = Some(value()?),
            "--duration" => a.duration = parse_duration(&value()?)?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.write > 0 && a.write_path.is_none() {
        return Err("--write needs --write-path".to_owned());
    }
    Ok(a)
}

/// Allocates `bytes` and dirties every page; the buffer is returned so it stays resident.
fn hold_memory(bytes: u64) -> Result<Vec<u8>, String> {
    let len =
        usize::try_from(bytes).map_err(|_| format!("--mem {bytes}: too large for this machine"))?;
    let mut v = vec![0u8; len];
    for i in (0..len).step_by(4096) {
        v[i] = 1;
    }
    Ok(std::hint::black_box(v))
}

fn write_file(path: &str, bytes: u64) -> Result<(), String> {
    let mut f = File::create(path).map_err(|e| format!("create {path}: {e}"))?;
    let chunk = vec![0xa5u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        f.write_all(&chunk[..n])
            .map_err(|e| format!("write {path}: {e}"))?;
        left -= n as u64;
    }
    f.sync_all().map_err(|e| format!("fsync {path}: {e}"))
}

fn loopback(bytes: u64) -> Result<(), String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?;
    let reader = std::thread::spawn(move || -> Result<u64, String> {
        let (mut s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    });
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let chunk = vec![0x5au8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        s.write_all(&chunk[..n]).map_err(|e| format!("send: {e}"))?;
        left -= n as u64;
    }
    drop(s);
    let got = reader
        .join()
        .map_err(|_| "loopback reader panicked".to_owned())??;
    if got != bytes {
        return Err(format!("loopback: sent {bytes} bytes, received {got}"));
    }
    Ok(())
}

/// Burns `share` of one core in 100 ms duty cycles, forever.
fn burn(share: f64) {
    let period = Duration::from_millis(100);
    let busy = period.mul_f64(share.clamp(0.0, 1.0));
    loop {
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < busy {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let spent = start.elapsed();
        if spent < period {
            std::thread::sleep(period - spent);
        }
    }
}

fn echo(mut s: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

fn serve(listener: TcpListener) {
    for s in listener.incoming().flatten() {
        std::thread::spawn(move || echo(s));
    }
}

fn run(a: &Args) -> Result<(), String> {
    // Block the exit signals before any thread exists, so every thread inherits the mask and
    // the main thread receives them through `wait` below.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;

    let memory = hold_memory(a.mem)?;
    if let Some(path) = &a.write_path {
        write_file(path, a.write)?;
    }
    if a.loopback > 0 {
        loopback(a.loopback)?;
    }
    if let Some(addr) = &a.listen {
        let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        std::thread::spawn(move || serve(listener));
    }
    let mut left = a.cpu;
    while left > 0.0 {
        let share = left.min(1.0);
        std::thread::spawn(move || burn(share));
        left -= share;
    }
    if let Some(d) = a.duration {
        std::thread::spawn(move || {
            std::thread::sleep(d);
            std::process::exit(0);
        });
    }
    println!(
        "ready mem={} write={} loopback={}",
        memory.len(),
        a.write,
        a.loopback
    );
    let _ = std::io::stdout().flush();
    let sig = signals
        .wait()
        .map_err(|e| format!("waiting for a signal: {e}"))?;
    eprintln!("{sig:?} received, exiting");
    drop(memory);
    Ok(())
}

mod modes;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mode = match argv.first().map(String::as_str) {
        Some("supervise") => Some(modes::supervise(&argv[1..]).map(|()| true)),
        Some("ping") => Some(modes::ping(&argv[1..])),
        _ => None,
    };
    if let Some(result) = mode {
        match result {
            Ok(true) => std::process::exit(0),
            Ok(false) => std::process::exit(1),
            Err(e) => {
                eprintln!("faultline-workload: {e}");
                std::process::exit(2);
            }
        }
    }
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("faultline-workload: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("faultline-workload: {e}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(&s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn sizes_durations_and_flags_parse() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert_eq!(
            parse_duration("250ms"),
            Ok(Some(Duration::from_millis(250)))
        );
        assert_eq!(parse_duration("forever"), Ok(None));
        assert!(parse_duration("3 fortnights").is_err());
        let a = args("--cpu 0.5 --mem 64MiB --write 10MiB --write-path /data/x --duration 30s")
            .unwrap();
        assert_eq!(a.cpu, 0.5);
        assert_eq!(a.mem, 64 << 20);
        assert_eq!(a.write_path.as_deref(), Some("/data/x"));
        assert!(args("--write 1MiB").unwrap_err().contains("--write-path"));
        assert!(args("--cpu").unwrap_err().contains("needs a value"));
        assert!(args("--cpu -1").is_err());
        assert!(args("--bogus").unwrap_err().contains("--bogus"));
    }

    #[test]
    fn work_is_done_as_asked() {
        assert_eq!(hold_memory(3 * 4096 + 1).unwrap().len(), 3 * 4096 + 1);
        let dir = std::env::temp_dir().join(format!("faultline-workload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x");
        write_file(path.to_str().unwrap(), 3 << 20).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 << 20);
        std::fs::remove_dir_all(&dir).unwrap();
        loopback(1 << 20).unwrap();
    }
}
