"""
HTTP relaying scenarios (performance issue, item 3), pending.

Requests/s through the relay against the npm C{localtunnel} server doing the same job (target at least
2x) and nginx as a reverse proxy (the ceiling).

HTTP relaying has landed on main (C{relay/hybrid/http.py}, C{relay expose}); the scenario itself is still
to be written. To make it runnable, replace its L{pending} call with a function
decorated with L{scenario} (same name and targets) that, per repetition and per variant:

  - starts the upstream: for the relay, a gateway (C{ctx.gateway()}) and a listener process answering
    HTTP requests on its control channel; for nginx, a plain HTTP server behind C{ctx.nginx_proxy(port)}
    (the nginx template already keeps upstream connections alive); for localtunnel, its npm server and
    client (install them like C{tests/e2e/node} does, and add a note saying whether they were found or
    installed);
  - runs a lean keep-alive HTTP load generator (a new C{benchmarks.loadgen} kind printing
    C{MEASURE start}/C{MEASURE end}/C{RESULT}) through C{ctx.load(...)}, watching the gateway's CPU;
  - records C{requests/s} per variant and the ratios C{relay/localtunnel} and C{relay/nginx}.
"""

from __future__ import annotations

from benchmarks.registry import Target, pending

_WAITING = (
    "HTTP relaying has landed (relay/hybrid/http.py); the scenario is left to its owners, see this module"
)

pending(
    "http.requests",
    "http",
    "HTTP requests/s through the relay vs npm localtunnel server (and nginx reverse proxy as the ceiling)",
    _WAITING,
    targets=(Target("*", "relay/localtunnel", "requests/s", ">=", 2.0),),
)
