"""
HTTP relaying against the protocol floor: how much of the relay's CPU per request the protocol needs.

The floor (L{benchmarks.hcfloor}) is the least Python that relays a small HTTP request over the Hybrid
Connections protocol. Its gateway and listener each stand in for their counterpart, so the scenario runs
four pairings on the same upstream and load as C{http.requests}:

  - C{relay}: the gateway and C{relay expose};
  - C{floor gateway}: the floor's gateway serving C{relay expose};
  - C{floor listener}: the gateway serving the floor's listener;
  - C{floor}: both floor peers;
  - C{localtunnel}: the npm localtunnel server and client, as in C{http.requests}, when Node.js is there.

Each pairing must return the file byte for byte first. The result is CPU per request for each process, and its ratio to the floor's beside the same counterpart
(C{relay/floor gateway}: the gateway against the floor gateway, both serving C{relay expose};
C{relay/floor listener}: C{relay expose} against the floor listener, both behind the gateway):
what the gateway and C{relay expose} spend above the floor's peers is what their generality costs
(the general request path, timers, back-pressure, admission), not what the protocol costs. Each pairing's
requests/s against localtunnel's (C{relay/localtunnel}, C{floor/localtunnel}, ...) says how far from the
2x target even the floor is on this machine. Runs only when named (C{-s http.floor}): it diagnoses, and
judges no target.
"""

from __future__ import annotations

import json

from benchmarks.context import KEY, KEY_NAME, WEB_ENTITY, Context, Gateway
from benchmarks.localtunnel import ensure_localtunnel
from benchmarks.procs import Proc
from benchmarks.registry import scenario
from benchmarks.scenarios.http import (
    FILE,
    Route,
    _localtunnel,
    _record,
    load_and_upstream,
    relay_route,
    wait_until_served,
    warm_up,
)

VARIANTS = ("relay", "floor gateway", "floor listener", "floor", "localtunnel")
CASE, CONNECTIONS = "GET 1 KB, 16 connections", 16


def _floor_gateway(ctx: Context) -> tuple[Proc, int]:
    proc = ctx.procs.python(
        "hcfloor-gateway", "benchmarks.hcfloor", "gateway", "0", str(ctx.path("hcfloor-gateway.log"))
    )
    return proc, int(proc.lines[-1].split()[1])


def _floor_listener(ctx: Context, gateway_port: int, upstream_port: int) -> Proc:
    from relay.auth import make_token

    token = make_token(f"http://127.0.0.1/{WEB_ENTITY}", KEY_NAME, KEY, ttl=86400)
    return ctx.procs.python(
        "hcfloor-listener", "benchmarks.hcfloor", "listener", str(gateway_port), str(upstream_port), token
    )


def _pairing(ctx: Context, variant: str, upstream_port: int, node: str | None) -> tuple[Route, list[Proc]]:
    """Start one pairing; the route watches its gateway and listener (localtunnel: its server and client)."""
    url_of = lambda port: f"http://127.0.0.1:{port}/{WEB_ENTITY}/{FILE}"  # noqa: E731
    upstream = f"http://127.0.0.1:{upstream_port}"
    if variant == "relay":
        route = relay_route(ctx, upstream)
        return route, list(route.path_procs.values())
    if variant == "floor gateway":
        proc, port = _floor_gateway(ctx)
        fake = Gateway(proc, port, ctx.path("hcfloor-gateway.log"))
        route = relay_route(ctx, upstream, fake)
        return route, list(route.path_procs.values())
    if variant == "localtunnel":
        assert node is not None
        route = _localtunnel(ctx, node, upstream_port)
        return route, list(route.path_procs.values())
    if variant == "floor listener":
        gateway = ctx.gateway(name="gateway-floor-listener")
        listener = _floor_listener(ctx, gateway.port, upstream_port)
        procs = {"gateway": gateway.proc, "listener": listener}
        return Route(url_of(gateway.port), {}, procs), list(procs.values())
    proc, port = _floor_gateway(ctx)
    listener = _floor_listener(ctx, port, upstream_port)
    procs = {"gateway": proc, "listener": listener}
    return Route(url_of(port), {}, procs), list(procs.values())


@scenario(
    "http.floor",
    "http",
    "HTTP requests through the gateway and relay expose vs the least Python speaking the same protocol "
    "(benchmarks.hcfloor), each peer paired with the other's",
    variants=VARIANTS,
    explicit=True,
)
def floor(ctx: Context) -> None:
    tools = load_and_upstream(ctx, "http.floor needs nginx as the upstream; skipped")
    if tools is None:
        return
    wrk, body, (upstream_proc, upstream_port) = tools
    node, lt_note = ensure_localtunnel()
    ctx.note(lt_note)
    variants = [v for v in VARIANTS if v != "localtunnel" or node is not None]
    seconds = ctx.settings.seconds
    for run in ctx.repetitions():
        shift = run % len(variants)
        per_request: dict[tuple[str, str], float] = {}
        rates: dict[str, float] = {}
        for variant in variants[shift:] + variants[:shift]:
            route, procs = _pairing(ctx, variant, upstream_port, node)
            route.other_procs["upstream"] = upstream_proc
            wait_until_served(variant, route, body)
            warm_up(ctx, wrk, route, CONNECTIONS)  # each pairing starts anew: localtunnel's JIT included
            args = ["benchmarks.httpload", wrk, route.url, str(CONNECTIONS), str(seconds)]
            watch = {**route.path_procs, **route.other_procs}
            result, cpu = ctx.load("wrk", [*args, json.dumps(route.headers)], watch, seconds * 10 + 60)
            _record(ctx, CASE, variant, route, result, cpu, run)
            rate = rates[variant] = result["requests_per_s"]
            for name in ("gateway", "listener"):
                if rate > 0 and name in cpu:
                    per_request[variant, name] = cpu[name] / rate
            for proc in procs:
                ctx.procs.stop(proc)
        # How far each of the relay's processes is from the floor's, each beside the same counterpart.
        for name, floor_variant in (("gateway", "floor gateway"), ("listener", "floor listener")):
            relay, least = per_request.get(("relay", name)), per_request.get((floor_variant, name))
            if relay and least:
                ctx.record(CASE, f"relay/{floor_variant}", f"cpu {name} per request", relay / least, "x", run)
        # How far each pairing is from 2 x localtunnel, measured in the same run.
        for variant in variants:
            if variant != "localtunnel" and rates.get("localtunnel") and variant in rates:
                ctx.record(
                    CASE,
                    f"{variant}/localtunnel",
                    "requests/s",
                    rates[variant] / rates["localtunnel"],
                    "x",
                    run,
                )
