#!/usr/bin/env python3
"""faultline, node_exporter and collectd side by side: memory, CPU and samples per cycle.

Runs the three on this host at once, for a fixed time and at the same interval, and prints
each one's peak and steady RSS, CPU per cycle, samples per cycle, CPU per sample, and the
ratios faultline ÷ node_exporter and faultline ÷ collectd, as a Markdown table
(docs/PERFORMANCE.md keeps the results with the command and the date).

- faultline: the release binary, `faultline run` collecting every INTERVAL and exporting over
  OTLP/HTTP to a sink in this script (the production path: collect, encode, queue on disk —
  no fdatasync while the backend keeps up — send). Backups off; the container collector off
  unless --containers is given; the Prometheus endpoint off. Its state directory is a temp dir.
- node_exporter (Debian's prometheus-node-exporter): its default collectors on 127.0.0.1,
  scraped by this script every INTERVAL (a scrape is its collection cycle).
- collectd (Debian's collectd-core): `collectd -f -C <temp dir>/collectd.conf`, Interval =
  INTERVAL, with the read plugins that have a counterpart among faultline's host metrics and
  no others: cpu (per CPU and state, in jiffies, plus the CPU count), memory and df and swap
  (absolute and percent, as faultline reports usage and utilization; df and disk skip what
  faultline's default filters skip), disk, interface, load, uptime, vmem (the /proc/vmstat
  paging counters: faultline's system.paging.*), processes (states and forks) and tcpconns
  (listening ports and the all-ports summary: faultline's connection count), cpufreq where
  /sys has cpufreq (faultline's system.cpu.frequency). collectd 5.12 has no plugin for
  pressure stall information (faultline's system.linux.pressure.*). With --containers and
  faultline's container collector on, the cgroups plugin too (CPU user/system per cgroup v1
  cpuacct group, limited to 64-hex container ids), the only stock plugin with per-container
  figures; on a cgroup v2 host it finds no cpuacct hierarchy and is left out.
  Writer: the `network` plugin to a UDP socket of this script on 127.0.0.1. It is collectd's
  own transport (what a node ships to a central collectd), the cheapest writer (binary, ~1.4 KB
  packets, no per-value file or HTTP request, unlike csv or write_http), and every packet says
  how many values each value list holds and when it was read, so the values of each interval
  are counted exactly whenever they arrive. `FlushInterval 1` sends a part-filled packet
  within a second.

Sampling, every second: VmRSS and VmHWM from /proc/<pid>/status, utime+stime from
/proc/<pid>/stat (10 ms ticks), and the process CPU clock (clock_gettime on the process's
CPUCLOCK_SCHED clock: nanoseconds, whole thread group, exited threads included), which is the
figure the table uses; the tick-based one is printed alongside as a cross-check.

- peak RSS: VmHWM at the end (includes start-up).
- steady RSS: median VmRSS over the second half of the run.
- CPU per cycle: CPU used from the end of the fourth cycle to the end of the run, divided by
  the cycles completed in that window (start-up is printed as its own row). A cycle ends at
  an OTLP export received (faultline), a scrape answered (node_exporter), or the load plugin's
  value list received (collectd).
- samples per cycle, the mean over the cycles after the fourth: faultline, the data points of
  each export (the ExportMetricsServiceRequest decoded with the opentelemetry-proto package);
  node_exporter, the sample lines of each scrape (not comments); collectd, the values of each
  interval (value lists are grouped into intervals by their read time; an interval read
  less than 3 s before the end, possibly still arriving, is left out). An export, scrape or
  packet that cannot be decoded, or none at all, stops the run with an error.

faultline runs with its default configuration (every collector, the container collector
included, the persistent queue) but for the interval and the export endpoint;
--without-container-collector turns its container collector off (the like-for-like comparison,
neither node_exporter nor collectd's host plugins having a per-container view).
--containers N first starts N idle containers of the project's own workload image
(`FROM scratch` around the static tests/workload binary; nothing is pulled), and removes exactly those containers afterwards (by a label unique to the
run; also on Ctrl-C, SIGTERM and errors).

Usage: benches/compare.py [--duration 60] [--interval 10] [--containers 100]
Needs: Linux, python3 with opentelemetry-proto (python3 -m pip install opentelemetry-proto),
prometheus-node-exporter and collectd-core (apt-get install prometheus-node-exporter
collectd-core), cargo (builds the shipped binary with deploy/build-binary.sh unless --faultline names one),
and for --containers a running Docker engine.
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import math
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from procstat import cpu_clock, stat_cpu, status_kib  # noqa: E402 (benches/procstat.py)

try:  # The OpenTelemetry project's generated classes; main() says what to install.
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    OTLP_IMPORT_ERROR = None
except Exception as e:  # ImportError, or a protobuf runtime too old for the generated code
    OTLP_IMPORT_ERROR = e


ROOT = Path(__file__).resolve().parent.parent
IMAGE = "faultline-bench-workload:latest"
# Cycles counted as start-up, excluded from "CPU per cycle" and "samples per cycle" and shown
# as their own row: the agent's first cycles do one-off work (the first process and
# connection scans, exporter connections, and after the third cycle the one-time hand-back of
# its start-up code pages, agent/src/residency.rs), the others' first cycles their own set-up.
WARMUP_CYCLES = 4
# Filesystem types and mountpoints faultline skips by default (agent/src/collectors/host/
# mod.rs, DEFAULT_EXCLUDED_*), given to collectd's df plugin so both report the same mounts.
EXCLUDED_FS_TYPES = (
    "autofs binfmt_misc bpf cgroup cgroup2 configfs debugfs devpts devtmpfs efivarfs erofs "
    "fusectl hugetlbfs iso9660 mqueue nsfs overlay proc pstore ramfs rpc_pipefs securityfs "
    "selinuxfs squashfs sysfs tracefs"
).split()
EXCLUDED_MOUNTPOINTS = (
    "/var/lib/docker/",
    "/var/lib/containers/storage/",
    "/var/lib/kubelet/pods/",
    "/run/containerd/",
    "/run/credentials/",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(text[-lines:]) or "(empty)"


class CountingError(Exception):
    """An export, scrape or packet that could not be counted."""


@dataclass
class Sampled:
    """One program: its process's memory and CPU, its cycles and the samples of each."""

    name: str
    pid: int
    rss_kib: list[tuple[float, int]] = field(default_factory=list)
    hwm_kib: int = 0
    cycles: int = 0
    # (cpu clock, stat cpu, cycles) at the end of the start-up cycles (WARMUP_CYCLES)
    warm: tuple[float, float, int] | None = None
    end: tuple[float, float, int] | None = None
    # Samples of each steady cycle (after the start-up ones), by group (metric family,
    # collectd plugin).
    steady_samples: list[Counter[str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sample(self, t: float) -> None:
        s = status_kib(self.pid)
        self.rss_kib.append((t, s["VmRSS"]))
        self.hwm_kib = s["VmHWM"]

    def mark_cycle(self, samples: Counter[str] | None = None) -> None:
        """A cycle ended; `samples` are its samples by group when they are known here."""
        with self.lock:
            self.cycles += 1
            if self.cycles == WARMUP_CYCLES:
                self.warm = (cpu_clock(self.pid), stat_cpu(self.pid), WARMUP_CYCLES)
            elif self.cycles > WARMUP_CYCLES and samples is not None:
                self.steady_samples.append(samples)

    def finish(self) -> None:
        with self.lock:
            self.end = (cpu_clock(self.pid), stat_cpu(self.pid), self.cycles)

    def results(self, t_end: float) -> dict:
        if not (self.warm and self.end) or self.end[2] <= self.warm[2]:
            raise SystemExit(
                f"{self.name}: {self.cycles} cycles observed, the CPU window needs at least "
                f"{WARMUP_CYCLES + 1}: run longer (--duration)"
            )
        if not self.steady_samples or not any(sum(c.values()) for c in self.steady_samples):
            raise SystemExit(f"{self.name}: no samples counted after the start-up cycles")
        n = self.end[2] - self.warm[2]
        half = t_end / 2
        steady = [kib for (t, kib) in self.rss_kib if t >= half] or [self.rss_kib[-1][1]]
        cycles = len(self.steady_samples)
        by_group = Counter()
        for c in self.steady_samples:
            by_group.update(c)
        totals = [sum(c.values()) for c in self.steady_samples]
        cpu_ms = (self.end[0] - self.warm[0]) / n * 1000
        samples = sum(totals) / cycles
        return {
            "peak_mib": self.hwm_kib / 1024,
            "steady_mib": statistics.median(steady) / 1024,
            "cpu_ms": cpu_ms,
            "startup_ms": self.warm[0] * 1000,
            "cpu_ms_ticks": (self.end[1] - self.warm[1]) / n * 1000,
            "cycles": n,
            "samples": samples,
            "samples_range": (min(totals), max(totals)),
            "samples_cycles": cycles,
            "us_per_sample": cpu_ms * 1000 / samples,
            "by_group": {g: v / cycles for g, v in by_group.most_common()},
        }


# faultline: OTLP/HTTP


def count_otlp_points(body: bytes) -> Counter[str]:
    """Data points of an OTLP ExportMetricsServiceRequest, by metric family (the name's first
    two dot-separated parts: system.cpu, container.memory, faultline.export, …)."""
    req = ExportMetricsServiceRequest()
    try:
        req.ParseFromString(body)
    except Exception as e:  # protobuf's DecodeError; the class moves between versions
        raise CountingError(
            f"not an ExportMetricsServiceRequest ({len(body)} bytes): {e}"
        ) from None
    out: Counter[str] = Counter()
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is None:
                    raise CountingError(f"metric {m.name!r} has no data")
                family = ".".join(m.name.split(".")[:2])
                out[family] += len(getattr(m, kind).data_points)
    if not out or not sum(out.values()):
        raise CountingError(f"an export with no data points ({len(body)} bytes)")
    return out


class Sink(http.server.BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports: 200 with an empty ExportMetricsServiceResponse; each
    /v1/metrics request is one collection cycle of faultline, its data points counted.

    HTTP/1.1 with keep-alive, as an OpenTelemetry Collector answers: the exporter keeps one
    connection open instead of connecting for every export (http.server's default is
    HTTP/1.0, which closes after every response)."""

    protocol_version = "HTTP/1.1"
    counter: Sampled | None = None
    error: str | None = None
    other_requests: Counter[str] = Counter()

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("content-length", 0))
        body = self.rfile.read(length)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
        if self.path != "/v1/metrics":
            Sink.other_requests[self.path] += 1
            return
        try:
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            points = count_otlp_points(body)
        except (CountingError, OSError, EOFError) as e:
            Sink.error = Sink.error or f"faultline's export could not be counted: {e}"
            return
        if Sink.counter is not None:
            Sink.counter.mark_cycle(points)

    def log_message(self, *args: object) -> None:
        pass


# node_exporter: Prometheus text


def count_exposition(text: str) -> Counter[str]:
    """Sample lines of a Prometheus text exposition (comments and blank lines are not
    samples), by family (the name's first two underscore-separated parts)."""
    out: Counter[str] = Counter()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
        if name is None or len(line) == name.end() or line[name.end()] not in "{ ":
            raise CountingError(f"not a sample line: {line[:80]!r}")
        out["_".join(name.group(0).split("_")[:2])] += 1
    if not out:
        raise CountingError(f"a scrape with no samples ({len(text)} bytes)")
    return out


# collectd: the network plugin's binary protocol

# Part types of collectd's network protocol (src/network.h); the string parts end in NUL.
PART_STRINGS = {
    0x0000: "host",
    0x0002: "plugin",
    0x0003: "plugin_instance",
    0x0004: "type",
    0x0005: "type_instance",
    0x0100: "message",
}
PART_NUMBERS = {
    0x0001: "time",
    0x0007: "interval",
    0x0008: "time_hr",
    0x0009: "interval_hr",
    0x0101: "severity",
}
PART_VALUES = 0x0006


def parse_collectd_packet(packet: bytes) -> list[tuple[str, float, int]]:
    """(plugin, read time in seconds, number of values) of each value list in one packet of
    collectd's network plugin (unsigned, unencrypted)."""
    out = []
    plugin: str | None = None
    read_time: float | None = None
    off = 0
    while off < len(packet):
        if len(packet) - off < 4:
            raise CountingError(f"a truncated part header at byte {off} of {len(packet)}")
        ptype, plen = struct.unpack_from(">HH", packet, off)
        if plen < 4 or off + plen > len(packet):
            raise CountingError(
                f"part {ptype:#06x} at byte {off} claims {plen} bytes of {len(packet)}"
            )
        body = packet[off + 4 : off + plen]
        if ptype in PART_STRINGS:
            if not body.endswith(b"\0"):
                raise CountingError(f"{PART_STRINGS[ptype]} part at byte {off} not NUL-terminated")
            if ptype == 0x0002:
                plugin = body[:-1].decode(errors="replace")
        elif ptype in PART_NUMBERS:
            if len(body) != 8:
                raise CountingError(
                    f"{PART_NUMBERS[ptype]} part at byte {off} is {len(body)} bytes, not 8"
                )
            (number,) = struct.unpack(">Q", body)
            if ptype == 0x0001:
                read_time = float(number)
            elif ptype == 0x0008:
                read_time = number / 2**30
        elif ptype == PART_VALUES:
            (n,) = struct.unpack_from(">H", body) if len(body) >= 2 else (-1,)
            if n < 1 or len(body) != 2 + 9 * n:
                raise CountingError(f"values part at byte {off}: {len(body)} bytes for {n} values")
            if plugin is None or read_time is None:
                raise CountingError(f"values part at byte {off} before its plugin and time parts")
            out.append((plugin, read_time, n))
        else:
            raise CountingError(
                f"unknown part type {ptype:#06x} at byte {off} (signed or encrypted?)"
            )
        off += plen
    if not out:
        raise CountingError(f"a packet without values ({len(packet)} bytes)")
    return out


class CollectdReceiver:
    """Receives collectd's network packets on a UDP socket on 127.0.0.1 and counts values per
    interval. A cycle ends when the load plugin's value list arrives (one per interval)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.counter: Sampled | None = None
        self.error: str | None = None
        self.first_time: float | None = None
        # interval index (0 = the first read) → values by plugin
        self.intervals: dict[int, Counter[str]] = {}
        self.stopped = False
        threading.Thread(target=self._receive, daemon=True).start()

    def _receive(self) -> None:
        while not self.stopped:
            try:
                packet = self.sock.recv(65535)
            except OSError:
                return
            try:
                value_lists = parse_collectd_packet(packet)
            except CountingError as e:
                self.error = self.error or f"collectd's packet could not be counted: {e}"
                continue
            for plugin, read_time, n in value_lists:
                if self.first_time is None:
                    self.first_time = read_time
                # Every plugin is read once per interval, all scheduled in the same phase; a
                # value list's time is when its read finished, a little after the scheduled
                # time (up to 3/4 of an interval late still counts for its own round).
                i = math.floor((read_time - self.first_time) / self.interval + 0.25)
                self.intervals.setdefault(i, Counter())[plugin] += n
                if plugin == "load" and self.counter is not None:
                    self.counter.mark_cycle()

    def close(self) -> None:
        """Stops receiving and hands the steady intervals' counts to the counter."""
        self.stopped = True
        self.sock.close()
        if self.counter is None or self.first_time is None:
            return
        # An interval read less than 3 s ago (the 1 s flush plus slow reads on a busy host)
        # may still be arriving: left out.
        complete = int((time.time() - 3 - self.first_time) // self.interval)
        self.counter.steady_samples = [
            self.intervals.get(i, Counter())
            for i in range(WARMUP_CYCLES, min(complete, max(self.intervals)) + 1)
        ]


def collectd_plugins(scans: bool, cgroups: bool) -> dict[str, list[str]]:
    """The read plugins collectd loads, each with its options: the counterparts of faultline's
    host metrics (and, with `cgroups`, of its container collector), nothing else."""
    # An ignorelist entry between slashes is a regular expression (inner slashes need no escape).
    df_ignored = [f'FSType "{t}"' for t in EXCLUDED_FS_TYPES]
    df_ignored += [f'MountPoint "/^{m}/"' for m in EXCLUDED_MOUNTPOINTS]
    absolute_and_percent = ["ValuesAbsolute true", "ValuesPercentage true"]
    plugins = {
        "cpu": [
            "ReportByCpu true",
            "ReportByState true",
            "ValuesPercentage false",
            "ReportNumCpu true",
        ],
        "memory": absolute_and_percent,
        # Swap in/out come from vmem (faultline's system.paging.operations), not twice.
        "swap": [
            "ReportByDevice true",
            "ReportBytes true",
            "ReportIO false",
            *absolute_and_percent,
        ],
        "vmem": ["Verbose false"],
        "disk": ['Disk "/^(loop|ram)/"', "IgnoreSelected true"],
        "df": [*df_ignored, "IgnoreSelected true", "ReportInodes false", *absolute_and_percent],
        "interface": [],
        "load": [],
        "uptime": [],
    }
    if Path("/sys/devices/system/cpu/cpu0/cpufreq").is_dir():
        plugins["cpufreq"] = []
    if scans:
        plugins["processes"] = []
        plugins["tcpconns"] = ["ListeningPorts true", "AllPortsSummary true"]
    if cgroups:
        plugins["cgroups"] = ['CGroup "/^[0-9a-f]{64}$/"']
    return plugins


def collectd_config(tmp: Path, interval: int, port: int, plugins: dict[str, list[str]]) -> str:
    """collectd.conf: the plugins, a log to stderr, and the network plugin sending to `port`."""
    out = [
        'Hostname "faultline-bench"',
        "FQDNLookup false",
        f'BaseDir "{tmp}"',
        f'PIDFile "{tmp}/collectd.pid"',
        'PluginDir "/usr/lib/collectd"',
        'TypesDB "/usr/share/collectd/types.db"',
        f"Interval {interval}",
        "",
        "LoadPlugin logfile",
        '<Plugin logfile>\n  LogLevel "warning"\n  File STDERR\n</Plugin>',
    ]
    for name, options in plugins.items():
        out.append(f"LoadPlugin {name}")
        if options:
            out += [f"<Plugin {name}>", *(f"  {o}" for o in options), "</Plugin>"]
    out += [
        "<LoadPlugin network>\n  FlushInterval 1\n</LoadPlugin>",
        f'<Plugin network>\n  Server "127.0.0.1" "{port}"\n</Plugin>',
    ]
    return "\n".join(out) + "\n"


def no_swap() -> str | None:
    with open("/proc/swaps") as f:
        if len(f.readlines()) > 1:
            return None
    return "no swap device in /proc/swaps; faultline reports none either"


# Why a loaded collectd plugin may rightly send nothing.
SILENT_REASONS: dict[str, Callable[[], str | None]] = {"swap": no_swap}


def cgroup_v1_cpuacct() -> bool:
    """Whether a cgroup v1 hierarchy with the cpuacct controller is mounted (collectd's cgroups
    plugin reads nothing else)."""
    with open("/proc/self/mounts") as f:
        return any(
            len(parts) > 3 and parts[2] == "cgroup" and "cpuacct" in parts[3].split(",")
            for parts in (line.split() for line in f)
        )


# Containers


def build_faultline() -> Path:
    """The binary the image and the systemd install ship (deploy/build-binary.sh: static, not
    position-independent, hot code laid out together; ADR 0022)."""
    out = subprocess.run(
        [str(ROOT / "deploy" / "build-binary.sh")],
        cwd=ROOT,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return ROOT / out.stdout.strip().splitlines()[-1]


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


def start_containers(n: int, run_label: str) -> None:
    for i in range(n):
        subprocess.run(
            [
                "docker",
                "run",
                "-d",
                "--label",
                "org.faultline.bench=1",
                "--label",
                run_label,
                "--name",
                f"faultline-bench-{os.getpid()}-{i}",
                IMAGE,
            ],
            check=True,
            capture_output=True,
            text=True,
        )


def remove_containers(run_label: str) -> None:
    """Removes the containers carrying this run's label (also one whose `docker run` was
    interrupted after the container was created)."""
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={run_label}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    for i in range(0, len(ids), 50):
        subprocess.run(
            ["docker", "rm", "-f", *ids[i : i + 50]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


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


def version(cmd: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    found = re.search(pattern, out.stdout + out.stderr)
    return found.group(1) if found else "?"


@dataclass
class Program:
    name: str
    proc: subprocess.Popen
    log: Path


def run(args: argparse.Namespace) -> None:
    faultline = Path(args.faultline) if args.faultline else build_faultline()
    run_label = f"org.faultline.bench.run={os.getpid()}-{time.time_ns()}"
    programs: list[Program] = []
    tmp = tempfile.TemporaryDirectory(prefix="faultline-compare-")
    tmp_path = Path(tmp.name)
    receiver: CollectdReceiver | None = None

    def stop_all() -> None:
        for p in programs:
            if p.proc.poll() is None:
                p.proc.terminate()
        for p in programs:
            try:
                p.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()

    def start(name: str, cmd: list[str]) -> Program:
        log = tmp_path / f"{name}.log"
        with open(log, "w") as stderr:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        programs.append(Program(name, proc, log))
        return programs[-1]

    def check_alive() -> None:
        for p in programs:
            if p.proc.poll() is not None:
                rc = p.proc.returncode
                how = f"was killed by signal {-rc}" if rc < 0 else f"exited with {rc}"
                raise SystemExit(
                    f"{p.name} ({' '.join(map(str, p.proc.args))}) {how} during the run; "
                    f"its output:\n{tail(p.log)}"
                )
        for error in (Sink.error, receiver.error if receiver else None):
            if error:
                raise SystemExit(error)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    # faultline's defaults: the container collector is on (it walks the cgroup hierarchy and
    # follows Docker/CRI whether or not containers run); --without-container-collector turns
    # it off. collectd's cgroups plugin only joins when containers are started.
    containers_on = not args.without_container_collector
    try:
        if args.containers:
            build_workload_image()
            print(f"starting {args.containers} idle workload containers…", file=sys.stderr)
            start_containers(args.containers, run_label)

        sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
        threading.Thread(target=sink.serve_forever, daemon=True).start()
        receiver = CollectdReceiver(args.interval)
        cgroups = bool(args.containers) and containers_on and cgroup_v1_cpuacct()
        plugins = collectd_plugins(not args.without_scans, cgroups)
        collectd_conf = collectd_config(tmp_path, args.interval, receiver.port, plugins)
        (tmp_path / "collectd.conf").write_text(collectd_conf)
        (tmp_path / "faultline.yaml").write_text(
            faultline_config(
                sink.server_address[1],
                args.interval,
                containers_on,
                not args.memory_queue,
                not args.without_scans,
            )
        )
        ne_port = free_port()
        print(
            f"OTLP sink on 127.0.0.1:{sink.server_address[1]}, collectd packets on "
            f"127.0.0.1:{receiver.port}, node_exporter on 127.0.0.1:{ne_port}; "
            f"{args.duration} s…",
            file=sys.stderr,
        )
        fl = start(
            "faultline",
            [
                str(faultline),
                "--state-dir",
                str(tmp_path / "state"),
                "run",
                "--config",
                str(tmp_path / "faultline.yaml"),
            ],
        )
        ne = start(
            "node_exporter", [args.node_exporter, f"--web.listen-address=127.0.0.1:{ne_port}"]
        )
        cd = start("collectd", [args.collectd, "-f", "-C", str(tmp_path / "collectd.conf")])
        f_s, n_s, c_s = (Sampled(p.name, p.proc.pid) for p in (fl, ne, cd))
        Sink.counter = f_s
        receiver.counter = c_s
        load_start = os.getloadavg()[0]

        t0 = time.monotonic()
        next_scrape = t0 + 1.0  # give it a moment to listen
        next_sample = t0
        while (now := time.monotonic()) - t0 < args.duration:
            check_alive()
            if now >= next_sample:
                for s in (f_s, n_s, c_s):
                    s.sample(now - t0)
                next_sample += 1.0
            if now >= next_scrape:
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{ne_port}/metrics", timeout=10
                    ) as r:
                        samples = count_exposition(r.read().decode())
                except (urllib.error.URLError, OSError) as e:
                    if n_s.cycles == 0 and now - t0 < 5:
                        next_scrape = now + 0.2  # not listening yet
                        continue
                    raise SystemExit(
                        f"scraping node_exporter failed: {e}\n{tail(ne.log)}"
                    ) from None
                except CountingError as e:
                    raise SystemExit(f"node_exporter's scrape could not be counted: {e}") from None
                n_s.mark_cycle(samples)
                next_scrape += args.interval
            time.sleep(max(0.0, min(next_sample, next_scrape) - time.monotonic()))
        check_alive()
        for s in (f_s, n_s, c_s):
            s.finish()
        t_end = time.monotonic() - t0
        receiver.close()
        results = [s.results(t_end) for s in (f_s, n_s, c_s)]
        silent = {
            p: SILENT_REASONS.get(p, lambda: None)()
            for p in plugins
            if p not in results[2]["by_group"]
        }
        versions = {
            "faultline": version([str(faultline), "--version"], r"(\d+\.\d+\.\d+\S*)"),
            "node_exporter": version([args.node_exporter, "--version"], r"version (\d+\.\d+\.\d+)"),
            "collectd": version([args.collectd, "-h"], r"collectd (\d+\.\d+\.\d+)"),
        }
        report(
            args,
            results,
            versions,
            faultline,
            cgroups,
            silent,
            (load_start, os.getloadavg()[0]),
            cd.log,
        )
    finally:
        stop_all()
        if receiver is not None and not receiver.stopped:
            receiver.close()
        if args.containers:
            remove_containers(run_label)
        tmp.cleanup()


def report(
    args: argparse.Namespace,
    results: list[dict],
    versions: dict[str, str],
    binary: Path,
    cgroups: bool,
    silent: dict[str, str | None],
    load: tuple[float, float],
    collectd_log: Path,
) -> None:
    f, n, c = results

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "n/a"

    def row(
        label: str, key: str, fmt: Callable[[float], str], target: str = "", ratios: bool = True
    ) -> None:
        cells = [fmt(r[key]) for r in results]
        rs = [ratio(f[key], n[key]), ratio(f[key], c[key])] if ratios else ["", ""]
        print(f"| {label} | {' | '.join(cells)} | {' | '.join(rs)} | {target} |")

    def samples(r: dict) -> str:
        lo, hi = r["samples_range"]
        return f"{r['samples']:.0f}" if lo == hi else f"{r['samples']:.1f} ({lo}–{hi})"

    notes = f", {args.containers} containers running" if args.containers else ""
    if not args.without_container_collector:
        notes += ", faultline's container collector on (its default)"
    if args.without_container_collector:
        notes += ", faultline's container collector off"
    if args.memory_queue:
        notes += ", faultline queue in memory"
    if args.without_scans:
        notes += (
            ", without faultline's process and connection scans"
            " (collectd without processes and tcpconns)"
        )
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M %Z')} · {args.duration} s at {args.interval} s{notes}"
        f" · {os.cpu_count()} CPUs · load average {load[0]:.2f} at the start, {load[1]:.2f} at"
        f" the end · faultline {versions['faultline']} ({binary})\n"
    )
    print(
        f"| | faultline | node_exporter {versions['node_exporter']}"
        f" | collectd {versions['collectd']} | faultline ÷ node_exporter"
        " | faultline ÷ collectd | target (÷ node_exporter) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    row("peak RSS (VmHWM)", "peak_mib", lambda v: f"{v:.1f} MiB")
    row("steady RSS (median VmRSS, 2nd half)", "steady_mib", lambda v: f"{v:.1f} MiB", "≤ 0.5")
    row("CPU per cycle", "cpu_ms", lambda v: f"{v:.2f} ms", "≤ 0.1")
    row("(same, from /proc/pid/stat ticks)", "cpu_ms_ticks", lambda v: f"{v:.1f} ms", ratios=False)
    print(
        f"| samples per cycle | {' | '.join(samples(r) for r in results)} | "
        f"{ratio(f['samples'], n['samples'])} | {ratio(f['samples'], c['samples'])} | |"
    )
    row("CPU per sample (faultline: per exported point)", "us_per_sample", lambda v: f"{v:.2f} µs")
    row("cycles measured (CPU)", "cycles", lambda v: f"{v}", ratios=False)
    row(
        f"start-up CPU (exec to end of cycle {WARMUP_CYCLES})",
        "startup_ms",
        lambda v: f"{v:.0f} ms",
        ratios=False,
    )

    print(
        "\nSamples per cycle by family / plugin (mean over the cycles after the start-up ones):\n"
    )
    for name, r in zip(("faultline", "node_exporter", "collectd"), results, strict=True):
        groups = ", ".join(
            f"{g} {v:g}" if v == int(v) else f"{g} {v:.1f}" for g, v in r["by_group"].items()
        )
        cycles = r["samples_cycles"]
        print(f"- {name} ({cycles} cycle{'' if cycles == 1 else 's'}): {groups}")
    if args.containers:
        print(
            "\nContainers: faultline's container collector "
            + ("off" if args.without_container_collector else "on")
            + "; node_exporter has no per-container collector; collectd "
            + (
                "with its cgroups plugin (CPU user/system per container cgroup, cgroup v1 cpuacct)"
                if cgroups
                else "without its cgroups plugin ("
                + (
                    "collector off"
                    if args.without_container_collector
                    else "no cgroup v1 cpuacct hierarchy here"
                )
                + ")"
            )
            + "."
        )
    for plugin, reason in silent.items():
        print(
            f"\nNote: collectd's {plugin} plugin sent no values: "
            + (reason or f"its log:\n{tail(collectd_log, 8)}")
        )
    if Sink.other_requests:
        print(f"\nNote: faultline also sent {dict(Sink.other_requests)} (not counted)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--duration", type=int, default=60, help="seconds to run (default 60; 300 for the record)"
    )
    p.add_argument(
        "--interval",
        type=int,
        default=10,
        help="collection/scrape interval in seconds (default 10)",
    )
    p.add_argument(
        "--containers", type=int, default=0, help="start this many idle containers and collect them"
    )
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
        "(its processes and tcpstat collectors are off by default); collectd then loads neither "
        "processes nor tcpconns",
    )
    p.add_argument(
        "--without-container-collector",
        action="store_true",
        help="keep faultline's container collector (and with --containers collectd's cgroups "
        "plugin) off (host metrics only, like node_exporter's defaults)",
    )
    p.add_argument("--faultline", help="faultline binary (default: the shipped binary, built by deploy/build-binary.sh)")
    p.add_argument("--node-exporter", default="/usr/bin/prometheus-node-exporter")
    p.add_argument("--collectd", default=shutil.which("collectd") or "/usr/sbin/collectd")
    args = p.parse_args()
    if args.interval < 1 or args.duration < 1:
        raise SystemExit("--interval and --duration are whole seconds, at least 1")
    if not Path(args.node_exporter).exists():
        raise SystemExit(
            f"{args.node_exporter} not found: apt-get install prometheus-node-exporter"
        )
    if not Path(args.collectd).exists() or not Path("/usr/lib/collectd/network.so").exists():
        raise SystemExit(f"{args.collectd} or its plugins not found: apt-get install collectd-core")
    if args.faultline and not os.access(args.faultline, os.X_OK):
        raise SystemExit(f"{args.faultline}: not an executable file (--faultline)")
    if OTLP_IMPORT_ERROR is not None:
        raise SystemExit(
            "benches/compare.py counts faultline's data points with the Python package "
            f"opentelemetry-proto ({OTLP_IMPORT_ERROR}).\n"
            "Install it: python3 -m pip install --upgrade opentelemetry-proto\n"
            "(where the system Python refuses: python3 -m venv /tmp/venv && "
            "/tmp/venv/bin/pip install opentelemetry-proto, then run this script with "
            "/tmp/venv/bin/python)"
        )
    try:
        run(args)
    except KeyboardInterrupt:
        raise SystemExit("interrupted: what this run started is stopped and removed") from None


if __name__ == "__main__":
    main()
