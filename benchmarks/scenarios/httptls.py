"""
HTTP relaying over TLS: the relay serving https and wss, against the same relay on plain TCP in the same run.

Operators usually end TLS at the gateway: senders reach it over https, and C{relay expose} keeps its
control channel over wss. Both variants forward the same C{GET} of the same 1 KB file to the same upstream
under the same wrk load as C{http.requests}:

  - C{relay}: the gateway on plain TCP and C{relay expose} over ws, as in C{http.requests};
  - C{relay over TLS}: the gateway on an C{ssl:} endpoint with a certificate for 127.0.0.1 from a
    development CA made for the run (L{relay.certs}), C{relay expose --ca} over wss, wrk over https.

Each must return the file byte for byte first. The result is requests/s and CPU per request for both
processes, and C{TLS/plain}: what TLS costs the relay. Runs only when named (C{-s http.tls}): it
diagnoses, and judges no target.
"""

from __future__ import annotations

from benchmarks.context import Context
from benchmarks.registry import scenario
from benchmarks.scenarios.http import (
    CASES,
    Route,
    load_and_upstream,
    load_in_turn,
    relay_route,
    wait_until_served,
)

VARIANTS = ("relay", "relay over TLS")


@scenario(
    "http.tls",
    "http",
    "HTTP requests/s through the relay over TLS (https senders, wss listener) vs the same relay on plain TCP",
    variants=VARIANTS,
    explicit=True,
)
def tls(ctx: Context) -> None:
    tools = load_and_upstream(ctx, "http.tls needs nginx as the upstream; skipped")
    if tools is None:
        return
    wrk, body, (upstream_proc, upstream_port) = tools
    upstream = f"http://127.0.0.1:{upstream_port}"
    routes: dict[str, Route] = {
        "relay": relay_route(ctx, upstream),
        "relay over TLS": relay_route(ctx, upstream, ctx.gateway(name="gateway-tls", tls=True)),
    }
    for name, route in routes.items():
        route.other_procs["upstream"] = upstream_proc
        wait_until_served(name, route, body)
    for run in ctx.repetitions():
        for case, connections in CASES:
            if not ctx.wants(case):
                continue
            loads = load_in_turn(ctx, wrk, routes, case, connections, run)
            (plain_rate, plain_cpu), (tls_rate, tls_cpu) = loads["relay"], loads["relay over TLS"]
            if not (plain_rate and tls_rate):
                continue
            ctx.record(case, "TLS/plain", "requests/s", tls_rate / plain_rate, "x", run)
            for name in ("gateway", "listener"):
                if plain_cpu.get(name) and tls_cpu.get(name):
                    ratio = (tls_cpu[name] / tls_rate) / (plain_cpu[name] / plain_rate)
                    ctx.record(case, "TLS/plain", f"cpu {name} per request", ratio, "x", run)
