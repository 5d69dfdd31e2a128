"""
What twisted.web costs the gateway per HTTP request, measured alone, in one process, without sockets.

The gateway's HTTP requests go through twisted.web's channel and request (parsing, C{Request.process},
the response head, C{finish}) before and after the relay's own work. This feeds the C{http.requests}
scenario's request (the head C{wrk} sends) to a L{relay.web.RelaySite} over an in-memory transport,
answered at once by a leaf resource with a 5-byte body and two header fields, and prints the time per
request beside a baseline measured in the same run: the relay's own strict head reader
(L{relay.httphead.read_head}) on the same bytes, the least any HTTP server must do to read them.

    python benchmarks/webcost.py [--requests N] [--runs N]

Compare the first row with the gateway's CPU per request in C{http.requests} (the same machine, minutes
apart): that share is what a request path of the relay's own in place of twisted.web could save at most.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

REQUEST = b"GET /web/hello.txt HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"


def _twisted_web(requests: int) -> float:
    """Seconds per request through a L{RelaySite} answering at once."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.web.resource import Resource
    from twisted.web.server import NOT_DONE_YET

    from relay.web import RelaySite

    class Answer(Resource):
        isLeaf = True

        def render(self, request: Any) -> Any:
            request.setResponseCode(200)
            request.add_fields([("Content-Type", "text/plain"), ("ETag", '"abc"')])
            request.setHeader(b"content-length", b"5")
            request.write(b"hello")
            request.finish()
            return NOT_DONE_YET

    site = RelaySite(Answer(), reactor=Clock())
    channel = site.build_channel(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    channel.makeConnection(transport)
    start = time.perf_counter()
    for _ in range(requests):
        channel.dataReceived(REQUEST)
        transport.clear()
    return (time.perf_counter() - start) / requests


def _read_head(requests: int) -> float:
    """Seconds per request for the strict head reader alone."""
    from relay.httphead import read_head

    start = time.perf_counter()
    for _ in range(requests):
        read_head(REQUEST, max_request_line=16384, max_header_bytes=65536, max_headers=500)
    return (time.perf_counter() - start) / requests


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks/webcost.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per run (default 20000)")
    parser.add_argument("--runs", type=int, default=5, help="runs, alternating (default 5)")
    args = parser.parse_args(argv)
    rows: dict[str, list[float]] = {"twisted.web request, answered at once": [], "read_head alone": []}
    for _ in range(args.runs):
        rows["twisted.web request, answered at once"].append(_twisted_web(args.requests) * 1e6)
        rows["read_head alone"].append(_read_head(args.requests) * 1e6)
    print("| per request | median µs | min-max |")
    print("|---|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f}-{max(values):.1f} |")


if __name__ == "__main__":
    main()
