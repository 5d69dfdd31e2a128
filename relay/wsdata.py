"""
Autobahn's C{sendData} without the cost of a debug line nobody reads.

Autobahn formats the arguments of a debug log line (colourised with C{click.style}) on every frame it
sends, whatever the log level: on the HTTP relaying path, where each request is a few small control
channel messages each way, that was as much CPU as the write itself. L{QuietSendData} writes straight to
the transport when Autobahn would (no chopping, nothing queued, not synchronous) and keeps Autobahn's
traffic statistics; anything else goes through Autobahn's own method.
"""

from __future__ import annotations

from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol


class QuietSendData:
    """Mixin for Autobahn protocols (put it first among the bases)."""

    transport: Any
    send_queue: Any
    state: int
    trafficStats: Any  # noqa: N815 - Autobahn's names
    logOctets: bool  # noqa: N815

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:  # noqa: N802
        """Write C{data} as Autobahn does, minus the eagerly formatted debug line."""
        if sync or (chopsize and chopsize > 0) or self.send_queue:
            super().sendData(data, sync, chopsize)  # type: ignore[misc]
            return
        self.transport.write(data)
        state = self.state
        if state == WebSocketProtocol.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif state in (WebSocketProtocol.STATE_CONNECTING, WebSocketProtocol.STATE_PROXY_CONNECTING):
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)
        if self.logOctets:
            self.logTxOctets(data, False)  # type: ignore[attr-defined]
