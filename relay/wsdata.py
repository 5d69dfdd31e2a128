"""
Fixes and shortcuts for Autobahn's protocols: quieter, unbatched-where-it-pays writes, and no stray timers.

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
batch, so the two processes worked in turns instead of side by side. The gateway sends each relayed HTTP
request at once for the same reason (C{send_wholes(..., at_once=True)}). Everywhere else batching wins: a
frame per system call cost the client library 35-40 % of its 64-byte messages/s, the gateway 9 % of its
establishments/s (accepts on control channels) and 35-40 % of its multicast deliveries/s.

Whole messages can be framed here (L{QuietSendData.send_whole}) instead of by Autobahn's frame and masker
objects, and L{NoTimerAfterLoss} cancels the closing-handshake timer Autobahn leaves behind a lost
connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import txaio
from autobahn.websocket.protocol import WebSocketProtocol

from relay.logger import Logger
from relay.writes import QUEUED_WRITE_COST, pending_write_bytes, plain_socket, queued_writes, write_now
from relay.wsframes import masked_frame, server_frame


class NoTimerAfterLoss:
    """Mixin for Autobahn protocols (put it first among the bases): no closing timer outlives the socket."""

    def _connectionLost(self, reason: Any) -> None:  # noqa: N802 - Autobahn's name
        """
        Cancel the closing-handshake timer with the others when the connection is lost.

        Autobahn cancels its ping and opening timers here but not this one: a peer that drops the TCP
        connection instead of answering a close frame (hyco-https does, on rendezvous sockets) left the
        protocol alive for the whole close timeout after its socket was gone.
        """
        protocol: Any = self
        call = protocol.closeHandshakeTimeoutCall
        if call is not None:
            call.cancel()
            protocol.closeHandshakeTimeoutCall = None
        super()._connectionLost(reason)  # type: ignore[misc]


class BoundedDrop:
    """
    Mixin for our Autobahn server protocols (before C{WebSocketServerProtocol}): a graceful drop ends.

    After a clean closing handshake the gateway ends TCP with a FIN (a reset would cost Node clients the
    close code), which completes only once what is queued for the peer has been sent. A peer that
    stopped reading never lets that happen, and the connection, with all it holds (a listener's
    registration, its namespace place), would stay until the gateway stops. Such a drop is aborted after
    the close handshake timeout.
    """

    _drop_call: Any = None

    def dropConnection(self, abort: bool = False) -> None:  # noqa: N802 - Autobahn's name
        """Drop as Autobahn does; bound a graceful drop by the close handshake timeout."""
        protocol: Any = self
        graceful = not abort and protocol.state != WebSocketProtocol.STATE_CLOSED
        super().dropConnection(abort=abort)  # type: ignore[misc]
        if graceful and self._drop_call is None and protocol.transport is not None:
            self._drop_call = txaio.call_later(  # type: ignore[attr-defined]
                protocol.closeHandshakeTimeout or 5.0, self._drop_overdue
            )

    def _drop_overdue(self) -> None:
        self._drop_call = None
        transport = getattr(self, "transport", None)
        if transport is not None:
            _log.info("aborting a connection whose peer did not take its last bytes after the close")
            transport.abortConnection()

    def _connectionLost(self, reason: Any) -> None:  # noqa: N802 - Autobahn's name
        """The socket is gone: no drop timer outlives it."""
        call, self._drop_call = self._drop_call, None
        if call is not None and call.active():
            call.cancel()
        super()._connectionLost(reason)  # type: ignore[misc]


PONG_BACKLOG_LIMIT = 1024 * 1024
_log = Logger(namespace="relay.wsdata")


class BoundedPongs:
    """
    Mixin for our Autobahn protocols: no pong is queued for a peer that pings but does not read.

    Autobahn answers every ping. A peer that floods pings and never reads would make us queue the pongs
    without end (the gateway, or a listener whose local WebSocket server misbehaves). RFC 6455 (5.5.3)
    lets an endpoint leave earlier pings unanswered, and past L{PONG_BACKLOG_LIMIT} unsent bytes this
    one is. Each write queued counts with what it holds beyond its bytes (L{QUEUED_WRITE_COST}): an
    empty pong is 2 to 6 bytes on the wire and an object of about 50 in the queue.
    """

    transport: Any
    state: int
    autoPingTimeoutCall: Any  # noqa: N815 - Autobahn's name
    _pongs_skipped = False
    # Bytes came from the peer since our last ping (its subclass's dataReceived sets it): its pong may be
    # late behind them, or unread, while the peer is plainly there (L{heard_since_ping}).
    _heard_since_ping = False

    def onPing(self, payload: bytes) -> None:
        """Answer, unless the peer already has more than L{PONG_BACKLOG_LIMIT} bytes waiting."""
        if self.state != WebSocketProtocol.STATE_OPEN:
            return
        held = pending_write_bytes(self.transport) + QUEUED_WRITE_COST * queued_writes(self.transport)
        if held < PONG_BACKLOG_LIMIT:
            self.sendPong(payload)  # type: ignore[attr-defined]
        elif not self._pongs_skipped:
            self._pongs_skipped = True
            _log.info(
                "{peer} pings without reading; pongs skipped while its queue is full",
                peer=getattr(self, "peer", "-"),
            )

    def sendPing(self, payload: bytes | None = None) -> None:  # noqa: N802 - Autobahn's name
        """Ping the peer; what it sends from now on shows it is there, should the pong be late."""
        self._heard_since_ping = False
        super().sendPing(payload)  # type: ignore[misc]

    def heard_since_ping(self) -> bool:
        """Whether the peer sent anything since our last ping, or since the last time this was asked."""
        heard, self._heard_since_ping = self._heard_since_ping, False
        return heard

    def wait_for_pong_again(self) -> None:
        """
        Give the pong of the ping in flight another C{autoPingTimeout}, instead of dropping the peer now.

        For a peer that may leave it unread for a while and is not gone (one held back, or busy): called
        from C{onAutoPingTimeout} in place of Autobahn's drop.
        """
        factory: Any = self.factory  # type: ignore[attr-defined]
        self.autoPingTimeoutCall = factory._batched_timer.call_later(  # Autobahn's own timer wheel
            factory.autoPingTimeout,
            self.onAutoPingTimeout,  # type: ignore[attr-defined]
        )


class QuietSendData(NoTimerAfterLoss):
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

    def send_whole(self, payload: bytes, is_binary: bool) -> None:
        """
        C{sendMessage} for one whole message: the frame is built here when nothing calls for Autobahn's.

        Autobahn's C{sendMessage} makes a frame object and a masker object per frame; for a listener's
        HTTP answers that was a seventh of C{relay expose}'s CPU. Messages that need its machinery
        (compression, automatic fragmentation, a fragmented message in progress, a connection that is
        not open) still go through it, which also raises C{Disconnected} as before.
        """
        self.send_wholes(((payload, is_binary),))

    def send_wholes(self, messages: Sequence[tuple[bytes, bool]], at_once: bool = False) -> None:
        """
        L{send_whole} for several messages (C{(payload, is_binary)}), written with one C{send}.

        A listener's answer on its control channel is a C{response} message and its body; written
        apart, each was a system call in the listener and a read in the gateway.

        @param at_once: hand the frames to the kernel now (L{write_now}) even on a connection that
            batches (no C{write_through}), as the gateway does with a relayed HTTP request.
        """
        protocol: Any = self
        if (
            protocol.state != WebSocketProtocol.STATE_OPEN
            or protocol.send_state != WebSocketProtocol.SEND_STATE_GROUND
            or protocol._perMessageCompress is not None
            or (
                protocol.autoFragmentSize
                and any(len(payload) > protocol.autoFragmentSize for payload, _ in messages)
            )
        ):
            for payload, is_binary in messages:
                protocol.sendMessage(payload, isBinary=is_binary)
            return
        make = server_frame if protocol.factory.isServer else masked_frame
        frames = [make(payload, binary=is_binary) for payload, is_binary in messages]
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        if at_once and not self.send_queue:
            self._write(data, True)
        else:
            self.sendData(data)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:  # noqa: N802
        """Write C{data} as Autobahn does, minus the eagerly formatted debug line."""
        if sync or (chopsize and chopsize > 0) or self.send_queue:
            super().sendData(data, sync, chopsize)  # type: ignore[misc]
            return
        self._write(data, self.write_through)

    def _write(self, data: bytes, at_once: bool) -> None:
        """Write C{data} to the transport (to the kernel at once if asked) and count it as Autobahn does."""
        transport = self.transport
        if at_once:
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
