"""
Autobahn's C{sendData} without a debug line nobody reads, with Nagle off, and written through where it pays.

Autobahn formats the arguments of a debug log line (colourised with C{click.style}) on every frame it
sends, whatever the log level: on the HTTP relaying path, where each request is a few small control
channel messages each way, that was as much CPU as the write itself. L{QuietSendData} writes straight to
the transport when Autobahn would (no chopping, nothing queued, not synchronous) and keeps Autobahn's
traffic statistics; anything else goes through Autobahn's own method.

It turns Nagle's algorithm off, which Autobahn means to do but does not: its Twisted adapter reads
C{tcpNoDelay} before copying it from the factory, and a bare C{except} hides the C{AttributeError}; a
second small frame written on its own then waited for a delayed ACK (40 ms on loopback).

A connection can also hand each frame to the kernel at once (C{write_through}, L{relay.writes.write_now})
instead of leaving it to Twisted, which sends what a reactor turn wrote when the turn is over. A listener's
control channel does: it answers relayed HTTP requests in batches (every request the gateway's one read
delivered), and with queued writes the gateway heard no answer before the listener had handled the whole
batch, so the two processes worked in turns instead of side by side. Everywhere else batching wins: a
frame per system call cost the client library 35-40 % of its 64-byte messages/s, the gateway 9 % of its
establishments/s (accepts on control channels) and 35-40 % of its multicast deliveries/s.
"""

from __future__ import annotations

from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol

from relay.writes import plain_socket, write_now


class QuietSendData:
    """Mixin for Autobahn protocols (put it first among the bases)."""

    transport: Any
    send_queue: Any
    state: int
    trafficStats: Any  # noqa: N815 - Autobahn's names
    logOctets: bool  # noqa: N815
    # Autobahn's Twisted adapter reads this in connectionMade, before it copies the factory's options.
    tcpNoDelay = True  # noqa: N815
    # Hand each frame to the kernel at once (L{write_now}) instead of at the end of the reactor turn.
    write_through = False

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:  # noqa: N802
        """Write C{data} as Autobahn does, minus the eagerly formatted debug line."""
        if sync or (chopsize and chopsize > 0) or self.send_queue:
            super().sendData(data, sync, chopsize)  # type: ignore[misc]
            return
        transport = self.transport
        if self.write_through:
            write_now(transport, data, plain_socket(transport))
        else:
            transport.write(data)
        state = self.state
        if state == WebSocketProtocol.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif state in (WebSocketProtocol.STATE_CONNECTING, WebSocketProtocol.STATE_PROXY_CONNECTING):
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)
        if self.logOctets:
            self.logTxOctets(data, False)  # type: ignore[attr-defined]
