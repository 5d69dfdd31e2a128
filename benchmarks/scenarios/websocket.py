"""
Hybrid connection WebSocket scenarios: one-way throughput by message size, 64-byte round-trip latency.

Relayed (load generator -> gateway -> Autobahn listener) against direct (load generator -> Autobahn
server) and nginx (load generator -> nginx -> Autobahn server), measured alternately in the same run.
Latency also measures the floor: a byte forwarder on Twisted (L{benchmarks.forwarder}) in nginx's place,
what any Python process on the path costs a round trip (the same system calls as the gateway's splice,
and no framing).
"""

from __future__ import annotations

import json

from benchmarks.context import Context
from benchmarks.procs import Proc
from benchmarks.registry import Target, scenario

SIZES = (("64 B", 64), ("4 KB", 4096), ("64 KB", 65536), ("1 MB", 1048576))
VARIANTS = ("direct", "relay", "nginx")
LATENCY_VARIANTS = (*VARIANTS, "floor")


class Paths:
    """Where each variant's load generator connects, and which processes it loads."""

    def __init__(self, ctx: Context) -> None:
        gateway = ctx.gateway()
        listener = ctx.autobahn_listener(gateway)
        server, server_port = ctx.autobahn_server()
        self.routes: dict[str, tuple[int, str, dict[str, str], dict[str, Proc]]] = {
            "direct": (server_port, "/", {}, {"endpoint": server}),
            "relay": (
                gateway.port,
                gateway.sender_path(),
                gateway.sender_headers(),
                {"gateway": gateway.proc, "endpoint": listener},
            ),
        }
        proxy = ctx.nginx_proxy(server_port)
        if proxy is not None:
            nginx, port = proxy
            self.routes["nginx"] = (port, "/", {}, {"nginx": nginx, "endpoint": server})
        self.ctx = ctx
        self.server_port = server_port
        self.server = server

    def add_floor(self) -> None:
        """Route the C{floor} variant through a Twisted byte forwarder to the direct server."""
        forwarder = self.ctx.procs.python("forwarder", "benchmarks.forwarder", "0", str(self.server_port))
        port = int(forwarder.lines[-1].split()[1])
        self.routes["floor"] = (port, "/", {}, {"forwarder": forwarder, "endpoint": self.server})

    def order(self, run: int, variants: tuple[str, ...] = VARIANTS) -> list[str]:
        """The variants, rotated per repetition so that none always goes first."""
        names = [v for v in variants if v in self.routes]
        shift = run % len(names)
        return names[shift:] + names[:shift]


def _record_cpu(ctx: Context, case: str, variant: str, cpu: dict[str, float], own: float, run: int) -> None:
    ctx.record(case, variant, "cpu loadgen", own * 100, "%", run)
    for name, share in sorted(cpu.items()):
        ctx.record(case, variant, f"cpu {name}", share * 100, "%", run)


def _ratios(
    ctx: Context, case: str, metric: str, values: dict[str, float], run: int, *, lower: bool = False
) -> None:
    for proxy in ("relay", "floor"):
        value = values.get(proxy)
        if value is None:
            continue
        for base in ("direct", "nginx") if proxy == "relay" else ("direct",):
            if base in values and values[base] > 0:
                ctx.record(case, f"{proxy}/{base}", metric, value / values[base], "x", run)


@scenario(
    "ws.throughput",
    "websocket",
    "one-way messages/s and MB/s by message size: relay vs direct Autobahn vs nginx",
    targets=(
        Target("4 KB", "relay/direct", "msg/s", ">=", 1.0),
        Target("1 MB", "relay/direct", "msg/s", ">=", 1.0),
        Target("*", "relay/nginx", "msg/s", ">=", 0.9),
    ),
    variants=VARIANTS,
)
def throughput(ctx: Context) -> None:
    paths = Paths(ctx)
    seconds = ctx.settings.seconds
    for run in ctx.repetitions():
        for case, size in SIZES:
            if not ctx.wants(case):
                continue
            rates: dict[str, float] = {}
            for variant in paths.order(run):
                port, path, headers, watch = paths.routes[variant]
                args = [
                    "benchmarks.loadgen",
                    "throughput",
                    "127.0.0.1",
                    str(port),
                    path,
                    str(size),
                    str(seconds),
                ]
                result, cpu = ctx.load(
                    "throughput", [*args, json.dumps(headers)], watch, timeout=seconds * 10 + 60
                )
                rates[variant] = result["msg_per_s"]
                ctx.record(case, variant, "msg/s", result["msg_per_s"], "msg/s", run)
                ctx.record(case, variant, "MB/s", result["mb_per_s"], "MB/s", run)
                _record_cpu(ctx, case, variant, cpu, result["loadgen_cpu"], run)
                for proxy in ("gateway", "nginx"):
                    if proxy in cpu and result["mb_per_s"] > 0:
                        per_mb = cpu[proxy] * 1000 / result["mb_per_s"]
                        ctx.record(case, variant, f"cpu {proxy} per MB", per_mb, "ms", run)
            _ratios(ctx, case, "msg/s", rates, run)


@scenario(
    "ws.latency",
    "websocket",
    "64-byte round trips, one in flight: p50/p99 relay vs direct Autobahn vs nginx",
    targets=(Target("64 B", "relay/direct", "p99", "<=", 1.3),),
    variants=LATENCY_VARIANTS,
)
def latency(ctx: Context) -> None:
    paths = Paths(ctx)
    paths.add_floor()
    seconds = ctx.settings.seconds
    case = "64 B"
    for run in ctx.repetitions():
        p50: dict[str, float] = {}
        p99: dict[str, float] = {}
        for variant in paths.order(run, LATENCY_VARIANTS):
            port, path, headers, watch = paths.routes[variant]
            args = ["benchmarks.loadgen", "latency", "127.0.0.1", str(port), path, str(seconds)]
            result, cpu = ctx.load("latency", [*args, json.dumps(headers)], watch, timeout=seconds * 10 + 60)
            p50[variant] = result["p50_us"]
            p99[variant] = result["p99_us"]
            ctx.record(case, variant, "p50", result["p50_us"], "us", run)
            ctx.record(case, variant, "p99", result["p99_us"], "us", run)
            ctx.record(case, variant, "round trips/s", result["round_trips"] / seconds, "1/s", run)
            _record_cpu(ctx, case, variant, cpu, result["loadgen_cpu"], run)
        _ratios(ctx, case, "p50", p50, run)
        _ratios(ctx, case, "p99", p99, run)


PING_INTERVALS = (
    ("4 KB, no pings", 0),
    ("4 KB, ping every 100 ms", 100),
    ("4 KB, ping every 10 ms", 10),
    ("4 KB, ping every 1 ms", 1),
)


@scenario(
    "ws.pings",
    "websocket",
    "what a sender's pings cost a streaming relayed pair: 4 KB messages, pinged every 100/10/1 ms or not",
    variants=("relay",),
    explicit=True,
)
def pings(ctx: Context) -> None:
    """
    A pair on the native thread goes back to Python at each ping, which the gateway answers there.

    This prices that round trip: the gateway's CPU per MB with pings against the same stream without,
    in the same repetition. Run it with and without C{--python-splice} to compare with a pair that stays
    in Python.
    """
    paths = Paths(ctx)
    port, path, headers, watch = paths.routes["relay"]
    seconds = ctx.settings.seconds
    for run in ctx.repetitions():
        quiet: float | None = None
        for case, every_ms in PING_INTERVALS:
            if not ctx.wants(case):
                continue
            args = ["benchmarks.loadgen", "throughput", "127.0.0.1", str(port), path, "4096", str(seconds)]
            result, cpu = ctx.load(
                "pings", [*args, json.dumps(headers), str(every_ms)], watch, timeout=seconds * 10 + 60
            )
            ctx.record(case, "relay", "msg/s", result["msg_per_s"], "msg/s", run)
            ctx.record(case, "relay", "MB/s", result["mb_per_s"], "MB/s", run)
            ctx.record(case, "relay", "pings/s", result["pings"] / seconds, "1/s", run)
            ctx.record(case, "relay", "pongs/s", result["pongs"] / seconds, "1/s", run)
            _record_cpu(ctx, case, "relay", cpu, result["loadgen_cpu"], run)
            if "gateway" in cpu and result["mb_per_s"] > 0:
                per_mb = cpu["gateway"] * 1000 / result["mb_per_s"]
                ctx.record(case, "relay", "cpu gateway per MB", per_mb, "ms", run)
                if every_ms == 0:
                    quiet = per_mb
                elif quiet:
                    ctx.record(case, "pinging/quiet", "cpu gateway per MB", per_mb / quiet, "x", run)
