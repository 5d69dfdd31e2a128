"""
Where a router's time goes: py-spy samples of one process, summarised by what the code is doing.

Used by C{legacy_shapes.py --profile DIR}, which records C{py-spy record --format raw} (collapsed stacks)
of the router process during each measurement; also runnable on such a file:

    python benchmarks/legacy_profile.py results/profile-multicast-relay.txt

Each sample is charged to the innermost frame that matches a category (scanning from the leaf up), so a
category holds the time spent in its own code and in whatever it calls that no inner category claims.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path

CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("XML parse and checks (safexml, envelope structure)", ("parse_xml", "envelope_from_element")),
    (
        "addressing, prepare, serialise",
        (
            "read_addressing",
            "prepare (",
            "delivery_bytes",
            "open_envelope",
            "envelope_bytes",
            "delivered_bytes",
            "_reply_problem",
            "to_bytes",
            "parse_envelope",
        ),
    ),
    ("routers, outlets, Deferreds", ("deliver (", "Router.", "Outlet.", "Deferred.", "_answer", "_failed")),
    (
        "frame writes (build frame, transport.write)",
        ("send_text", "sendMessage", "ConnectionMixin.write", "FileDescriptor.write"),
    ),
    ("socket syscalls (send, recv)", ("doWrite", "writeSomeData", "untilConcludes", "doRead")),
    (
        "connection roles (wcf, wcfroles, names)",
        ("onMessage (bindings", "SenderRole.", "ListenerRole.", "NameTable.", "FastMessageReader"),
    ),
    (
        "WebSocket receive (frame parse, unmask, UTF-8)",
        ("_dataReceived", "processData", "consumeData", "read_frame", "data_received"),
    ),
    ("reactor idle (epoll wait)", ("doPoll (twisted/internet/epollreactor.py:227)",)),
]
OTHER = "other (reactor loop, logging, WAMP, misc)"


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def categories(path: Path) -> list[tuple[str, float]]:
    """Share of samples per category, largest first."""
    totals: collections.Counter[str] = collections.Counter()
    stacks = read_stacks(path)
    for frames, count in stacks:
        chosen = OTHER
        for frame in reversed(frames):
            hit = next((name for name, keys in CATEGORIES if any(k in frame for k in keys)), None)
            if hit is not None:
                chosen = hit
                break
        totals[chosen] += count
    total = sum(totals.values()) or 1
    return [(name, 100.0 * n / total) for name, n in totals.most_common()]


def top_self(path: Path, limit: int = 12) -> list[tuple[str, float]]:
    """The functions with the most samples of their own."""
    own: collections.Counter[str] = collections.Counter()
    stacks = read_stacks(path)
    for frames, count in stacks:
        own[frames[-1]] += count
    total = sum(own.values()) or 1
    return [(name, 100.0 * n / total) for name, n in own.most_common(limit)]


def record(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes] | None:
    """Start py-spy on a process (C{None} when py-spy is not installed)."""
    spy = shutil.which("py-spy")
    if spy is None:
        return None
    return subprocess.Popen(
        [
            spy,
            "record",
            "-r",
            "100",
            "-d",
            str(max(1, int(seconds))),
            "-f",
            "raw",
            "-o",
            str(output),
            "-p",
            str(pid),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def report(path: Path) -> str:
    lines = [f"{path.name}:"]
    lines += [f"  {share:5.1f}%  {name}" for name, share in categories(path)]
    lines.append("  top functions (own samples):")
    lines += [f"  {share:5.1f}%  {name[:110]}" for name, share in top_self(path)]
    return "\n".join(lines)


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(report(Path(argument)))
