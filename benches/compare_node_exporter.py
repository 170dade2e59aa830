#!/usr/bin/env python3
"""Overhead of faultline against Debian's prometheus-node-exporter, side by side.

Runs both on this host for a fixed time at the same interval and prints each one's peak and
steady RSS, CPU per collection, and the ratios, as a Markdown table (docs/PERFORMANCE.md keeps
the results with the command and the date).

- faultline: the release binary, `faultline run` collecting every INTERVAL and exporting over
  OTLP/HTTP to a throwaway sink in this script (the production path: collect, encode, queue on
  disk — no fdatasync while the backend keeps up — send). Backups off; the container collector off unless
  --containers is given; the Prometheus endpoint off. Its state directory is a temp dir.
- node_exporter: its default collectors on 127.0.0.1, scraped by this script every INTERVAL
  (a scrape is its collection cycle).

Sampling, every second: VmRSS and VmHWM from /proc/<pid>/status, utime+stime from
/proc/<pid>/stat (10 ms ticks), and the process CPU clock (clock_gettime on the process's
CPUCLOCK_SCHED clock: nanoseconds, whole thread group, exited threads included), which is the
figure the table uses; the tick-based one is printed alongside as a cross-check.

- peak RSS: VmHWM at the end (includes start-up).
- steady RSS: median VmRSS over the second half of the run.
- CPU per cycle: CPU used from the end of the fourth cycle/scrape (start-up excluded, and
  printed as its own row) to the
  end, divided by the cycles/scrapes completed in that window.

--containers N first starts N idle containers of the project's own workload image
(`FROM scratch` around the static tests/workload binary; nothing is pulled), turns faultline's
container collector on (unless --without-container-collector: the like-for-like comparison on a
host running containers, node_exporter having no per-container collector), and removes exactly
those containers afterwards (also on Ctrl-C).

Usage: benches/compare_node_exporter.py [--duration 60] [--interval 10] [--containers 100]
Needs: Linux, python3, prometheus-node-exporter (apt-get install prometheus-node-exporter),
cargo (builds target/release/faultline unless --faultline names a binary), and for
--containers a running Docker engine.
"""

from __future__ import annotations

import argparse
import http.server
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
IMAGE = "faultline-bench-workload:latest"
# Cycles counted as start-up, excluded from "CPU per cycle" and shown as their own row: the
# agent's first cycles do one-off work (the first process and connection scans, exporter
# connections, and after the third cycle the one-time hand-back of its start-up code pages,
# agent/src/residency.rs), node_exporter's first scrapes its own set-up.
WARMUP_CYCLES = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_clock(pid: int) -> float:
    """The process's CPU time in seconds (CPUCLOCK_SCHED of the thread group)."""
    return time.clock_gettime((~pid << 3) | 2)


def stat_cpu(pid: int) -> float:
    """utime + stime from /proc/<pid>/stat, in seconds (tick resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of the line; `rest` starts at field 3.
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def status_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


@dataclass
class Sampled:
    name: str
    pid: int
    rss_kib: list[tuple[float, int]] = field(default_factory=list)
    hwm_kib: int = 0
    cycles: int = 0
    # (cpu clock, stat cpu, cycles) at the end of the start-up cycles (WARMUP_CYCLES)
    warm: tuple[float, float, int] | None = None
    end: tuple[float, float, int] | None = None

    def sample(self, t: float) -> None:
        s = status_kib(self.pid)
        self.rss_kib.append((t, s["VmRSS"]))
        self.hwm_kib = s["VmHWM"]

    def mark_cycle(self) -> None:
        self.cycles += 1
        if self.cycles == WARMUP_CYCLES:
            self.warm = (cpu_clock(self.pid), stat_cpu(self.pid), WARMUP_CYCLES)

    def finish(self) -> None:
        self.end = (cpu_clock(self.pid), stat_cpu(self.pid), self.cycles)

    def results(self, t_end: float) -> dict[str, float]:
        assert self.warm and self.end, f"{self.name}: no complete cycle was observed"
        n = self.end[2] - self.warm[2]
        if n <= 0:
            raise SystemExit(f"{self.name}: fewer than two cycles; run longer (--duration)")
        half = t_end / 2
        steady = [kib for (t, kib) in self.rss_kib if t >= half] or [self.rss_kib[-1][1]]
        return {
            "peak_mib": self.hwm_kib / 1024,
            "steady_mib": statistics.median(steady) / 1024,
            "cpu_ms": (self.end[0] - self.warm[0]) / n * 1000,
            "startup_ms": self.warm[0] * 1000,
            "cpu_ms_ticks": (self.end[1] - self.warm[1]) / n * 1000,
            "cycles": n,
        }


class Sink(http.server.BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports: 200 with an empty ExportMetricsServiceResponse.

    HTTP/1.1 with keep-alive, as an OpenTelemetry Collector answers: the exporter keeps one
    connection open instead of connecting for every export (http.server's default is
    HTTP/1.0, which closes after every response)."""

    protocol_version = "HTTP/1.1"
    counter: Sampled | None = None

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
        if Sink.counter is not None:
            Sink.counter.mark_cycle()

    def log_message(self, *args: object) -> None:
        pass


def build_faultline() -> Path:
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "-p", "faultline-agent", "--bin", "faultline"],
        cwd=ROOT,
        check=True,
    )
    return ROOT / "target" / "release" / "faultline"


def build_workload_image() -> None:
    triple = f"{os.uname().machine}-unknown-linux-gnu"
    env = dict(os.environ, RUSTFLAGS="-C target-feature=+crt-static")
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "-p", "faultline-workload", "--target", triple],
        cwd=ROOT,
        env=env,
        check=True,
    )
    binary = ROOT / "target" / triple / "release" / "faultline-workload"
    with tempfile.TemporaryDirectory() as ctx:
        shutil.copy(binary, Path(ctx) / "faultline-workload")
        (Path(ctx) / "Dockerfile").write_text(
            "FROM scratch\nLABEL org.faultline.bench=workload\n"
            "COPY faultline-workload /faultline-workload\n"
            'ENTRYPOINT ["/faultline-workload"]\n'
        )
        subprocess.run(
            ["docker", "build", "-q", "-t", IMAGE, ctx],
            env=dict(os.environ, DOCKER_BUILDKIT="0"),
            check=True,
            stdout=subprocess.DEVNULL,
        )


def start_containers(n: int, started: list[str]) -> None:
    for i in range(n):
        out = subprocess.run(
            ["docker", "run", "-d", "--label", "org.faultline.bench=1", "--name",
             f"faultline-bench-{os.getpid()}-{i}", IMAGE],
            check=True,
            capture_output=True,
            text=True,
        )
        started.append(out.stdout.strip())


def remove_containers(started: list[str]) -> None:
    for i in range(0, len(started), 50):
        subprocess.run(
            ["docker", "rm", "-f", *started[i : i + 50]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    started.clear()


def faultline_config(
    sink_port: int, interval: int, containers: bool, persistent: bool, scans: bool
) -> str:
    return f"""interval: {interval}s
shutdown_grace: 2s
logging: {{level: warn}}
host:
  processes: {str(scans).lower()}
  connections: {str(scans).lower()}
containers:
  enabled: {str(containers).lower()}
export:
  otlp:
    enabled: true
    protocol: http/protobuf
    endpoint: http://127.0.0.1:{sink_port}
    queue: {{persistent: {str(persistent).lower()}}}
  prometheus:
    enabled: false
backups: []
"""


def run(args: argparse.Namespace) -> None:
    faultline = Path(args.faultline) if args.faultline else build_faultline()
    started: list[str] = []
    procs: list[subprocess.Popen] = []
    tmp = tempfile.TemporaryDirectory(prefix="faultline-compare-")

    def cleanup(*_: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        remove_containers(started)
        tmp.cleanup()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        if args.containers:
            build_workload_image()
            print(f"starting {args.containers} idle workload containers…", file=sys.stderr)
            start_containers(args.containers, started)

        sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
        threading.Thread(target=sink.serve_forever, daemon=True).start()
        cfg = Path(tmp.name) / "faultline.yaml"
        cfg.write_text(
            faultline_config(
                sink.server_address[1],
                args.interval,
                bool(args.containers) and not args.without_container_collector,
                not args.memory_queue,
                not args.without_scans,
            )
        )
        fl = subprocess.Popen(
            [str(faultline), "--state-dir", str(Path(tmp.name) / "state"), "run", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp.name) / "faultline.log", "w"),
        )
        procs.append(fl)
        ne_port = free_port()
        ne = subprocess.Popen(
            [args.node_exporter, f"--web.listen-address=127.0.0.1:{ne_port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(ne)
        f_s, n_s = Sampled("faultline", fl.pid), Sampled("node_exporter", ne.pid)
        Sink.counter = f_s

        t0 = time.monotonic()
        next_scrape = t0 + 1.0  # give it a moment to listen
        next_sample = t0
        while (now := time.monotonic()) - t0 < args.duration:
            for p in procs:
                if p.poll() is not None:
                    raise SystemExit(f"{p.args[0]} exited early with {p.returncode}")
            if now >= next_sample:
                f_s.sample(now - t0)
                n_s.sample(now - t0)
                next_sample += 1.0
            if now >= next_scrape:
                with urllib.request.urlopen(f"http://127.0.0.1:{ne_port}/metrics", timeout=10) as r:
                    r.read()
                n_s.mark_cycle()
                next_scrape += args.interval
            time.sleep(max(0.0, min(next_sample, next_scrape) - time.monotonic()))
        f_s.finish()
        n_s.finish()
        t_end = time.monotonic() - t0
        report(args, f_s.results(t_end), n_s.results(t_end), faultline)
    finally:
        cleanup()


def report(args: argparse.Namespace, f: dict[str, float], n: dict[str, float], binary: Path) -> None:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "n/a"

    containers = f", {args.containers} containers running" if args.containers else ""
    if args.without_container_collector:
        containers += ", faultline's container collector off"
    if args.memory_queue:
        containers += ", faultline queue in memory"
    if args.without_scans:
        containers += ", faultline without the process and connection scans"
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M')} · {args.duration} s at {args.interval} s"
        f"{containers} · {os.cpu_count()} CPUs · faultline {binary}\n"
    )
    print("| | faultline | node_exporter 1.5 | faultline ÷ node_exporter | target |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| peak RSS (VmHWM) | {f['peak_mib']:.1f} MiB | {n['peak_mib']:.1f} MiB | {ratio(f['peak_mib'], n['peak_mib'])} | |")
    print(
        f"| steady RSS (median VmRSS, 2nd half) | {f['steady_mib']:.1f} MiB | {n['steady_mib']:.1f} MiB"
        f" | {ratio(f['steady_mib'], n['steady_mib'])} | ≤ 0.5 |"
    )
    print(
        f"| CPU per cycle / scrape | {f['cpu_ms']:.2f} ms | {n['cpu_ms']:.2f} ms"
        f" | {ratio(f['cpu_ms'], n['cpu_ms'])} | ≤ 0.1 |"
    )
    print(
        f"| (same, from /proc/pid/stat ticks) | {f['cpu_ms_ticks']:.1f} ms | {n['cpu_ms_ticks']:.1f} ms | | |"
    )
    print(f"| cycles measured | {f['cycles']} | {n['cycles']} | | |")
    print(
        f"| start-up CPU (exec to end of cycle {WARMUP_CYCLES}) | {f['startup_ms']:.0f} ms"
        f" | {n['startup_ms']:.0f} ms | | |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=60, help="seconds to run (default 60; 300 for the record)")
    p.add_argument("--interval", type=int, default=10, help="collection/scrape interval in seconds (default 10)")
    p.add_argument("--containers", type=int, default=0, help="start this many idle containers and collect them")
    p.add_argument(
        "--memory-queue",
        action="store_true",
        help="faultline queues in memory (export.otlp.queue.persistent: false) instead of on disk",
    )
    p.add_argument(
        "--without-scans",
        action="store_true",
        help="faultline's process-state scan and TCP connection dump off (host.processes and "
        "host.connections: false), the two collectors node_exporter's defaults lack "
        "(its processes and tcpstat collectors are off by default)",
    )
    p.add_argument(
        "--without-container-collector",
        action="store_true",
        help="with --containers: keep faultline's container collector off (host metrics only, "
        "like node_exporter's defaults)",
    )
    p.add_argument("--faultline", help="faultline binary (default: build target/release/faultline)")
    p.add_argument("--node-exporter", default="/usr/bin/prometheus-node-exporter")
    args = p.parse_args()
    if not Path(args.node_exporter).exists():
        raise SystemExit(f"{args.node_exporter} not found: apt-get install prometheus-node-exporter")
    run(args)


if __name__ == "__main__":
    main()
