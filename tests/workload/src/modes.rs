//! Two more modes of the workload, for the multi-node game-day test (`tests/gameday.rs`),
//! whose node containers are `FROM scratch` and so have no shell, init or client tools:
//!
//! ```text
//! faultline-workload supervise [--restart-delay DUR] -- CMD ARGS… [::: CMD ARGS…]…
//! faultline-workload ping ADDR[,ADDR…] [--timeout DUR] [--max-rtt DUR]
//! ```
//!
//! - `supervise` is a tiny PID 1: it starts every command, restarts one `--restart-delay`
//!   (500ms) after it exits, reaps every orphan, and on SIGTERM/SIGINT sends SIGTERM to its
//!   commands, waits up to 5 s (then SIGKILL) and exits 0. It prints `started PID CMD` and
//!   `exited PID STATUS` lines.
//! - `ping` connects to the first address that accepts, sends 32 bytes to the echo service,
//!   reads them back and prints `rtt_ms=<ms> via=<addr>`; exit 0 when the echo came back
//!   (within `--max-rtt` when given), 1 otherwise. Addresses after the first are fallbacks (a proxy's port that only exists
//!   while a latency fault is active, then the service's own port).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::parse_duration;

fn spawn(cmd: &[String]) -> Option<i32> {
    match Command::new(&cmd[0]).args(&cmd[1..]).spawn() {
        Ok(c) => {
            let pid = i32::try_from(c.id()).ok()?;
            println!("started {pid} {}", cmd.join(" "));
            let _ = std::io::stdout().flush();
            Some(pid)
        }
        Err(e) => {
            eprintln!("faultline-workload supervise: cannot start {}: {e}", cmd[0]);
            None
        }
    }
}

/// `supervise`.
pub fn supervise(argv: &[String]) -> Result<(), String> {
    let mut delay = Duration::from_millis(500);
    let mut it = argv.iter();
    loop {
        match it.next().map(String::as_str) {
            Some("--restart-delay") => {
                delay = parse_duration(it.next().ok_or("--restart-delay needs a value")?)?
                    .ok_or("--restart-delay: not forever")?;
            }
            Some("--") => break,
            other => {
                return Err(format!(
                    "supervise: expected --restart-delay or --, got {other:?}"
                ));
            }
        }
    }
    let rest: Vec<String> = it.cloned().collect();
    let cmds: Vec<Vec<String>> = rest
        .split(|a| a == ":::")
        .map(<[String]>::to_vec)
        .filter(|c| !c.is_empty())
        .collect();
    if cmds.is_empty() {
        return Err("supervise: no command after --".into());
    }
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGCHLD);
    signals
        .thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    // std resets the signal mask in the children it spawns.
    let mut pids: Vec<Option<i32>> = cmds.iter().map(|c| spawn(c)).collect();
    loop {
        let sig = signals
            .wait()
            .map_err(|e| format!("waiting for a signal: {e}"))?;
        if sig != Signal::SIGCHLD {
            eprintln!("supervise: {sig:?}: stopping {} commands", pids.len());
            for pid in pids.iter().flatten() {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Err(_) => return Ok(()), // no child left
                    Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
                    Ok(_) => {}
                }
            }
            for pid in pids.iter().flatten() {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            return Ok(());
        }
        let mut exited = Vec::new();
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(st) => {
                    if let Some(pid) = st.pid()
                        && let Some(i) = pids.iter().position(|p| *p == Some(pid.as_raw()))
                    {
                        println!("exited {} {st:?}", pid.as_raw());
                        exited.push(i);
                    }
                }
            }
        }
        if !exited.is_empty() {
            std::thread::sleep(delay);
            for i in exited {
                pids[i] = spawn(&cmds[i]);
            }
        }
    }
}

/// `ping`.
pub fn ping(argv: &[String]) -> Result<bool, String> {
    let mut timeout = Duration::from_secs(2);
    let mut max_rtt: Option<Duration> = None;
    let mut addrs: Vec<String> = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--timeout" => {
                timeout = parse_duration(it.next().ok_or("--timeout needs a value")?)?
                    .ok_or("--timeout: not forever")?;
            }
            "--max-rtt" => {
                max_rtt = parse_duration(it.next().ok_or("--max-rtt needs a value")?)?;
            }
            list => addrs.extend(list.split(',').map(str::to_owned)),
        }
    }
    if addrs.is_empty() {
        return Err("ping: name at least one ADDR".into());
    }
    for addr in &addrs {
        let Some(sa) = addr.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
            return Err(format!("ping: {addr:?} is not host:port"));
        };
        let Ok(mut s) = TcpStream::connect_timeout(&sa, timeout) else {
            continue;
        };
        let t = Instant::now();
        let msg = [0x5au8; 32];
        let _ = s.set_read_timeout(Some(timeout));
        let mut back = [0u8; 32];
        let echoed = s.write_all(&msg).is_ok() && s.read_exact(&mut back).is_ok() && back == msg;
        let rtt = t.elapsed();
        let slow = max_rtt.is_some_and(|m| rtt > m);
        println!(
            "rtt_ms={:.3} via={addr}{}",
            rtt.as_secs_f64() * 1000.0,
            if !echoed {
                " (no echo)"
            } else if slow {
                " (slower than --max-rtt)"
            } else {
                ""
            }
        );
        return Ok(echoed && !slow);
    }
    println!("no address accepted a connection: {}", addrs.join(","));
    Ok(false)
}
