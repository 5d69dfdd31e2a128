"""
The gateway's instructions per unit of work (HTTP request, established pair, round trip), counted by valgrind.

The HTTP request is also counted in C{relay expose} (the listener), with the gateway running natively.

On the shared two-core machines here, the gateway's CPU time per unit of work moved by 20 % and more
between runs minutes apart with the same code, so a change worth a few percent could not be seen in it.
callgrind counts the instructions the gateway executes in user space, which are the same for the same
code and inputs whatever else the machine is doing. It does not count the kernel's work inside system
calls, so a change that saves system calls shows here only by the Python around them.

valgrind slows the gateway about fifty times, so the loads are light: 4 connections for requests and
pairs, one relayed WebSocket with one 64-byte message in flight for round trips. The counter is read with
C{callgrind_control} when the load generator starts and ends its timed part, so start-up, the listener's
connection and the warm-up are left out. The other processes run natively.

Only when asked for: C{python -m benchmarks -s cost.instructions}, and again with C{--gateway-from DIR}
for the other side of an A/B.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

from benchmarks.connload import ensure_connload
from benchmarks.context import Context, Gateway
from benchmarks.httpload import ensure_wrk
from benchmarks.procs import Proc
from benchmarks.registry import scenario
from benchmarks.scenarios.http import relay_route, upstream_file, wait_until_served
from benchmarks.scenarios.scale import lean_listener

CASES = (
    "HTTP request",
    "established pair",
    "64 B round trip",
    "HTTP request, relay expose",
    "HTTP request, floor gateway",
    "request/reply call",
    "one-way message",
)
CONNECTIONS = 4
STARTUP = 600.0  # seconds a gateway under valgrind may take to listen


def instruction_counter(pid: int) -> float:
    """The instructions callgrind has counted so far in process C{pid} (all its threads)."""
    out = subprocess.run(
        ["callgrind_control", "-e", str(pid)], capture_output=True, text=True, timeout=120, check=False
    ).stdout
    counts = [
        int(line.split()[2].replace(",", ""))
        for line in out.splitlines()
        if line.strip().startswith("Th ") and len(line.split()) >= 3
    ]
    if not counts:
        raise RuntimeError(f"callgrind_control -e {pid} gave no counter: {out[-300:]!r}")
    return float(sum(counts))


def _callgrind(ctx: Context, valgrind: str, name: str) -> tuple[str, ...]:
    """The command a process runs under to be counted, its counts written to C{<name>.callgrind}."""
    return (valgrind, "--tool=callgrind", f"--callgrind-out-file={ctx.path(f'{name}.callgrind')}")


def _gateway(ctx: Context, valgrind: str, name: str) -> Gateway:
    return ctx.gateway(name=name, wrapper=_callgrind(ctx, valgrind, name), timeout=STARTUP)


def _window(ctx: Context) -> float:
    return max(10.0, ctx.settings.seconds * 3)


def _meter(gateway: Gateway) -> Callable[[], float]:
    return lambda: instruction_counter(gateway.proc.pid)


def _record_per(ctx: Context, case: str, run: int, result: dict[str, Any], counted: str, unit: str) -> None:
    """Instructions per unit of work (thousands), and how many units the count covered."""
    units = result[counted]
    if units:
        ctx.record(case, "relay", f"instructions per {unit}", result["metered"] / units / 1e3, "k", run)
    else:
        ctx.note(f"cost.instructions, {case}: no {unit} completed in run {run + 1}")
    ctx.record(case, "relay", f"{unit}s counted", units, "", run)


def _count_requests(ctx: Context, case: str, wrk: str, url: str, meter: Callable[[], float]) -> None:
    """Load C{url} with wrk for each repetition and record the instructions C{meter} counts per request."""
    window = _window(ctx)
    for run in ctx.repetitions():
        args = ["benchmarks.httpload", wrk, url, str(CONNECTIONS), str(window), "{}"]
        result, _ = ctx.load("wrk", args, {}, window * 10 + 120, meter=meter)
        _record_per(ctx, case, run, result, "requests", "request")


@scenario(
    "cost.instructions",
    "cost",
    "gateway instructions per relayed HTTP request, per established pair and per 64-byte round trip, "
    "and relay expose's per HTTP request (valgrind; machine speed does not move them)",
    variants=("relay",),
    explicit=True,
)
def instructions(ctx: Context) -> None:
    valgrind = shutil.which("valgrind")
    if valgrind is None or shutil.which("callgrind_control") is None:
        ctx.note("cost.instructions needs valgrind (Debian package valgrind); skipped")
        return
    version = subprocess.run([valgrind, "--version"], capture_output=True, text=True, check=False)
    ctx.note(f"cost.instructions: {version.stdout.strip()} (callgrind), {CONNECTIONS} connections")
    if ctx.wants(CASES[0]):
        _http(ctx, valgrind)
    if ctx.wants(CASES[1]):
        _pairs(ctx, valgrind)
    if ctx.wants(CASES[2]):
        _round_trips(ctx, valgrind)
    if ctx.wants(CASES[3]):
        _http_listener(ctx, valgrind)
    if ctx.wants(CASES[4]):
        _http_floor(ctx, valgrind)
    for case, shape in ((CASES[5], "requestreply"), (CASES[6], "oneway")):
        if ctx.wants(case):
            _legacy(ctx, valgrind, case, shape)


def _http_tools(ctx: Context, case: str) -> tuple[str, bytes, Any] | None:
    """wrk, and the upstream file with the nginx serving it, for an HTTP case; C{None} (noted) without them."""
    wrk, note = ensure_wrk(ctx.settings.install)
    ctx.note(note)
    body, static = upstream_file(ctx)
    if wrk is None or static is None:
        ctx.note(f"cost.instructions, {case}: needs wrk and nginx; skipped")
        return None
    return wrk, body, static


def _http(ctx: Context, valgrind: str) -> None:
    case = CASES[0]
    tools = _http_tools(ctx, case)
    if tools is None:
        return
    wrk, body, static = tools
    gateway = _gateway(ctx, valgrind, "gateway-http")
    route = relay_route(ctx, f"http://127.0.0.1:{static[1]}", gateway)
    wait_until_served("relay", route, body, timeout=STARTUP)
    _count_requests(ctx, case, wrk, route.url, _meter(gateway))
    for proc in (route.path_procs["listener"], gateway.proc, static[0]):
        ctx.procs.stop(proc)


def _http_listener(ctx: Context, valgrind: str) -> None:
    """The same requests as L{_http}, counted in C{relay expose} instead of the gateway."""
    case = CASES[3]
    tools = _http_tools(ctx, case)
    if tools is None:
        return
    wrk, body, static = tools
    gateway = ctx.gateway(name="gateway-http-native")
    wrapper = _callgrind(ctx, valgrind, "expose-http")
    route = relay_route(ctx, f"http://127.0.0.1:{static[1]}", gateway, wrapper)
    wait_until_served("relay", route, body, timeout=STARTUP)
    listener = route.path_procs["listener"]
    _count_requests(ctx, case, wrk, route.url, lambda: instruction_counter(listener.pid))
    for proc in (listener, gateway.proc, static[0]):
        ctx.procs.stop(proc)


def _pairs(ctx: Context, valgrind: str) -> None:
    case = CASES[1]
    gateway = _gateway(ctx, valgrind, "gateway-pairs")
    binary, note = ensure_connload()
    ctx.note(note)
    listener: Proc
    if binary is not None:
        listener = ctx.procs.start(
            "connload-listener",
            [binary, "listener", "127.0.0.1", str(gateway.port), "bench", gateway.token()],
        )
    else:
        listener = lean_listener(ctx, gateway)
    window = _window(ctx)
    common = ["127.0.0.1", str(gateway.port), gateway.sender_path(), gateway.token()]
    common += [str(CONNECTIONS), str(window)]
    meter = _meter(gateway)
    for run in ctx.repetitions():
        if binary is not None:
            result, _ = ctx.run_load("churn", [binary, "churn", *common], {}, window * 10 + 120, meter)
        else:
            result, _ = ctx.load(
                "churn", ["benchmarks.lean", "churn", *common], {}, window * 10 + 120, meter=meter
            )
        _record_per(ctx, case, run, result, "established", "pair")
        ctx.record(case, "relay", "failures", result["failures"], "", run)
    ctx.procs.stop(listener)
    ctx.procs.stop(gateway.proc)


def _round_trips(ctx: Context, valgrind: str) -> None:
    """64-byte messages echoed by an Autobahn listener through one relayed pair, one in flight."""
    case = CASES[2]
    gateway = _gateway(ctx, valgrind, "gateway-latency")
    listener = ctx.autobahn_listener(gateway)
    window = _window(ctx)
    args = ["benchmarks.loadgen", "latency", "127.0.0.1", str(gateway.port), gateway.sender_path()]
    args += [str(window), json.dumps(gateway.sender_headers())]
    for run in ctx.repetitions():
        result, _ = ctx.load("latency", args, {}, window * 10 + 120, meter=_meter(gateway))
        _record_per(ctx, case, run, result, "round_trips", "round trip")
    ctx.procs.stop(listener)
    ctx.procs.stop(gateway.proc)


def _http_floor(ctx: Context, valgrind: str) -> None:
    """
    The same requests as L{_http}, counted in the floor's gateway (L{benchmarks.hcfloor}) serving C{relay expose}.

    What the gateway's count is above this one is what its generality costs per request; C{HCFLOOR_ADD}
    in the environment adds product machinery to the floor (see L{benchmarks.hcfloor}).
    """
    case = CASES[4]
    tools = _http_tools(ctx, case)
    if tools is None:
        return
    wrk, body, static = tools
    log = ctx.path("hcfloor-gateway.log")
    proc = ctx.procs.python(
        "hcfloor-gateway",
        "benchmarks.hcfloor",
        "gateway",
        "0",
        str(log),
        wrapper=_callgrind(ctx, valgrind, "hcfloor-gateway"),
        timeout=STARTUP,
    )
    gateway = Gateway(proc, int(proc.lines[-1].split()[1]), log)
    route = relay_route(ctx, f"http://127.0.0.1:{static[1]}", gateway)
    wait_until_served("floor gateway", route, body, timeout=STARTUP)
    added = os.environ.get("HCFLOOR_ADD", "")
    ctx.note(f"cost.instructions, {case}: HCFLOOR_ADD={added!r}")
    _count_requests(ctx, case, wrk, route.url, _meter(gateway))
    for each in (route.path_procs["listener"], proc, static[0]):
        ctx.procs.stop(each)


def _legacy(ctx: Context, valgrind: str, case: str, shape: str) -> None:
    """
    The legacy scenario C{shape} (L{benchmarks.scenarios.legacy}'s processes) counted in the gateway.

    The caller keeps 8 calls in flight rather than 64: under valgrind the gateway is slow enough that more
    would only queue.
    """
    from benchmarks import legacy_shapes as shapes

    port = shapes.free_port()
    wrapper = _callgrind(ctx, valgrind, f"gateway-{shape}")
    script = str(shapes.HERE / "bindings_throughput.py")
    code = ctx.settings.gateway_from
    gateway = shapes.spawn([script, "gateway", str(port)], f"gateway-{shape}", wrapper=wrapper, code=code)
    try:
        shapes.wait_ready(gateway, "gateway", timeout=STARTUP)
        unit = "call" if shape == "requestreply" else "message"
        for run in ctx.repetitions():
            result = shapes.measure(
                "relay", shape, port, [gateway.pid], _window(ctx), 8, run, meter=instruction_counter
            )
            extra = result.extra
            if result.errors:
                ctx.note(f"cost.instructions, {case}: {result.errors} errors in run {run + 1}")
            _record_per(ctx, case, run, {"metered": extra["metered"], unit: extra["count"]}, unit, unit)
    finally:
        gateway.terminate()
        gateway.wait(60)
