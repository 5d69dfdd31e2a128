"""The throughput plot for the documentation: MB/s by message size for direct, relay and nginx."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.report import Aggregate, read_csv

COLOURS = {"direct": "#4c72b0", "relay": "#dd8452", "nginx": "#55a868"}


def plot_throughput(aggregates: Sequence[Aggregate], out: Path) -> Path | None:
    """Draw grouped bars of MB/s (median, with min-max whiskers) per message size; C{None} without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')", file=sys.stderr)
        return None
    rows = [a for a in aggregates if a.scenario == "ws.throughput" and a.metric == "MB/s"]
    cases = list(dict.fromkeys(a.case for a in rows))
    variants = [v for v in COLOURS if any(a.variant == v for a in rows)]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(variants)
    for axis, metric, unit in ((axes[0], "MB/s", "MB/s"), (axes[1], "msg/s", "messages/s")):
        data = {
            (a.case, a.variant): a for a in aggregates if a.scenario == "ws.throughput" and a.metric == metric
        }
        for i, variant in enumerate(variants):
            xs, ys, lo, hi = [], [], [], []
            for j, case in enumerate(cases):
                a = data.get((case, variant))
                if a is None:
                    continue
                xs.append(j + (i - (len(variants) - 1) / 2) * width)
                ys.append(a.median)
                lo.append(a.median - a.low)
                hi.append(a.high - a.median)
            axis.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=variant, color=COLOURS[variant])
        axis.set_xticks(range(len(cases)), cases)
        axis.set_xlabel("message size")
        axis.set_ylabel(unit)
        if metric == "msg/s":
            axis.set_yscale("log")
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_title("throughput (MB/s)")
    axes[1].set_title("messages/s (log scale)")
    axes[0].legend()
    fig.suptitle("WebSocket one-way throughput: direct Autobahn vs relay vs nginx (median, min-max)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_rss(csv_paths: Sequence[Path], out: Path, buffer_bytes: int) -> Path | None:
    """Gateway RSS over time during the back-pressure stream, one line per run, relative to the idle RSS (first row)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axis = plt.subplots(figsize=(8, 3.6))
    for i, path in enumerate(csv_paths):
        rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
        if not rows:
            continue
        base = int(rows[0][1])
        axis.plot(
            [float(t) for t, _ in rows], [(int(r) - base) / 1024 for _, r in rows], label=f"run {i + 1}"
        )
    axis.axhline(2 * buffer_bytes / 1024, color="grey", linestyle="--", label="2 x splice_buffer_bytes")
    axis.set_xlabel("seconds into the stream")
    axis.set_ylabel("RSS above idle (KiB)")
    axis.set_title("gateway RSS while streaming into a slow reader")
    axis.legend(fontsize="small")
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str]) -> None:
    """C{python -m benchmarks.plot RESULTS.csv OUT.png}."""
    plot_throughput(read_csv(Path(argv[0])), Path(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
