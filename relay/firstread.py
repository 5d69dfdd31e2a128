"""
A new connection's first read decides whether twisted.web is needed at all.

Most connections a busy gateway accepts are WebSocket upgrades to C{$hc} (senders and rendezvous legs)
that are answered from their head alone and then spliced. Building twisted.web's C{HTTPChannel} for them
(its state, its idle timer, its producer registration) cost about a tenth of what a relayed pair costs
the gateway, only to be dropped after the first read. L{FirstRead} holds the connection instead, with
only the idle timeout, and offers the first read to the site's head taker; anything it does not take
gets the real channel, which then sees exactly the bytes and timing it would have seen from the start.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure

from relay.httphead import read_head
from relay.writes import no_delay


def attach(transport: Any, protocol: Protocol) -> None:
    """
    Make C{protocol} receive what C{transport} reads (under TLS: what the TLS layer decrypts).

    The three cases are those of Autobahn's C{WebSocketResource} taking a transport over from twisted.web:
    a TLS wrapper as the transport, a TCP transport with TLS started on it, a plain TCP transport.
    """
    if isinstance(transport, ProtocolWrapper):
        transport.wrappedProtocol = protocol
    elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
        transport.protocol.wrappedProtocol = protocol
    else:
        transport.protocol = protocol
    protocol.makeConnection(transport)


class FirstRead(Protocol):
    """
    A new connection until its first read, when the site has a head taker or a lean handler.

    @ivar site: the L{relay.web.RelaySite} (its limits, its head taker, C{take_lean}, C{build_channel} and
        the idle timeout C{timeOut}).
    @ivar addr: the sender's address, for the channel that takes over.
    """

    def __init__(self, site: Any, addr: Any) -> None:
        self.site = site
        self.addr = addr
        self._idle: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """Turn Nagle's algorithm off and start the idle timeout, as twisted.web's channel would have."""
        no_delay(self.transport)
        timeout = self.site.timeOut
        if timeout is not None:
            self._idle = self.site.reactor.callLater(timeout, self._timed_out)

    def dataReceived(self, data: bytes) -> None:
        """Offer a plain head to the head taker (C{$hc} upgrades) or the lean channel; else twisted.web."""
        self._stop_idle()
        site = self.site
        taker = site.head_taker
        if taker is not None and data.startswith(b"GET ") and data.startswith(taker.target_prefix, 4):
            head = read_head(
                data,
                max_request_line=site.max_request_line,
                max_header_bytes=site.max_header_bytes,
                max_headers=site.max_headers,
                target_prefix=taker.target_prefix,
            )
            if head is not None and taker.take_head(self, head):
                return
        elif site.take_lean(self, data):
            return
        self._hand_over().dataReceived(data)

    def release_transport(self) -> Any:
        """Give the connection up to the head taker that answers its first request."""
        transport, self.transport = self.transport, None
        return transport

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Gone before its first read: nothing to do but stop the timer."""
        self._stop_idle()

    def _hand_over(self) -> Any:
        """Put twisted.web's channel on the connection, as if it had been there from the start."""
        channel = self.site.build_channel(self.addr)
        transport, self.transport = self.transport, None
        attach(transport, channel)
        return channel

    def _timed_out(self) -> None:
        """Nothing arrived in time: twisted.web's channel times the connection out, with its log line."""
        self._idle = None
        self._hand_over().timeoutConnection()

    def _stop_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
