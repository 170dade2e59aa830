#!/usr/bin/env python3
"""One game day across 100 agents on this host: what it costs the runner and the agents.

Starts N `faultline run` agents (default 100), each on a loopback address of its own
(127.77.x.y, a free port), with its own state directory and config: the collection interval
at its default, the API on with an operator token, OTLP export and the container collector
off, and one drill in its `drills:` — `bench-pause`: a process-pause of a `sleep` this script
started for that agent (by pid), held for --hold seconds, then a no-op command step; its
steady state is a TCP connect to a listener of this script on 127.0.0.1. Then, after a
warm-up, three windows of --window seconds each (a multiple of the collection interval and
of the one-minute process and connection scans, so that every window holds the same number
of collections):

1. idle: the agents do nothing but collect;
2. drills only: this script starts every agent's drill itself (one POST each) and does not
   read them back while they hold;
3. game day: `faultline gameday run` with one stage, `bench-pause` on `agents: all`, at the
   default `poll_interval`, `request_timeout` and `unreachable_after`.

Printed (as Markdown, for docs/PERFORMANCE.md):

- the runner's CPU time (whole life: wait4's rusage; and during the hold window, from its
  CPUCLOCK_SCHED clock, per poll) and its RSS (peak: rusage's maxrss and VmHWM; steady: the
  median VmRSS over the hold window, sampled every 100 ms);
- the skew between the first and the last drill start of the stage: from this script's own
  evidence (each victim's first moment in state T, /proc/<pid>/stat read every 2 ms), and
  from the report (each agent's fault apply, each drill's `started_at`, each `drill-start`
  event of the runner);
- the report's size (bytes of JSON and HTML) and how long writing them took (the runner's
  `game-day reports written` log line where the binary has it; the HTML's mtime minus the
  JSON's otherwise);
- the agents' CPU in each window (per agent, % of one core: the sum of their CPUCLOCK_SCHED
  clocks over the window divided by N and the window), and from it the cost of the runner's
  polling: game day minus drills only (and game day minus idle, which includes the drills'
  own probes).

Variants: --probe-interval 100ms gives the drills ten probe rounds a second (their reports
grow ten times faster: what a poll of the whole report costs grows with them); --tls serves
the agents' API over HTTPS with a throwaway CA made with openssl (a connection per poll then
costs a TLS handshake).

Only processes this script started are paused, signalled or killed; all traffic stays on
loopback. Everything it starts gets PR_SET_PDEATHSIG, and every exit path (the end, an
error, Ctrl-C, SIGTERM) stops the runner, the agents and the victims and removes the
temporary directory. SIGKILL of this script leaves only the temporary directory
(`faultline-gameday-bench-*` under --tmp).

Usage: benches/gameday_scale.py [--agents 100] [--window 60] [--warmup 35]
                                [--probe-interval 100ms] [--tls] [--json FILE]
                                [--faultline target/release/faultline] [--tmp /tmp] [--keep]
Needs: Linux, python3, a release build (built with cargo unless --faultline names a binary),
about 25 MiB of memory per agent, openssl for --tls. One run takes about 4 minutes.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from procstat import cpu_clock, status_kib  # noqa: E402 (benches/procstat.py)

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "gameday-bench-operator-token-0123456789"
PR_SET_PDEATHSIG = 1
# The agent's default collection interval and its process/connection scan interval: a
# window that is a multiple of both holds the same number of collections every time.
INTERVAL_S = 10
SCAN_S = 60
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent(sig: int):
    def pre() -> None:
        _libc.prctl(PR_SET_PDEATHSIG, sig)

    return pre


def free_port(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def trust(ca: Path) -> None:
    """This script's own calls trust the agents' CA (with --tls)."""
    global OPENER
    ctx = ssl.create_default_context(cafile=str(ca))
    OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))


def call(method: str, url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with OPENER.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Agent:
    name: str
    api: str  # host:port
    dir: Path
    victim: subprocess.Popen
    proc: subprocess.Popen | None = None


class StopWatch:
    """Each victim's first moment in state T (Unix seconds), read from /proc every `period`
    on a thread of its own: the script's own evidence of when each drill's fault landed."""

    def __init__(self, pids: list[int], period: float = 0.002) -> None:
        self.pids = pids
        self.period = period
        self.first_t: dict[int, float] = {}
        self.fds = {pid: os.open(f"/proc/{pid}/stat", os.O_RDONLY) for pid in pids}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def state(fd: int) -> str:
        return os.pread(fd, 512, 0).rsplit(b")", 1)[1].split()[0].decode()

    def _run(self) -> None:
        while not self.stop.is_set() and len(self.first_t) < len(self.pids):
            now = time.time()
            for pid, fd in self.fds.items():
                if pid not in self.first_t and self.state(fd) == "T":
                    self.first_t[pid] = now
            time.sleep(self.period)

    def wait_all(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if len(self.first_t) == len(self.pids):
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for fd in self.fds.values():
            os.close(fd)

    def any_stopped(self) -> bool:
        return any(self.state(fd) == "T" for fd in self.fds.values())


class RssSampler:
    """VmRSS of one process every 100 ms, with the time (monotonic)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self.hwm_kib = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                s = status_kib(self.pid)
            except OSError:
                return
            if "VmRSS" not in s:
                return  # exited: a zombie has no memory
            self.samples.append((time.monotonic(), s["VmRSS"]))
            self.hwm_kib = s["VmHWM"]
            time.sleep(0.1)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def probe_listener() -> socket.socket:
    """The drills' steady-state target: accepts and closes, on a thread of its own."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(1024)

    def serve() -> None:
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    return s


def scenario(victim: int, probe_port: int, hold: int, probe_interval: str | None) -> str:
    interval = f"probe_interval: {probe_interval}\n" if probe_interval else ""
    return f"""name: bench-pause
description: the bench's own sleep is paused (SIGSTOP) for {hold} s, then resumed
max_duration: 10m
{interval}steady_state:
  - name: loopback
    tcp: {{ address: "127.0.0.1:{probe_port}", timeout: 1s }}
fault_mode: sequence
faults:
  - fault: {{ kind: process-pause, pid: {victim}, duration: {hold}s }}
  - command: [true]
recovery: {{ strategy: self-heal, consecutive: 1, timeout: 30s }}
"""


def agent_config(api: str, tokens: Path, drill: Path, tls: tuple[Path, Path] | None) -> str:
    tls_lines = f"  cert_file: {tls[0]}\n  key_file: {tls[1]}\n" if tls else ""
    return f"""export:
  otlp:
    enabled: false
containers:
  enabled: false
api:
  enabled: true
  listen: {api}
  tokens_file: {tokens}
{tls_lines}drills:
  - scenario: {drill}
"""


def game_file(agents: list[Agent], token_file: Path, ca: Path | None) -> str:
    lines = ["name: bench-100", "description: one stage, a pause on every agent at once", "agents:"]
    scheme, ca_field = ("https", f", ca_file: {ca}") if ca else ("http", "")
    for a in agents:
        lines.append(f'  - {{ name: {a.name}, url: "{scheme}://{a.api}", token_file: {token_file}{ca_field} }}')
    lines += ["plan:", "  - name: all-at-once", "    scenario: bench-pause", "    agents: all", ""]
    return "\n".join(lines)


def agents_cpu(agents: list[Agent]) -> dict[str, float]:
    return {a.name: cpu_clock(a.proc.pid) for a in agents}  # type: ignore[union-attr]


def per_agent_pct(before: dict[str, float], after: dict[str, float], seconds: float) -> list[float]:
    return [(after[n] - before[n]) / seconds * 100 for n in before]


def skew(times: list[float]) -> float | None:
    return (max(times) - min(times)) if times else None


def make_certificates(d: Path, addrs: list[str]) -> tuple[Path, Path, Path]:
    """A throwaway CA and one server certificate for every agent address (openssl)."""
    run = lambda *a: subprocess.run(a, cwd=d, check=True, capture_output=True)  # noqa: E731
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=faultline-bench-ca")
    run("openssl", "req", *ec, "-keyout", "agent.key", "-out", "agent.csr", "-subj", "/CN=faultline-bench-agents")
    (d / "ext.cnf").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=" + ",".join(f"IP:{a}" for a in addrs) + "\n"
    )
    run("openssl", "x509", "-req", "-in", "agent.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "agent.pem", "-days", "2", "-extfile", "ext.cnf")
    return d / "ca.pem", d / "agent.pem", d / "agent.key"


def build_faultline() -> Path:
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "-p", "faultline-agent", "--bin", "faultline"],
        cwd=ROOT,
        check=True,
    )
    return ROOT / "target" / "release" / "faultline"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="faultline-gameday-bench-", dir=args.tmp))
        self.agents: list[Agent] = []
        self.runner: subprocess.Popen | None = None
        self.listener: socket.socket | None = None
        self.results: dict[str, object] = {}
        self.ca: Path | None = None
        self.scheme = "https" if args.tls else "http"

    # -- lifetime -----------------------------------------------------------------------

    def cleanup(self) -> None:
        if self.runner is not None and self.runner.returncode is None:
            # SIGINT: the runner pulls every agent's kill switch before it exits.
            self.runner.send_signal(signal.SIGINT)
            try:
                self.runner.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.runner.kill()
                self.runner.wait()
        for a in self.agents:
            if a.proc is not None and a.proc.poll() is None:
                a.proc.terminate()
        deadline = time.monotonic() + 15
        for a in self.agents:
            if a.proc is not None and a.proc.returncode is None:
                try:
                    a.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    a.proc.kill()
                    a.proc.wait()
        for a in self.agents:
            if a.victim.poll() is None:
                a.victim.kill()  # also ends a stopped process
            a.victim.wait()
        if self.listener is not None:
            self.listener.close()
        if self.args.keep:
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- set-up -------------------------------------------------------------------------

    def start(self, faultline: Path) -> None:
        n = self.args.agents
        self.listener = probe_listener()
        probe_port = self.listener.getsockname()[1]
        token_file = self.tmp / "token"
        token_file.write_text(TOKEN + "\n")
        tokens = self.tmp / "tokens.yaml"
        tokens.write_text(f"- {{name: gameday, role: operator, token: {TOKEN}}}\n")
        hold = self.args.settle + self.args.window + 10
        addrs = [f"127.77.{i // 250}.{i % 250 + 1}" for i in range(n)]
        tls = None
        if self.args.tls:
            self.ca, cert, key = make_certificates(self.tmp, addrs)
            trust(self.ca)
            tls = (cert, key)
        scheme = "https" if tls else "http"
        for i, addr in enumerate(addrs):
            name = f"node-{i + 1:03d}"
            api = f"{addr}:{free_port(addr)}"
            d = self.tmp / name
            (d / "state").mkdir(parents=True)
            victim = subprocess.Popen(
                ["sleep", "86400"], preexec_fn=die_with_parent(signal.SIGKILL), stdin=subprocess.DEVNULL
            )
            a = Agent(name, api, d, victim)
            self.agents.append(a)
            (d / "pause.yaml").write_text(scenario(victim.pid, probe_port, hold, self.args.probe_interval))
            (d / "faultline.yaml").write_text(agent_config(api, tokens, d / "pause.yaml", tls))
        for a in self.agents:
            a.proc = subprocess.Popen(
                [str(faultline), "--state-dir", str(a.dir / "state"), "run", "--config", str(a.dir / "faultline.yaml")],
                stdin=subprocess.DEVNULL,
                stdout=open(a.dir / "stdout.log", "wb"),
                stderr=open(a.dir / "stderr.log", "wb"),
                env=dict(os.environ, NODE_NAME=a.name),
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        deadline = time.monotonic() + 60
        for a in self.agents:
            while True:
                if a.proc.poll() is not None:  # type: ignore[union-attr]
                    raise SystemExit(f"{a.name} exited: {(a.dir / 'stderr.log').read_text()[-2000:]}")
                try:
                    if call("GET", f"{scheme}://{a.api}/healthz", timeout=2)[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{a.name} did not answer on {a.api} within 60 s")
                time.sleep(0.2)
        print(f"{n} agents answer; warming up {self.args.warmup} s", file=sys.stderr)
        time.sleep(self.args.warmup)

    def check_alive(self) -> None:
        for a in self.agents:
            if a.proc.poll() is not None:  # type: ignore[union-attr]
                raise SystemExit(f"{a.name} exited: {(a.dir / 'stderr.log').read_text()[-2000:]}")

    # -- windows ------------------------------------------------------------------------

    def window(self) -> tuple[dict[str, float], dict[str, float], float]:
        before, t0 = agents_cpu(self.agents), time.monotonic()
        time.sleep(self.args.window)
        after, t1 = agents_cpu(self.agents), time.monotonic()
        return before, after, t1 - t0

    def idle(self) -> None:
        self.check_alive()
        print(f"idle window: {self.args.window} s", file=sys.stderr)
        b, a, secs = self.window()
        self.results["idle"] = per_agent_pct(b, a, secs)

    def wait_resumed(self, watch_pids: list[int], timeout: float) -> None:
        fds = [os.open(f"/proc/{p}/stat", os.O_RDONLY) for p in watch_pids]
        try:
            end = time.monotonic() + timeout
            while any(StopWatch.state(fd) == "T" for fd in fds):
                if time.monotonic() > end:
                    raise SystemExit("victims still stopped long after their pause ended")
                time.sleep(0.2)
        finally:
            for fd in fds:
                os.close(fd)

    def drills_only(self) -> None:
        self.check_alive()
        pids = [a.victim.pid for a in self.agents]
        watch = StopWatch(pids)
        try:
            ids = []
            for a in self.agents:
                code, body = call("POST", f"{self.scheme}://{a.api}/v1/drills", b'{"scenario": "bench-pause"}')
                if code != 202:
                    raise SystemExit(f"{a.name}: POST /v1/drills answered {code}: {body[:300]!r}")
                ids.append(json.loads(body)["id"])
            if not watch.wait_all(30):
                raise SystemExit(f"only {len(watch.first_t)} of {len(pids)} victims were paused")
            self.results["drills_only_skew"] = skew(list(watch.first_t.values()))
        finally:
            watch.close()
        time.sleep(self.args.settle)
        print(f"drills-only window: {self.args.window} s", file=sys.stderr)
        b, a, secs = self.window()
        self.results["drills_only"] = per_agent_pct(b, a, secs)
        self.wait_resumed(pids, 60)
        # The drills end right after the pause (a no-op step, one passing round); read each
        # back once to see they passed.
        deadline = time.monotonic() + 30
        for agent, drill in zip(self.agents, ids):
            while True:
                code, body = call("GET", f"{self.scheme}://{agent.api}/v1/drills/{drill}")
                if code == 200 and json.loads(body)["verdict"] != "running":
                    v = json.loads(body)["verdict"]
                    if v != "passed":
                        raise SystemExit(f"{agent.name}: drill {drill} ended {v}")
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{agent.name}: drill {drill} did not end")
                time.sleep(0.2)

    def game_day(self, faultline: Path) -> None:
        self.check_alive()
        game = self.tmp / "game.yaml"
        game.write_text(game_file(self.agents, self.tmp / "token", self.ca))
        out_json, out_html = self.tmp / "game.json", self.tmp / "game.html"
        pids = [a.victim.pid for a in self.agents]
        watch = StopWatch(pids)
        log = open(self.tmp / "runner.log", "wb")
        t_start = time.time()
        self.runner = subprocess.Popen(
            [str(faultline), "--log-format", "json", "gameday", "run", str(game),
             "--report-json", str(out_json), "--html", str(out_html)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        rss = RssSampler(self.runner.pid)
        try:
            if not watch.wait_all(60):
                raise SystemExit(f"only {len(watch.first_t)} of {len(pids)} victims were paused")
            first_t = dict(watch.first_t)
        finally:
            watch.close()
        time.sleep(self.args.settle)
        print(f"game-day window: {self.args.window} s", file=sys.stderr)
        r0, m0 = cpu_clock(self.runner.pid), time.monotonic()
        b, a, secs = self.window()
        r1, m1 = cpu_clock(self.runner.pid), time.monotonic()
        self.results["game_day"] = per_agent_pct(b, a, secs)
        # Wait for the runner: wait4 gives its whole CPU time and peak RSS.
        deadline = time.monotonic() + 120
        while True:
            pid, status, usage = os.wait4(self.runner.pid, os.WNOHANG)
            if pid:
                self.runner.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise SystemExit("the game did not end within 120 s of its window")
            time.sleep(0.05)
        rss.close()
        log.close()
        steady = [kib for (t, kib) in rss.samples if m0 <= t <= m1]
        report = json.loads(out_json.read_text())
        text = (self.tmp / "runner.log").read_text()
        if self.runner.returncode != 0:
            raise SystemExit(f"the game ended {self.runner.returncode} ({report['verdict']}): {report['reason']}\n{text[-3000:]}")
        polls = self.args.agents * (m1 - m0) / self.args.poll
        applies, starts = [], []
        for run in report["runs"]:
            rep = run["report"]
            starts.append(rep["started_at"])
            applies += [e["at"] for e in rep["timeline"] if e["kind"] == "fault-apply"][:1]
        runner_starts = [e["at"] for e in report["timeline"] if e["kind"] == "drill-start"]
        written = None
        for line in text.splitlines():
            if "game-day reports written" in line:
                f = json.loads(line)["fields"]
                written = (f["json_ms"], f["html_ms"])
        self.results.update(
            runner_cpu_s=usage.ru_utime + usage.ru_stime,
            runner_wall_s=report["finished_at"] - report["started_at"],
            runner_window_cpu_pct=(r1 - r0) / (m1 - m0) * 100,
            runner_cpu_per_poll_ms=(r1 - r0) / polls * 1000,
            runner_maxrss_mib=usage.ru_maxrss / 1024,
            runner_hwm_mib=rss.hwm_kib / 1024,
            runner_steady_mib=statistics.median(steady) / 1024 if steady else float("nan"),
            skew_proc=skew(list(first_t.values())),
            skew_apply=skew(applies),
            skew_started=skew(starts),
            skew_runner=skew(runner_starts),
            first_pause_after_s=min(first_t.values()) - t_start,
            verdict=report["verdict"],
            runs=len(report["runs"]),
            json_bytes=out_json.stat().st_size,
            html_bytes=out_html.stat().st_size,
            written_ms=written,
            html_mtime_ms=(out_html.stat().st_mtime_ns - out_json.stat().st_mtime_ns) / 1e6,
        )
        self.wait_resumed(pids, 60)


def report(args: argparse.Namespace, r: dict, binary: Path, started: str, load: str) -> None:
    def med(xs: list[float]) -> str:
        return f"{statistics.median(xs):.3f} % (min {min(xs):.3f}, max {max(xs):.3f})"

    idle, drills, game = r["idle"], r["drills_only"], r["game_day"]
    poll_cost = [g - d for g, d in zip(game, drills)]
    n = args.agents
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    written = (
        f"JSON {r['written_ms'][0]:.1f} ms, HTML {r['written_ms'][1]:.1f} ms (runner's log)"
        if r["written_ms"]
        else "n/a in the runner's log"
    )
    print(
        f"\n{started} UTC · {n} agents · window {args.window} s · poll_interval {args.poll:g} s (default)"
        f" · drill probe_interval {args.probe_interval or '1s (default)'}{' · HTTPS' if args.tls else ' · HTTP'}"
        f" · load average at start {load} · {os.cpu_count()} CPUs · {binary}\n"
    )
    print("| figure | value | target |")
    print("| --- | --- | --- |")
    print(f"| game | {r['verdict']}, {r['runs']} runs, {r['runner_wall_s']:.1f} s | |")
    print(f"| runner CPU, whole game (rusage) | {r['runner_cpu_s']:.2f} s | |")
    print(
        f"| runner CPU while the drills hold | {r['runner_window_cpu_pct']:.2f} % of one core, "
        f"{r['runner_cpu_per_poll_ms']:.3f} ms per poll | |"
    )
    print(
        f"| runner RSS peak (rusage maxrss / VmHWM) | {r['runner_maxrss_mib']:.1f} / {r['runner_hwm_mib']:.1f} MiB"
        " | < 100 MiB |"
    )
    print(f"| runner RSS steady (median VmRSS while the drills hold) | {r['runner_steady_mib']:.1f} MiB | < 100 MiB |")
    print(f"| skew of the pauses, /proc state T (bench, 2 ms sampling) | {r['skew_proc'] * 1000:.0f} ms | < 1 s |")
    print(f"| skew of the fault applies (agents' reports) | {r['skew_apply'] * 1000:.0f} ms | < 1 s |")
    print(f"| skew of the drills' `started_at` (agents' reports) | {r['skew_started'] * 1000:.0f} ms | |")
    print(f"| skew of the runner's `drill-start` events | {r['skew_runner'] * 1000:.0f} ms | |")
    print(f"| first pause after the runner's exec | {r['first_pause_after_s']:.2f} s | |")
    print(f"| (drills only: the bench's POSTs one after the other, skew of the pauses) | {r['drills_only_skew'] * 1000:.0f} ms | |")
    print(f"| report size | JSON {r['json_bytes'] / 1024:.0f} KiB, HTML {r['html_bytes'] / 1024:.0f} KiB | |")
    print(f"| report writing | {written}; HTML mtime − JSON mtime {r['html_mtime_ms']:.1f} ms | |")
    print(f"| agent CPU idle (per agent, % of one core) | {med(idle)} | |")
    print(f"| agent CPU, drills held, not polled | {med(drills)} | |")
    print(f"| agent CPU, drills held, game-day polling | {med(game)} | |")
    print(
        f"| **polling cost per agent** (game day − drills only) | mean {mean(poll_cost):.3f} %, median "
        f"{statistics.median(poll_cost):.3f} % of one core | < 1 % |"
    )
    print(f"| game day − idle (polling + the drills' probes) | mean {mean([g - i for g, i in zip(game, idle)]):.3f} % | |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=100)
    p.add_argument(
        "--window",
        type=int,
        default=60,
        help=f"seconds of each measured window (default 60; a multiple of {SCAN_S})",
    )
    p.add_argument("--warmup", type=int, default=35, help="seconds after every agent answers (default 35)")
    p.add_argument("--settle", type=int, default=3, help="seconds between the last pause and a window")
    p.add_argument("--probe-interval", help="the drill's probe_interval (default: the scenario default, 1s)")
    p.add_argument("--tls", action="store_true", help="the agents' API over HTTPS (a throwaway CA made with openssl)")
    p.add_argument("--poll", type=float, default=1.0, help="the game's poll_interval as the binary defaults it")
    p.add_argument("--faultline", help="faultline binary (default: build target/release/faultline)")
    p.add_argument("--tmp", default=tempfile.gettempdir(), help="where the temporary directory goes")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, reports)")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    if args.window % SCAN_S:
        print(f"warning: a --window that is not a multiple of {SCAN_S} s holds an uneven number of the "
              "agents' collections: the CPU figures are rough", file=sys.stderr)
    faultline = Path(args.faultline).resolve() if args.faultline else build_faultline()
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    bench = Bench(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        bench.start(faultline)
        bench.idle()
        bench.drills_only()
        bench.game_day(faultline)
    finally:
        bench.cleanup()
    report(args, bench.results, faultline, started, load)
    if args.json:
        Path(args.json).write_text(json.dumps(bench.results, indent=1))


if __name__ == "__main__":
    main()
