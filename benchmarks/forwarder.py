"""
A byte forwarder on Twisted: the least a relaying process built like the gateway can cost per request.

It accepts connections and joins each to a new connection to its upstream, then moves bytes both ways
without reading them: no HTTP parsing, no framing, no routing, no logging. Two of them chained are the
C{floor} variant of L{benchmarks.scenarios.http}: the same two processes on the path as the relay's
gateway and C{relay expose}, the same reactor (epoll), the same system calls per request (one read and one
write each way in each process), and nothing else. What the relay needs above it is the cost of its
protocol work, not of Python or Twisted.

Each side's writes go to the kernel at once when nothing is queued (as the gateway's do), and the reactor
dispatches events as the gateway's does (L{relay.eventloop}); a side whose socket is full pauses reading
from the other, so nothing grows without bound.

    python -m benchmarks.forwarder LISTEN_PORT UPSTREAM_PORT
"""

from __future__ import annotations

import sys
from typing import Any


def _forward(source: Any, target: Any) -> None:
    """Bytes from C{source} go to C{target}; C{target} full pauses C{source}."""
    target.transport.registerProducer(source.transport, True)


def main(argv: list[str]) -> None:
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    from relay.eventloop import lean_dispatch

    lean_dispatch(reactor)  # as the gateway does, so that the floor stays a floor
    from twisted.internet.protocol import ClientFactory, Factory, Protocol

    from relay.writes import plain_socket, write_now

    class Leg(Protocol):
        """One side of a joined pair; C{peer} is the other side once it is connected."""

        peer: Leg | None = None
        transport: Any

        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)

        def dataReceived(self, data: bytes) -> None:
            assert self.peer is not None  # a downstream reads nothing until its upstream is connected
            write_now(self.peer.transport, data, plain_socket(self.peer.transport))

        def connectionLost(self, reason: Any = None) -> None:
            if self.peer is not None:
                self.peer.transport.loseConnection()

    class Upstream(Leg):
        def __init__(self, downstream: Leg) -> None:
            self.peer = downstream

        def connectionMade(self) -> None:
            super().connectionMade()
            downstream = self.peer
            assert downstream is not None
            if downstream.transport is None or not downstream.transport.connected:
                self.transport.loseConnection()
                return
            downstream.peer = self
            _forward(downstream, self)
            _forward(self, downstream)
            downstream.transport.resumeProducing()

    class Dial(ClientFactory):
        def __init__(self, downstream: Leg) -> None:
            self.downstream = downstream

        def buildProtocol(self, addr: Any) -> Upstream:
            return Upstream(self.downstream)

        def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
            self.downstream.transport.loseConnection()

    class Downstream(Leg):
        def connectionMade(self) -> None:
            super().connectionMade()
            self.transport.pauseProducing()  # nothing is read until there is somewhere to send it
            reactor.connectTCP("127.0.0.1", upstream_port, Dial(self))  # type: ignore[attr-defined]

    listen_port, upstream_port = int(argv[0]), int(argv[1])
    factory: Any = Factory.forProtocol(Downstream)
    listening: Any = reactor
    port = listening.listenTCP(listen_port, factory, backlog=4096, interface="127.0.0.1")
    print(f"READY {port.getHost().port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
