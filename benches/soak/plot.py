#!/usr/bin/env python3
"""Plots the CSV the soak writes (tests/tests/soak.rs) as small PNGs.

    python3 benches/soak/plot.py target/soak/soak-<stamp>.csv [--out docs/perf] [--name soak]

writes <out>/<name>-process.png (the agent's open fds, RSS and threads), <out>/<name>-faults.png
(helper processes, journal entries, qdiscs and nft tables in the test's namespace, faultline's
nft tables on the host) and <out>/<name>-queue.png (the disk queue's bytes and the cycles done),
with the receiver's outages shaded. Needs matplotlib (pip install matplotlib); CI does not plot.
Each PNG stays under 200 KB (96 dpi, few colours, at most ~2000 points per series).
"""

import argparse
import csv
import os
import sys


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{path}: no rows")
    cols = {k: [float(r[k]) for r in rows] for k in rows[0]}
    return cols


def thin(cols, limit=2000):
    """Every n-th row, so a long soak stays a small image."""
    n = max(1, len(cols["t_s"]) // limit)
    return {k: v[::n] for k, v in cols.items()}


def outages(cols):
    """(start, end) in minutes of each stretch with receiver_up == 0."""
    spans, start = [], None
    for t, up in zip(cols["t_s"], cols["receiver_up"]):
        if up == 0 and start is None:
            start = t
        elif up == 1 and start is not None:
            spans.append((start / 60, t / 60))
            start = None
    if start is not None:
        spans.append((start / 60, cols["t_s"][-1] / 60))
    return spans


def panel(ax, minutes, cols, series, spans):
    for key, label in series:
        ax.plot(minutes, cols[key], label=label, linewidth=0.9, drawstyle="steps-post")
    for a, b in spans:
        ax.axvspan(a, b, color="0.85", linewidth=0)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    ax.grid(True, linewidth=0.3)
    ax.tick_params(labelsize=7)


def figure(plt, path, title, minutes, cols, spans, panels):
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, 1.9 * len(panels)), sharex=True)
    if len(panels) == 1:
        axes = [axes]
    for ax, (ylabel, series) in zip(axes, panels):
        panel(ax, minutes, cols, series, spans)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_ylim(bottom=0)
    axes[-1].set_xlabel("minutes (grey: OTLP receiver down)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=96)
    plt.close(fig)
    print(f"{path}: {os.path.getsize(path) // 1024} KiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--out", default="docs/perf")
    ap.add_argument("--name", default="soak")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = thin(load(args.csv))
    cols["rss_mib"] = [v / 1024 for v in cols["rss_kib"]]
    cols["queue_mib"] = [v / (1 << 20) for v in cols["queue_bytes"]]
    cols["kcycles"] = [v / 1000 for v in cols["cycles"]]
    minutes = [t / 60 for t in cols["t_s"]]
    spans = outages(cols)
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, args.name)

    figure(
        plt,
        f"{base}-process.png",
        "faultline run under the soak: the agent process",
        minutes,
        cols,
        spans,
        [
            ("fds", [("fds", "open fds")]),
            ("MiB", [("rss_mib", "RSS")]),
            ("threads", [("threads", "threads")]),
        ],
    )
    figure(
        plt,
        f"{base}-faults.png",
        "what faults hold (sampled every 2 s; the namespace starts with 3 qdiscs)",
        minutes,
        cols,
        spans,
        [
            ("processes", [("helpers", "helper processes")]),
            ("entries", [("journal", "journal entries")]),
            (
                "objects",
                [
                    ("qdiscs_ns", "qdiscs in the namespace"),
                    ("nft_tables_ns", "nft tables in the namespace"),
                    ("nft_tables_host", "faultline nft tables on the host"),
                ],
            ),
        ],
    )
    figure(
        plt,
        f"{base}-queue.png",
        "the export queue and the work done",
        minutes,
        cols,
        spans,
        [
            ("MiB", [("queue_mib", "disk queue")]),
            ("thousands", [("kcycles", "inject/revert cycles done")]),
        ],
    )


if __name__ == "__main__":
    main()
