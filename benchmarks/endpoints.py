"""
The application end of the WebSocket benchmarks, built on Autobahn.

A server for the direct and nginx runs, and a hybrid connection listener (control channel plus rendezvous
legs) for the relayed runs.

Both count binary messages, or echo them after an C{echo} command; text messages are commands:
C{reset} zeroes the counters and starts the clock, C{stop} answers with the counts and the seconds since
C{reset} as JSON. Timing at the endpoint measures the steady state: what was still queued from the
warm-up when C{reset} was sent is neither counted nor timed. The same protocol code serves
every variant, so what differs between the runs is only the path between load generator and endpoint.

Run as a process::

    python -m benchmarks.endpoints server PORT_FILE
    python -m benchmarks.endpoints listener WS_URL ENTITY TOKEN
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any
from urllib.parse import quote

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
    connectWS,
)

from benchmarks.procs import raise_nofile_limit


class Counting:
    """Count or echo binary messages; answer text commands."""

    count = 0
    received = 0
    started = 0.0
    echo = False

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            if self.echo:
                self.sendMessage(payload, isBinary=True)  # type: ignore[attr-defined]
            else:
                self.count += 1
                self.received += len(payload)
            return
        command = payload.decode()
        if command == "reset":
            self.count = self.received = 0
            self.started = time.perf_counter()
        elif command == "echo":
            self.echo = True
        elif command == "stop":
            seconds = time.perf_counter() - self.started
            answer = json.dumps({"count": self.count, "bytes": self.received, "seconds": seconds}).encode()
            self.sendMessage(answer, isBinary=False)  # type: ignore[attr-defined]


class CountingServer(Counting, WebSocketServerProtocol):  # type: ignore[misc]
    """The direct (and nginx-proxied) endpoint."""


class CountingClient(Counting, WebSocketClientProtocol):  # type: ignore[misc]
    """A listener's rendezvous leg: the relayed endpoint."""


class ControlChannel(WebSocketClientProtocol):
    """A hybrid connection listener's control channel: accept every sender."""

    def onOpen(self) -> None:
        print("READY", flush=True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            return
        accept = json.loads(payload).get("accept")
        if accept is None:
            return
        factory = WebSocketClientFactory(accept["address"])
        factory.protocol = CountingClient
        connectWS(factory)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        from twisted.internet import reactor

        print(f"control channel closed: {code} {reason}", file=sys.stderr, flush=True)
        reactor.stop()  # type: ignore[attr-defined]


def serve(port_file: str) -> None:
    """Listen on a free loopback port and write the port number to C{port_file}."""
    from twisted.internet import reactor

    factory = WebSocketServerFactory()
    factory.protocol = CountingServer
    port: Any = reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=1024)  # type: ignore[attr-defined]
    with open(port_file, "w") as f:
        f.write(str(port.getHost().port))
    print("READY", flush=True)
    reactor.run()  # type: ignore[attr-defined]


def listen(ws_url: str, entity: str, token: str) -> None:
    """Open a control channel for C{entity} at the gateway C{ws_url} and accept every sender."""
    from twisted.internet import reactor

    url = f"{ws_url}/$hc/{entity}?sb-hc-action=listen&sb-hc-token={quote(token, safe='')}"
    factory = WebSocketClientFactory(url)
    factory.protocol = ControlChannel
    connectWS(factory)
    reactor.run()  # type: ignore[attr-defined]


def main(argv: list[str]) -> None:
    raise_nofile_limit()
    if argv[0] == "server":
        serve(argv[1])
    elif argv[0] == "listener":
        listen(argv[1], argv[2], argv[3])
    else:
        raise SystemExit(f"unknown endpoint {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
