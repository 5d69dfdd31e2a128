"""
Scale scenarios: what an idle relayed connection costs the gateway, and how fast pairs are established.

Senders and the listener are the lean asyncio peers of L{benchmarks.lean}; a pair is established when the
sender has its 101, which the gateway sends only after the listener's rendezvous upgrade got its own.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.connload import ensure_connload
from benchmarks.context import ENTITY, Context, Gateway
from benchmarks.procs import Proc
from benchmarks.registry import Target, scenario

SETTLE = 1.0


def lean_listener(ctx: Context, gateway: Gateway) -> Proc:
    """The asyncio listener (L{benchmarks.lean}) on the benchmark entity, accepting every sender."""
    return ctx.procs.python(
        "lean-listener",
        "benchmarks.lean",
        "listener",
        "127.0.0.1",
        str(gateway.port),
        ENTITY,
        gateway.token(),
    )


def _record_cpu(ctx: Context, case: str, result: dict[str, Any], cpu: dict[str, float], run: int) -> None:
    """CPU shares while connecting, and CPU milliseconds per establishment (robust to a busy machine)."""
    ctx.record(case, "relay", "cpu loadgen", result["loadgen_cpu"] * 100, "%", run)
    for name, share in sorted(cpu.items()):
        ctx.record(case, "relay", f"cpu {name}", share * 100, "%", run)
    if result["per_s"]:
        per = 1000 / result["per_s"]
        ctx.record(case, "relay", "gateway CPU per establishment", cpu["gateway"] * per, "ms", run)
        peers = (result["loadgen_cpu"] + cpu.get("listener", 0.0)) * per
        ctx.record(case, "relay", "sender+listener CPU per establishment", peers, "ms", run)


@scenario(
    "scale.idle",
    "scale",
    "gateway RSS per relayed WebSocket connection with 1,000 and 9,000 idle pairs (and how fast they opened)",
    targets=(
        Target("1,000 pairs", "relay", "RSS per connection", "<=", 10.0),
        Target("9,000 pairs", "relay", "RSS per connection", "<=", 10.0),
        Target("*", "relay", "establishments/s", ">=", 2500.0),
    ),
    variants=("relay",),
)
def idle_pairs(ctx: Context) -> None:
    for run in ctx.repetitions():
        for pairs in (1000,) if ctx.quick else (1000, 9000):
            case = f"{pairs:,} pairs"
            if not ctx.wants(case):
                continue
            gateway = ctx.gateway()
            listener = lean_listener(ctx, gateway)
            time.sleep(SETTLE)
            idle = gateway.proc.rss()
            loaded: list[int] = []

            def sample(sender: Proc, gateway: Gateway = gateway, loaded: list[int] = loaded) -> None:
                sender.wait_for_line("HOLDING", 60)
                time.sleep(SETTLE)
                loaded.append(gateway.proc.rss())

            args = ["benchmarks.lean", "hold", "127.0.0.1", str(gateway.port), gateway.sender_path()]
            args += [gateway.token(), str(pairs), "200", str(SETTLE * 2 + 1)]
            result, cpu = ctx.load("hold", args, {"gateway": gateway.proc, "listener": listener}, 300, sample)
            ctx.note(f"scale load generators: {result['loop']}")
            if result["established"] != pairs:
                ctx.note(
                    f"{case}: only {result['established']} of {pairs} pairs opened ({result['failures']} failed)"
                )
            per_connection = (loaded[0] - idle) / (2 * result["established"])
            ctx.record(case, "relay", "RSS per connection", per_connection / 1024, "KiB", run)
            ctx.record(case, "relay", "gateway RSS idle", idle / 2**20, "MiB", run)
            ctx.record(case, "relay", "gateway RSS loaded", loaded[0] / 2**20, "MiB", run)
            ctx.record(case, "relay", "establishments/s", result["per_s"], "1/s", run)
            ctx.record(case, "relay", "establishment p50", result["p50_ms"], "ms", run)
            ctx.record(case, "relay", "establishment p99", result["p99_ms"], "ms", run)
            _record_cpu(ctx, case, result, cpu, run)
            ctx.procs.stop(listener)
            ctx.procs.stop(gateway.proc)


CHURN_CASES = ("churn", "churn, compiled peers")


@scenario(
    "scale.connect",
    "scale",
    "sender connections established per second in steady state (connect, both 101s, close)",
    targets=(Target("*", "relay", "establishments/s", ">=", 2500.0),),
    variants=("relay",),
)
def connect_rate(ctx: Context) -> None:
    """
    The same churn twice: with the asyncio peers (C{churn}) and with the compiled ones (L{benchmarks.connload}).

    Each case gets its own gateway and listener; the compiled peers cost the machine far less CPU per pair,
    so that case shows what the gateway itself can do.
    """
    seconds = ctx.settings.seconds
    for case in CHURN_CASES:
        if not ctx.wants(case):
            continue
        compiled = case != "churn"
        binary = None
        if compiled:
            binary, note = ensure_connload()
            ctx.note(note)
            if binary is None:
                continue
        gateway = ctx.gateway(name=f"gateway-{'compiled' if compiled else 'asyncio'}")
        if binary is not None:
            listener = ctx.procs.start(
                "connload-listener",
                [binary, "listener", "127.0.0.1", str(gateway.port), ENTITY, gateway.token()],
            )
        else:
            listener = lean_listener(ctx, gateway)
        for run in ctx.repetitions():
            common = [
                "127.0.0.1",
                str(gateway.port),
                gateway.sender_path(),
                gateway.token(),
                "64",
                str(seconds),
            ]
            watch = {"gateway": gateway.proc, "listener": listener}
            if binary is not None:
                result, cpu = ctx.run_load("churn", [binary, "churn", *common], watch, seconds * 10 + 60)
            else:
                result, cpu = ctx.load(
                    "churn", ["benchmarks.lean", "churn", *common], watch, seconds * 10 + 60
                )
            ctx.note(f"scale load generators: {result['loop']}")
            ctx.record(case, "relay", "establishments/s", result["per_s"], "1/s", run)
            ctx.record(case, "relay", "establishment p50", result["p50_ms"], "ms", run)
            ctx.record(case, "relay", "establishment p99", result["p99_ms"], "ms", run)
            ctx.record(case, "relay", "failures", result["failures"], "", run)
            _record_cpu(ctx, case, result, cpu, run)
        ctx.procs.stop(listener)
        ctx.procs.stop(gateway.proc)
