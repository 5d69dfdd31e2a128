"""
Legacy binding scenarios (performance issue, item 4), pending.

Measured against Crossbar.io (PyPI C{crossbar}) configured on loopback in the same run:

  - multicast: deliveries/s with 1 publisher and 10 subscribers, 256-byte events, vs Crossbar pub/sub
    (target at least 1.5x);
  - request/reply: calls/s vs Crossbar RPC (target at least 1.0x);
  - one-way: messages/s (no baseline).

The bindings' gateway transport (C{/$wcf}) has landed with C{benchmarks/bindings_throughput.py}, whose
sender and listener roles (C{ChannelFactory} with a window
of calls in flight, service hosts counting deliveries) are the relay side of these scenarios and only
need to print C{MEASURE start}/C{MEASURE end}/C{RESULT} to run under C{ctx.load}. To make one runnable,
replace its
L{pending} call with a L{scenario} function that starts a gateway (C{ctx.gateway()}; add the binding's
entity to L{benchmarks.context.gateway_config}), the subscribers/services and the publisher/caller as
separate processes through C{ctx.procs.python(...)} and C{ctx.load(...)}, and Crossbar through
C{ctx.procs.start("crossbar", [...])} with a generated C{.crossbar/config.json} on a free port (note
whether crossbar was found or installed). Record C{deliveries/s} or C{calls/s} per variant and the ratio
C{relay/crossbar} per repetition.
"""

from __future__ import annotations

from benchmarks.registry import Target, pending

_WAITING = "the bindings' gateway transport has landed (/$wcf); the scenarios are left to its owners, see this module"

pending(
    "legacy.multicast",
    "legacy",
    "multicast deliveries/s, 1 publisher -> 10 subscribers, 256 B events, vs Crossbar pub/sub",
    _WAITING,
    targets=(Target("256 B", "relay/crossbar", "deliveries/s", ">=", 1.5),),
)
pending(
    "legacy.requestreply",
    "legacy",
    "request/reply calls/s vs Crossbar RPC",
    _WAITING,
    targets=(Target("256 B", "relay/crossbar", "calls/s", ">=", 1.0),),
)
pending("legacy.oneway", "legacy", "one-way messages/s", _WAITING)
