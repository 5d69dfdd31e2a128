"""
Legacy binding scenarios (performance issue, item 4), measured against Crossbar.io in the same run.

  - multicast: deliveries/s with 1 publisher and 10 subscribers, 256-byte events, vs Crossbar pub/sub
    (target at least 1.5x);
  - request/reply: calls/s vs Crossbar RPC (target at least 1.0x);
  - one-way: messages/s (WAMP has no equivalent, so no baseline).

The processes are those of C{benchmarks/legacy_shapes.py} (which can also run alone, with more options):
a gateway with the binding names, the lean SOAP-over-WebSocket load generators of
C{benchmarks/legacy_clients.py}, and a Crossbar router configured on loopback (found on C{PATH} or in the
benchmark's own venv, installed there on first use). Relay and Crossbar alternate in every repetition,
so background load hits both alike; the ratio is recorded per repetition.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from benchmarks.context import Context
from benchmarks.registry import Target, scenario

CASE = "256 B"
WINDOW = 64  # messages in flight from the publisher / caller


def _shapes() -> Any:
    """The legacy-shape harness, imported late: it puts C{benchmarks/} on C{sys.path} for its siblings."""
    from benchmarks import legacy_shapes

    return legacy_shapes


def _crossbar(ctx: Context, shapes: Any) -> Any:
    """A running Crossbar node, or C{None} (with a note saying why) when it cannot be had."""
    from crossbar_router import CrossbarNode, crossbar_version, find_crossbar

    try:
        executable = find_crossbar(None)
        version = crossbar_version(executable)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        ctx.note(f"Crossbar.io unavailable ({e}); legacy scenarios measured the relay only")
        return None
    ctx.note(f"legacy baseline: Crossbar.io {version} ({executable}), WAMP over WebSocket, msgpack")
    node = CrossbarNode(executable, shapes.free_port())
    node.start()
    time.sleep(2.0)  # the realm starts after the transport listens
    return node


def _run(ctx: Context, shape: str, metric: str, *, baseline: bool) -> None:
    shapes = _shapes()
    seconds = ctx.settings.seconds
    port = shapes.free_port()
    script = str(shapes.HERE / "bindings_throughput.py")
    gateway = shapes.spawn([script, "gateway", str(port)], "gateway", code=ctx.settings.gateway_from)
    node = None
    try:
        shapes.wait_ready(gateway, "gateway")
        if baseline:
            node = _crossbar(ctx, shapes)
        for run in ctx.repetitions():
            systems = ["relay"] if node is None else ["relay", "crossbar"]
            if run % 2:
                systems.reverse()
            rates: dict[str, float] = {}
            for system in systems:
                where, pids = (port, [gateway.pid]) if system == "relay" else (node.port, node.pids)
                result = shapes.measure(system, shape, where, pids, seconds, WINDOW, run)
                rates[system] = result.rate
                ctx.record(CASE, system, metric, result.rate, "1/s", run)
                ctx.record(CASE, system, "router CPU per message", result.router_cpu_us, "us", run)
                ctx.record(CASE, system, "clients' CPU per message", result.client_cpu_us, "us", run)
                ctx.record(CASE, system, "errors", result.errors, "", run)
                if result.errors:
                    ctx.note(f"{shape}, {system}: {result.errors} errors in run {run + 1}")
            if "crossbar" in rates:
                ctx.record(CASE, "relay/crossbar", metric, rates["relay"] / rates["crossbar"], "x", run)
    finally:
        if node is not None:
            node.stop()
        gateway.terminate()
        gateway.wait(15)


@scenario(
    "legacy.multicast",
    "legacy",
    "multicast deliveries/s, 1 publisher -> 10 subscribers, 256 B events, vs Crossbar pub/sub",
    targets=(Target(CASE, "relay/crossbar", "deliveries/s", ">=", 1.5),),
    variants=("relay", "crossbar"),
)
def multicast(ctx: Context) -> None:
    _run(ctx, "multicast", "deliveries/s", baseline=True)


@scenario(
    "legacy.requestreply",
    "legacy",
    "request/reply calls/s (256 B request and reply, 64 in flight) vs Crossbar RPC",
    targets=(Target(CASE, "relay/crossbar", "calls/s", ">=", 1.0),),
    variants=("relay", "crossbar"),
)
def requestreply(ctx: Context) -> None:
    _run(ctx, "requestreply", "calls/s", baseline=True)


@scenario(
    "legacy.oneway",
    "legacy",
    "one-way messages/s into one listener (256 B, 64 in flight; no baseline)",
    variants=("relay",),
)
def oneway(ctx: Context) -> None:
    _run(ctx, "oneway", "messages/s", baseline=False)
