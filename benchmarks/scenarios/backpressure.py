"""
Back-pressure proof: a 1 GB stream into a listener that reads slowly; the gateway's memory stays flat.

The sender (L{benchmarks.loadgen} C{stream}) writes 1 MiB messages as fast as TCP lets it; the listener
(L{benchmarks.lean}) reads at a fixed rate well below what the relay can carry, so the gateway's buffers
are full for the whole transfer. The gateway's RSS is sampled every 50 ms; its growth over the idle RSS
(pair open, nothing sent yet) is compared with the configured bound, C{splice_buffer_bytes}.
"""

from __future__ import annotations

import json
import statistics
import threading
import time

from benchmarks.context import ENTITY, Context
from benchmarks.procs import Proc
from benchmarks.registry import Target, scenario

BUFFER = 262144  # splice_buffer_bytes: the gateway's default
READ_RATE = 100e6  # bytes/s the slow listener reads
PERIOD = 0.05


class Sampler(threading.Thread):
    """Sample a process's RSS until stopped."""

    def __init__(self, proc: Proc) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self._stop_event.is_set():
            self.samples.append((time.monotonic() - start, self.proc.rss()))
            self._stop_event.wait(PERIOD)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


@scenario(
    "backpressure.slow-reader",
    "backpressure",
    "1 GB into a listener reading 100 MB/s: gateway RSS growth vs 2x splice_buffer_bytes",
    targets=(Target("*", "relay", "RSS growth / splice_buffer_bytes", "<=", 2.0),),
    variants=("relay",),
)
def slow_reader(ctx: Context) -> None:
    total = (256 if ctx.quick else 1024) * 1024 * 1024
    case = "256 MB" if ctx.quick else "1 GB"
    ctx.note(f"back-pressure: splice_buffer_bytes = {BUFFER}, listener reads {READ_RATE / 1e6:.0f} MB/s")
    for run in ctx.repetitions():
        # A fresh gateway per run: a heap grown by an earlier run would hide this run's growth.
        gateway = ctx.gateway({"splice_buffer_bytes": BUFFER})
        listener = ctx.procs.python(
            "slow-listener",
            "benchmarks.lean",
            "listener",
            "127.0.0.1",
            str(gateway.port),
            ENTITY,
            gateway.token(),
            str(READ_RATE),
        )
        args = ["stream", "127.0.0.1", str(gateway.port), gateway.sender_path(), str(total)]
        sender = ctx.procs.python(
            f"stream-{run}",
            "benchmarks.loadgen",
            *args,
            json.dumps(gateway.sender_headers()),
            ready="CONNECTED",
        )
        time.sleep(0.5)
        idle = statistics.median(gateway.proc.rss() for _ in range(5))
        sampler = Sampler(gateway.proc)
        sender.wait_for_line("MEASURE start", 30)
        sampler.start()
        cpu0 = gateway.proc.cpu()
        try:
            sender.wait_for_line("MEASURE end", total / READ_RATE * 4 + 60)
        finally:
            sampler.stop()
        cpu = gateway.proc.cpu() - cpu0
        lines = ctx.procs.finish(sender, 30)
        result = json.loads(next(line[7:] for line in lines if line.startswith("RESULT ")))
        samples = [rss for _, rss in sampler.samples]
        half = len(samples) // 2
        peak = max(samples)
        ctx.record(case, "relay", "gateway RSS idle", idle / 2**20, "MiB", run)
        ctx.record(case, "relay", "gateway RSS peak", peak / 2**20, "MiB", run)
        ctx.record(case, "relay", "RSS growth", (peak - idle) / 1024, "KiB", run)
        ctx.record(case, "relay", "RSS growth / splice_buffer_bytes", (peak - idle) / BUFFER, "x", run)
        late = max(samples[half:]) - max(samples[: half or 1])
        ctx.record(case, "relay", "growth in the second half", late / 1024, "KiB", run)
        ctx.record(case, "relay", "stream rate", result["mb_per_s"], "MB/s", run)
        ctx.record(case, "relay", "cpu gateway", cpu / result["seconds"] * 100, "%", run)
        with ctx.path(f"rss-{run}.csv").open("w") as f:
            f.write("seconds,rss_bytes\n")
            f.write(f"-0.100,{int(idle)}\n")  # the idle RSS, measured before the stream started
            f.writelines(f"{t:.3f},{rss}\n" for t, rss in sampler.samples)
        ctx.procs.stop(listener)
        ctx.procs.stop(gateway.proc)
