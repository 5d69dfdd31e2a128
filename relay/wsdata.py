"""
Autobahn's C{sendData} without the cost of a debug line nobody reads, and without waiting for the reactor.

Autobahn formats the arguments of a debug log line (colourised with C{click.style}) on every frame it
sends, whatever the log level: on the HTTP relaying path, where each request is a few small control
channel messages each way, that was as much CPU as the write itself. L{QuietSendData} writes straight to
the transport when Autobahn would (no chopping, nothing queued, not synchronous) and keeps Autobahn's
traffic statistics; anything else goes through Autobahn's own method.

It also hands each frame to the kernel at once (L{relay.writes.write_now}) and turns Nagle's algorithm
off, which Autobahn means to do but does not: its Twisted adapter reads C{tcpNoDelay} before copying it
from the factory, and a bare C{except} hides the C{AttributeError}. Without both, a process that read
sixteen control messages at once answered none of them before it had handled all sixteen, and a second
small frame written on its own waited for a delayed ACK.
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
    # Hand each frame to the kernel at once (L{write_now}); a protocol that sends many small messages to
    # one peer per reactor turn can turn this off to have Twisted send them together.
    write_through = True

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
