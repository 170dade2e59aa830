#!/usr/bin/env python3
"""Regenerates agent/hot-sections.txt: the functions a steady collection cycle runs, which
deploy/build-binary.sh lays out together in the shipped binary (gold's --section-ordering-file).

Why: the kernel maps a file page together with its neighbours (fault-around, 64 KiB), so the
resident part of the binary is the number of 64 KiB blocks the steady cycles touch, not the
bytes they run. With the cycle's ~1 MiB of code spread over 17 MB of text that was ~5.5 MiB
resident; laid out together the group fills ~19 blocks (1.2 MiB), and the binary's resident
code and read-only data fell to 3.7 MiB in 59 blocks, the rest being libc, read-only data and
functions outside the list (docs/adr/0022-shipped-binary-layout.md).

How: runs `faultline run` with its default configuration at a 1 s interval, exporting over
OTLP/HTTP to a sink in this script, under valgrind's callgrind; zeroes the counts once start-up
is over (--warmup seconds), dumps them after --measure seconds, and writes one section pattern
per function that ran in between, hottest first. Symbol hashes (`17h<16 hex>E`) and ThinLTO's
`.llvm.<n>` suffixes become `*`, so that the file keeps matching across builds until functions
are renamed. Run it on a host with containers (or the containers bench tree) to include the
container collector's path; the file in the repository was made so.

Usage: benches/hot_sections.py [--faultline BINARY] [--warmup 20] [--measure 70]
Needs: valgrind (Debian: valgrind), a faultline binary with symbols (the release profile
keeps them); builds one with deploy/build-binary.sh when --faultline is not given.
"""

from __future__ import annotations

import argparse
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "agent" / "hot-sections.txt"


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def self_costs(path: Path) -> Counter[str]:
    """Self cost (instructions) per function of a callgrind dump, with names as linked."""
    names: dict[str, str] = {}
    cost: Counter[str] = Counter()
    current = None
    after_calls = False
    for line in path.read_text(errors="replace").splitlines():
        key, sep, rest = line.partition("=")
        if sep and key in ("fn", "cfn"):
            m = re.match(r"\((\d+)\)(?: (.*))?", rest)
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                name = names.get(m.group(1), rest)
            else:
                name = rest
            if key == "fn":
                current = name
            continue
        if line.startswith("calls="):
            after_calls = True  # the next cost line is the call's inclusive cost
            continue
        if line[:1].isdigit() or line[:1] in "+-*":
            if after_calls:
                after_calls = False
                continue
            parts = line.split()
            if current and len(parts) >= 2:
                cost[current] += int(parts[1])
    return cost


def pattern(symbol: str) -> str | None:
    """The section pattern of a Rust function; None for anything else (libc has no per-function
    sections to order)."""
    if not symbol.startswith(("_ZN", "_R")):
        return None
    s = re.sub(r"\.llvm\.\d+$", "*", symbol)
    s = re.sub(r"17h[0-9a-f]{16}E", "17h*E", s)
    return ".text." + s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faultline", help="binary to profile (default: deploy/build-binary.sh)")
    p.add_argument("--warmup", type=int, default=20, help="seconds of start-up left out")
    p.add_argument("--measure", type=int, default=70, help="seconds profiled (covers a 1 min scan)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            sys.exit(f"hot_sections.py: {tool} not found (apt-get install valgrind)")
    binary = args.faultline or subprocess.run(
        [str(ROOT / "deploy" / "build-binary.sh")], check=True, capture_output=True, text=True
    ).stdout.strip().splitlines()[-1]

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp, "faultline.yaml")
        cfg.write_text(
            "interval: 1s\nlogging: {level: warn}\nexport:\n  otlp:\n    protocol: http/protobuf\n"
            f"    endpoint: http://127.0.0.1:{srv.server_address[1]}\n"
        )
        out = Path(tmp, "callgrind.out")
        env = dict(os.environ, FAULTLINE_STATE_DIR=str(Path(tmp, "state")))
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out}",
             str(Path(binary).resolve()), "run", "--config", str(cfg)],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(args.warmup)
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
            time.sleep(args.measure)
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
            time.sleep(2)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        dumps = sorted(Path(tmp).glob("callgrind.out.*"))
        if not dumps:
            sys.exit("hot_sections.py: callgrind wrote no dump after the zeroing")
        cost = self_costs(dumps[-1])
    patterns: list[str] = []
    for sym, c in sorted(cost.items(), key=lambda kv: -kv[1]):
        pat = pattern(sym)
        if c > 0 and pat and pat not in patterns:
            patterns.append(pat)
    if len(patterns) < 50:
        sys.exit(f"hot_sections.py: only {len(patterns)} functions ran; was the agent running?")
    Path(args.out).write_text("".join(p + "\n" for p in patterns))
    print(f"{len(patterns)} section patterns written to {args.out}")


if __name__ == "__main__":
    main()
