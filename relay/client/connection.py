"""
The application's side of one relayed WebSocket, on the listener and the sender alike.

Both directions are flow-controlled so that a fast peer cannot make this process buffer without bound:

  - Sending: L{HybridWebSocket.send} writes at once and returns a L{Deferred} that fires when the
    transport's write buffer is below its high-water mark again (the transport pauses us as a push
    producer). Awaiting it is the back-pressure; fire-and-forget callers still get ordered delivery.
  - Receiving: unread messages queue up to L{WebSocketOptions.receive_buffer} bytes; beyond that the
    connection stops reading from the network until the application has taken half of it, so TCP slows
    the sender down instead of memory growing here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from autobahn.exception import Disconnected
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from relay.client.errors import ConnectionClosedError
from relay.client.forwarding import FrameForwarder
from relay.client.headers import Headers
from relay.client.options import WebSocketOptions
from relay.client.protocol import IRelayingReceiver, IWebSocketReceiver, RelayClientProtocol
from relay.logger import Logger
from relay.writes import WriteGate

if TYPE_CHECKING:
    from relay.client.accepting import AcceptContext

Message = bytes | str
"""A WebSocket message: C{bytes} for binary messages, C{str} for text messages."""

SENDABLE_CLOSE_CODES = frozenset(WebSocketProtocol.CLOSE_STATUS_CODES_ALLOWED)
"""Close codes an endpoint may send (the reserved 1004-1006 and 1015 are not among them)."""
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
_MAX_REASON_BYTES = 123


@implementer(IWebSocketReceiver, IRelayingReceiver)
class HybridWebSocket:
    """
    A WebSocket connection relayed through a hybrid connection.

    @ivar tracking_id: the connection id shared by sender, relay and listener (C{sb-hc-id}); quote it
        when reporting problems.
    @ivar subprotocol: the negotiated subprotocol, or C{None}.
    @ivar request_headers: on the listener side, the sender's upgrade headers (case-insensitive); empty
        on the sender side.
    @ivar context: on the listener side, what the sender asked for (L{AcceptContext}); C{None} on the
        sender side.
    @ivar close_code: after the close, the peer's close code (1005 when it gave none, 1006 when the
        connection dropped without a closing handshake); C{None} while open.
    @ivar close_reason: after the close, the peer's close reason or a description of the drop.
    @ivar was_clean: after the close, whether the closing handshake completed.
    """

    log = Logger()

    def __init__(
        self,
        protocol: RelayClientProtocol,
        *,
        tracking_id: str,
        options: WebSocketOptions,
        context: AcceptContext | None = None,
    ) -> None:
        self._protocol = protocol
        self._transport: Any = protocol.transport
        self.tracking_id = tracking_id
        self.subprotocol = protocol.subprotocol
        self.context = context
        self.request_headers = context.request_headers if context is not None else Headers()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.was_clean = False
        self._high_water = options.receive_buffer
        self._low_water = options.receive_buffer // 2
        self._messages: deque[tuple[Message, int]] = deque()
        self._queued_bytes = 0
        self._readers: deque[Deferred[Message | None]] = deque()
        self._reading_paused = False
        self._closing = False
        self._closed = False
        self._close_waiters: list[Deferred[None]] = []
        self._gate = WriteGate(ConnectionClosedError)
        protocol.registerProducer(self._gate, True)
        self._relay: FrameForwarder | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "closing" if self._closing else "open"
        return f"<HybridWebSocket {self.tracking_id} {state}>"

    @property
    def closed(self) -> bool:
        """Whether the connection has ended (messages already queued may still be read)."""
        return self._closed

    @property
    def queued_bytes(self) -> int:
        """Bytes of received messages the application has not read yet."""
        return self._queued_bytes

    @property
    def reading_paused(self) -> bool:
        """Whether the connection has stopped reading from the network because the queue is full."""
        return self._reading_paused

    @property
    def streaming(self) -> bool:
        """Whether this connection's messages are relayed to another as their frames come (L{relay_to})."""
        return self._relay is not None

    def pause_reading(self) -> None:
        """
        Stop reading from the network until L{relay_to} or L{close} (or a L{receive} of a queued message).

        For a connection to be relayed once its partner arrives: what it receives meanwhile waits in
        TCP's buffers instead of being assembled here. Messages already read are queued as usual.
        """
        if not self._reading_paused and not self._closing and not self._closed:
            self._reading_paused = True
            self._transport.pauseProducing()

    def relay_to(self, sink: HybridWebSocket) -> Deferred[None]:
        """
        Relay every message of this connection to C{sink} as its frames come, until this connection ends.

        Queued messages go first, whole. From then on nothing is assembled and no message size limit
        applies here (the sink's peer has its own): each piece read is written to C{sink} at once, and
        this connection stops reading while C{sink}'s write buffer is above its high-water mark. Text
        stays text and binary stays binary. Messages that arrive after L{close} are discarded, as are
        those C{sink} can no longer send. Nothing else may send on C{sink} meanwhile.

        @return: a L{Deferred} that fires once this connection has ended (see L{when_closed}).
        """
        relay = self._relay = FrameForwarder(sink._protocol, sink._gate, self._relay_hold)
        messages, self._messages, self._queued_bytes = self._messages, deque(), 0
        for message, _size in messages:
            binary = not isinstance(message, str)
            relay.whole(message if isinstance(message, bytes) else message.encode("utf-8"), binary)
        if not relay.holding:  # else it reads again once the sink has drained
            self._relay_hold(False)
        return self.when_closed()

    def _relay_hold(self, hold: bool) -> None:
        """Stop reading while the sink of L{relay_to} is full (not while closing: the close frame is behind)."""
        if hold:
            self.pause_reading()
        else:
            self._resume_reading()

    def message_begin(self, is_binary: bool) -> None:
        """A relayed message starts."""
        if self._relay is not None and not self._closing:
            self._relay.begin(is_binary)

    def message_data(self, payload: bytes) -> None:
        """A piece of a relayed message."""
        if self._relay is not None and not self._closing:
            self._relay.data(payload)

    def message_end(self) -> None:
        """A relayed message is complete."""
        if self._relay is not None and not self._closing:
            self._relay.end()

    def send(self, data: Message) -> Deferred[None]:
        """
        Send one message: text for C{str}, binary for C{bytes}.

        @return: a L{Deferred} that fires once the transport can take more data. Await it before the
            next send to respect back-pressure.
        @raise TypeError: for anything but C{str} or bytes-like data.
        """
        if isinstance(data, str):
            payload, binary = data.encode("utf-8"), False
        elif isinstance(data, bytes | bytearray | memoryview):
            payload, binary = bytes(data), True
        else:
            raise TypeError(f"can only send str or bytes, not {type(data).__name__}")
        if self._closing or self._closed:
            return fail(ConnectionClosedError(f"connection {self.tracking_id} is closed"))
        try:
            self._protocol.sendMessage(payload, isBinary=binary)
        except Disconnected:
            return fail(ConnectionClosedError(f"connection {self.tracking_id} is closed"))
        return self._gate.when_writable()

    def receive(self) -> Deferred[Message | None]:
        """
        The next message, or C{None} once the connection has closed and every queued message was read.

        Cancelling the returned L{Deferred} gives up the wait without losing a message.
        """
        if self._messages:
            message, size = self._messages.popleft()
            self._queued_bytes -= size
            self._maybe_resume_reading()
            return succeed(message)
        if self._closed:
            return succeed(None)
        reader: Deferred[Message | None] = Deferred(self._readers.remove)
        self._readers.append(reader)
        return reader

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            message = await self.receive()
            if message is None:
                return
            yield message

    def close(self, code: int = 1000, reason: str = "") -> Deferred[None]:
        """
        Start the closing handshake and fire once the connection is gone.

        Messages arriving after this call are discarded; ones already queued can still be read.

        @param code: a code an endpoint may send: 1000 (normal), 1001 (going away), 1002-1003,
            1007-1013, or an application code 3000-4999.
        @raise ValueError: for reserved codes (1004-1006, 1015) or a reason longer than 123 UTF-8 bytes.
        """
        if code not in SENDABLE_CLOSE_CODES and not 3000 <= code <= 4999:
            raise ValueError(f"close code {code} cannot be sent (reserved or undefined)")
        if len(reason.encode("utf-8")) > _MAX_REASON_BYTES:
            raise ValueError("close reason is longer than 123 bytes")
        if self._closed:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._close_waiters.append(waiter)
        if not self._closing:
            self._closing = True
            self.log.debug("closing {tracking_id} with {code}", tracking_id=self.tracking_id, code=code)
            self._resume_reading()  # the peer's close frame is behind the data we stopped reading
            # Autobahn's sendClose allows only 1000 and 3000-4999; 1001 (going away) and 1011 are
            # legitimate for an endpoint too, so the frame is sent directly.
            self._protocol.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8") or None, isReply=False)
        return waiter

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake."""
        if not self._closed:
            self._closing = True
            self._protocol.dropConnection(abort=True)

    def when_closed(self) -> Deferred[None]:
        """A L{Deferred} that fires when the connection has ended, however it ended."""
        if self._closed:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._close_waiters.append(waiter)
        return waiter

    def message_received(self, payload: bytes, is_binary: bool) -> None:
        """Queue a message for the application, pausing the network when the queue is full."""
        if self._closing:
            return
        if self._relay is not None:
            self._relay.whole(payload, is_binary)
            return
        message: Message = payload if is_binary else payload.decode("utf-8")
        if self._readers:
            self._readers.popleft().callback(message)
            return
        self._messages.append((message, len(payload)))
        self._queued_bytes += len(payload)
        if self._queued_bytes >= self._high_water and not self._reading_paused:
            self.log.debug(
                "pausing {tracking_id}: {queued} bytes unread",
                tracking_id=self.tracking_id,
                queued=self._queued_bytes,
            )
            self.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if self._reading_paused and not self._closed and self._queued_bytes <= self._low_water:
            self.log.debug(
                "resuming {tracking_id}: {queued} bytes unread",
                tracking_id=self.tracking_id,
                queued=self._queued_bytes,
            )
            self._resume_reading()

    def _resume_reading(self) -> None:
        """Read from the network again, if reading was stopped and the connection is still there."""
        if self._reading_paused and not self._closed:
            self._reading_paused = False
            self._transport.resumeProducing()

    def connection_closed(self, was_clean: bool, code: int | None, reason: str | None) -> None:
        """Record how the connection ended and release everyone waiting on it."""
        if self._closed:
            return
        self._closed = True
        self._reading_paused = False
        self.was_clean = was_clean
        if was_clean:
            self.close_code = code if code is not None else CLOSE_NO_STATUS
        else:
            self.close_code = CLOSE_ABNORMAL
        self.close_reason = reason
        self.log.info(
            "connection {tracking_id} closed with {code} (clean: {clean})",
            tracking_id=self.tracking_id,
            code=self.close_code,
            clean=was_clean,
        )
        self._gate.stop()
        readers, self._readers = self._readers, deque()
        for reader in readers:
            reader.callback(None)
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)
