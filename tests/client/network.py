"""
An in-memory network for client tests.

Client connections made on a L{MemoryReactorClock} are joined to server factories with
L{twisted.test.iosim}, over a client transport that models TCP flow control.
"""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump, connect
from typing_extensions import override


class ClientTransport(FakeTransport):
    """
    A client-side L{FakeTransport} that models TCP flow control in both directions.

    Reading: C{pauseProducing} holds incoming bytes (and a disconnect behind them) until
    C{resumeProducing}, as a real transport stops reading its socket. Writing: when more than
    C{write_high_water} bytes wait to be pumped, a registered streaming producer is paused, and resumed
    once the pump has drained the buffer, as C{FileDescriptor} does.

    @ivar pause_count: how often reading was paused, for assertions.
    @ivar stalled: when set, the peer stops reading: what is written stays in the buffer.
    """

    def __init__(self, protocol: Any, peer: IPv4Address) -> None:
        super().__init__(
            protocol, isServer=False, hostAddress=IPv4Address("TCP", "10.0.0.2", 50000), peerAddress=peer
        )
        self.reading_paused = False
        self.pause_count = 0
        self.write_high_water: int | None = None
        self.stalled = False
        self._held: list[Any] = []
        self._disconnect_held = False
        self._producer_paused = False

    @override
    def pauseProducing(self) -> None:
        self.reading_paused = True
        self.pause_count += 1

    @override
    def resumeProducing(self) -> None:
        self.reading_paused = False
        while self._held and not self.reading_paused:
            super().bufferReceived(self._held.pop(0))
        if not self.reading_paused and self._disconnect_held:
            self._disconnect_held = False
            super().reportDisconnect()

    @override
    def bufferReceived(self, buf: Any) -> None:
        if self.reading_paused:
            self._held.append(buf)
        else:
            super().bufferReceived(buf)

    @override
    def reportDisconnect(self) -> None:
        if self.reading_paused and self._held:
            self._disconnect_held = True
        else:
            super().reportDisconnect()

    @property
    def held_bytes(self) -> int:
        return sum(len(c) for c in self._held if isinstance(c, bytes))

    @override
    def write(self, data: bytes) -> None:
        super().write(data)
        if (
            self.write_high_water is not None
            and self.producer is not None
            and self.streamingProducer
            and not self._producer_paused
            and sum(len(c) for c in self.stream) > self.write_high_water
        ):
            self._producer_paused = True
            self.producer.pauseProducing()

    @property
    def unsent_bytes(self) -> int:
        return sum(len(c) for c in self.stream)

    @override
    def getOutBuffer(self) -> Any:
        if self.stalled:
            return b""
        out = super().getOutBuffer()
        if self._producer_paused and not self.stream and self.producer is not None:
            self._producer_paused = False
            self.producer.resumeProducing()
        return out


class Network:
    """
    Joins connections the client makes on a L{MemoryReactorClock} to server factories by port.

    @ivar transports: client transports in the order connections were made.
    """

    def __init__(self, reactor: MemoryReactorClock) -> None:
        self.reactor = reactor
        self.servers: dict[int, Any] = {}
        self.pumps: list[IOPump] = []
        self.transports: list[ClientTransport] = []
        self.protocols: list[Any] = []
        self._peer_ports = itertools.count(51234)

    def serve(self, port: int, factory: Any) -> None:
        self.servers[port] = factory

    def connect_pending(self) -> bool:
        made = False
        while self.reactor.tcpClients:
            host, port, factory, _timeout, _bind = self.reactor.tcpClients.pop(0)
            connector = self.reactor.connectors.pop(0)
            if connector.stoppedConnecting:
                continue
            server_factory = self.servers.get(port)
            if server_factory is None:
                factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
                continue
            client = factory.buildProtocol(IPv4Address("TCP", host, port))
            server = server_factory.buildProtocol(IPv4Address("TCP", "203.0.113.7", 0))
            client_io = ClientTransport(client, IPv4Address("TCP", host, port))
            server_io = FakeTransport(
                server,
                isServer=True,
                hostAddress=IPv4Address("TCP", host, port),
                peerAddress=IPv4Address("TCP", "203.0.113.7", next(self._peer_ports)),
            )
            self.transports.append(client_io)
            self.protocols.append(client)
            self.pumps.append(connect(server, server_io, client, client_io, greet=False, clock=self.reactor))
            made = True
        return made

    def flush(self) -> None:
        """Move bytes and complete connections until nothing happens any more (time stands still)."""
        for _ in range(10_000):
            self.reactor.advance(0)
            moved = self.connect_pending()
            for pump in list(self.pumps):
                if pump.pump(advanceClock=False):
                    moved = True
                if pump.clientIO.disconnected and pump.serverIO.disconnected:
                    self.pumps.remove(pump)
            if not moved:
                return
        raise AssertionError("network did not settle")

    def advance(self, seconds: float, step: float = 1.0) -> None:
        """
        Let time pass in steps of at most C{step} seconds, settling the network after each.

        Stepping matters for keep-alive pings: a pong must travel before the ping timeout fires.
        """
        self.flush()
        remaining = seconds
        while remaining > 1e-9:
            delta = min(step, remaining)
            self.reactor.advance(delta)
            remaining -= delta
            self.flush()
