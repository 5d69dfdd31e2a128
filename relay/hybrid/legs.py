"""
The legs of a splice: each side's socket, rewriter and closing state, and what its transport delivers to.

L{relay.hybrid.bridge.Splice} joins two of them; this module holds what belongs to one side.
"""

from __future__ import annotations

from collections.abc import Callable
from errno import EWOULDBLOCK
from typing import TYPE_CHECKING, Any

from twisted.internet import main
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from relay.hybrid.frames import HEADROOM, FrameRelay
from relay.writes import plain_socket, write_now

if TYPE_CHECKING:  # pragma: no cover
    from relay.hybrid.bridge import Splice


@implementer(IPushProducer)
class _PauseReading:
    """
    The producer registered on one leg's transport: it pauses and resumes reading on the other leg.

    Registering the other transport itself would make Twisted call its C{stopProducing} (that is,
    C{loseConnection}) when this leg disconnects, cutting the other leg before it is sent its close frame.
    """

    def __init__(self, reader: Any, splice: Splice) -> None:
        self._reader = reader
        self._splice = splice

    def pauseProducing(self) -> None:
        """The consumer's buffer is full: stop reading the other leg."""
        self._reader.pauseProducing()

    def resumeProducing(self) -> None:
        """The consumer drained: read the other leg again (unless the native thread reads it now)."""
        if self._splice.native_handle is None:
            self._reader.resumeProducing()

    def stopProducing(self) -> None:
        """Shutdown is handled by the splice, which closes the other leg properly."""


class SplicedConnection(Protocol):
    """
    What a leg's transport delivers to once the handshake is done: bytes and the loss, for the splice.

    It replaces the Autobahn protocol on the transport, so that object (about 7 KB of handshake state per
    connection) can be collected; the relay needs none of it after the 101.
    """

    def __init__(self, leg: SpliceLeg, closed: Callable[[SplicedConnection], None]) -> None:
        self.leg = leg
        self._closed = closed

    def dataReceived(self, data: bytes) -> None:
        """Relay what the leg sent."""
        self.leg.data_received(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Tell the splice, then whoever counts connections."""
        self.leg.connection_lost(reason)
        self._closed(self)


def _lose(transport: Any) -> None:
    """
    Close a leg's socket once its buffered bytes are written.

    The leg's back-pressure producer goes first: Twisted's TLS layer holds C{loseConnection} while a
    producer is registered, which would leave the socket open until the peer gives up.
    """
    transport.unregisterProducer()
    transport.loseConnection()


class SpliceLeg:
    """One side of a splice: its protocol (until the splice starts), its frame rewriter, its closing state."""

    __slots__ = (
        "close_code",
        "close_reason",
        "close_received",
        "close_sent",
        "connection",
        "finished",
        "lost",
        "name",
        "other",
        "pong_waiting",
        "pongs_skipped",
        "protocol",
        "relay",
        "socket",
        "splice",
        "transport",
    )

    def __init__(self, splice: Splice, protocol: Any, name: str) -> None:
        self.splice = splice
        self.protocol: Any = protocol
        self.connection: SplicedConnection | None = None
        self.transport = protocol.transport
        self.socket = plain_socket(self.transport)
        self.name = name
        self.relay = FrameRelay()
        self.other: SpliceLeg = self
        self.close_sent = False
        self.close_received = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.finished = False
        self.lost = False
        self.pongs_skipped = False
        self.pong_waiting: bytes | None = None  # for a ping that came while a frame to this leg was half sent

    def data_received(self, data: bytes) -> None:
        """Bytes arrived on this leg's socket."""
        self.splice.data_received(self, data)

    def read(self) -> Any:
        """
        Read the socket into the shared buffer and relay in place: the transport's C{doRead} on plain legs.

        It does what Twisted's C{tcp.Connection.doRead} does, with C{recv_into} instead of C{recv}.
        """
        buffer, view = self.splice.read_buffer
        try:
            got = self.socket.recv_into(view)  # type: ignore[union-attr]  # plain legs only
        except OSError as e:
            if e.args[0] == EWOULDBLOCK:
                return None
            return main.CONNECTION_LOST
        if not got:
            return main.CONNECTION_DONE
        self.splice.read_received(self, buffer, HEADROOM, HEADROOM + got)
        return None

    def send(self, data: memoryview) -> None:
        """Write relayed frames to this leg (L{write_now}); a full socket pauses the other leg's reading."""
        if write_now(self.transport, data, self.socket):
            self._pause_source()

    def send_runs(self, runs: list[memoryview]) -> None:
        """
        L{send} the runs of frames one read had for this leg, as one write.

        Pings and pongs between the runs (answered on the other leg) split them. Written apart, each run
        was on a full socket an object of its own in the queue (about 50 bytes for an empty frame's 2),
        and the read's worth a leg that reads nothing may be made to hold was four times as much.
        """
        self.send(runs[0] if len(runs) == 1 else memoryview(b"".join(runs)))

    def _pause_source(self) -> None:
        """
        The socket is full and bytes are queued: stop reading the other leg until the queue drains.

        Twisted would pause only once the queue passed C{bufferSize}, which is also the read size, so a
        slow reader would cost the gateway two reads' worth per direction; pausing at once keeps it to
        one. Twisted resumes the producer when the queue is empty, as for its own pauses.
        """
        transport = self.transport
        producer = transport.producer
        if producer is not None and transport.streamingProducer and not transport.producerPaused:
            transport.producerPaused = True
            producer.pauseProducing()

    def connection_lost(self, reason: Failure) -> None:
        """This leg's socket is gone."""
        self.splice.connection_lost(self, reason)
