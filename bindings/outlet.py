"""
The routers' side of a listener connection: a bounded outbound queue that is a push producer.

Routers never touch a transport. They talk to an L{IListenerConnection} (the transport's thin adapter:
write one envelope, close) through an L{Outlet}, which the transport registers as the push producer of the
listener's socket: when the socket's buffer fills, the outlet is paused and queues; when the queue is full
too, senders are held back (their L{ISenderFlow} is paused) for at most C{send_timeout} before they get
C{ServerBusy}, or, for multicast subscribers, the subscriber is dropped. Every queue has a bound, the
held-back messages too (as many messages and bytes as the queue holds; past that, C{ServerBusy} at once),
and every message that cannot be written fails its sender's Deferred (never a silent drop). A message is
withdrawn (its sender left) in constant time, however many are queued or held back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from zope.interface import Attribute, Interface, implementer

from bindings.faultcodes import RelayFault, RelayFaultError
from relay.logbudget import LogBudget
from relay.logger import Logger
from relay.metrics import Cell

_SHORT_ID: Final = 200
OVERFLOW_CLOSE_CODE = 1008
OVERFLOW_REASON = "subscriber queue overflow"


def short_id(message_id: str) -> str:
    """A MessageID as log lines show it: at most 200 characters (a sender chooses its length)."""
    return message_id if len(message_id) <= _SHORT_ID else message_id[:_SHORT_ID] + "..."


class IListenerConnection(Interface):
    """A listener or subscriber connection as the routers see it."""

    listener_id = Attribute("A short identifier for logs (never a token).")
    accepting = Attribute(
        "Whether it still takes messages: C{False} once its socket is closing (it stays registered until"
        " the close handshake ends, but the routers pass it over while another listener is open)."
    )

    def send_envelope(payload: bytes) -> bool:
        """
        Write one complete envelope (one WebSocket text message).

        @return: whether it was written; C{False} once the connection is closing (the envelope is not
            sent, and its sender must hear so).
        """

    def disconnect(code: int, reason: str) -> None:
        """Close the connection with a WebSocket close code and reason."""


class ISenderFlow(Interface):
    """The reading side of a sender, held back while the queue it feeds is full (spec section 5)."""

    def pause_reading() -> None:
        """Stop reading from the sender (WebSocket: pause the transport; HTTP: stop reading the body)."""

    def resume_reading() -> None:
        """Read from the sender again."""


@dataclass(frozen=True, slots=True)
class RoutedMessage:
    """
    An opaque envelope on its way to a listener, with what logs and correlation need.

    @ivar payload: the complete SOAP 1.2 envelope, UTF-8.
    @ivar message_id: its C{wsa:MessageID}.
    @ivar tracking_id: the gateway's tracking id for it.
    """

    payload: bytes = field(repr=False)
    message_id: str
    tracking_id: str

    @property
    def size(self) -> int:
        """The payload size in bytes."""
        return len(self.payload)


@dataclass(eq=False)
class _Item:
    message: RoutedMessage
    done: Deferred[None] | None
    flow: Any = None  # the sender it holds back, while it does
    timer: IDelayedCall | None = None


@implementer(IPushProducer)
class Outlet:
    """
    A bounded queue in front of one listener connection.

    @ivar connection: the listener connection it writes to.
    """

    log = Logger()

    def __init__(
        self,
        connection: IListenerConnection,
        *,
        clock: IReactorTime,
        entity: str,
        max_bytes: int,
        max_messages: int,
        send_timeout: float,
        discarded: Cell | None = None,
    ) -> None:
        """
        A queue in front of C{connection}.

        @param discarded: counts multicast copies queued for it that were dropped unsent when it closed.
        """
        self.connection = connection
        self._discarded = discarded
        self._clock = clock
        self._entity = entity
        self._max_bytes = max_bytes
        self._max_messages = max_messages
        self._send_timeout = send_timeout
        # Insertion-ordered and keyed by identity: FIFO, and a withdrawal is one lookup, not a scan.
        self._queue: OrderedDict[_Item, None] = OrderedDict()
        self._waiting: OrderedDict[_Item, None] = OrderedDict()
        self._queued_bytes = 0
        self._waiting_bytes = 0
        self._busy_lines: LogBudget | None = None  # made on the first refusal for a full held-back list
        self._paused = False
        self._closed = False
        self._sealed = False
        self._on_drained: list[Callable[[], None]] = []  # sealed: called once nothing is left to write

    @property
    def queued_bytes(self) -> int:
        """Bytes accepted but not yet written to the connection."""
        return self._queued_bytes

    @property
    def queued_messages(self) -> int:
        """Messages accepted but not yet written."""
        return len(self._queue)

    @property
    def closed(self) -> bool:
        """Whether the outlet was closed (its listener left or was dropped)."""
        return self._closed

    @property
    def sealed(self) -> bool:
        """Whether the listener is leaving (L{seal}): it takes nothing new, what it accepted is written."""
        return self._sealed

    def seal(self, on_drained: Callable[[], None]) -> None:
        """
        Take no more messages; call C{on_drained} once every message accepted before is written.

        A listener that leaves gracefully (C{r:Unregister}) is sent what was queued or held back for it,
        and nothing else: an offer from now on fails with C{ListenerGone} at once (a multicast copy is
        not taken). C{on_drained} is not called if the outlet is closed first (the listener left).
        """
        if self._closed:
            return
        self._sealed = True
        self._on_drained.append(on_drained)
        self._check_drained()

    def _check_drained(self) -> None:
        if self._sealed and not self._closed and not self._queue and not self._waiting:
            callbacks, self._on_drained = self._on_drained, []
            for callback in callbacks:
                callback()

    @property
    def waiting_senders(self) -> int:
        """Messages held back because the queue is full."""
        return len(self._waiting)

    def _room_for(self, message: RoutedMessage) -> bool:
        if not self._queue:
            return True  # one message always fits, even if larger than the byte bound
        return len(self._queue) < self._max_messages and self._queued_bytes + message.size <= self._max_bytes

    def _room_to_wait(self, message: RoutedMessage) -> bool:
        if not self._waiting:
            return True  # as for the queue: one message may always wait
        return (
            len(self._waiting) < self._max_messages and self._waiting_bytes + message.size <= self._max_bytes
        )

    def _first_waiting(self) -> _Item | None:
        return next(iter(self._waiting), None)

    def _write(self, item: _Item) -> bool:
        """Write a message; C{False} (and its sender told C{ListenerGone}) when the listener is closing."""
        written = self.connection.send_envelope(item.message.payload)
        if item.done is not None:
            if written:
                item.done.callback(None)
            else:
                item.done.errback(RelayFaultError(RelayFault.LISTENER_GONE, "the listener is closing"))
        return written

    def _enqueue(self, item: _Item) -> None:
        self._queue[item] = None
        self._queued_bytes += item.message.size

    def _hold_back(self, item: _Item) -> None:
        self._waiting[item] = None
        self._waiting_bytes += item.message.size

    def _unhold(self, item: _Item) -> bool:
        """Take an item off the held-back list; whether it was there."""
        if item not in self._waiting:
            return False
        del self._waiting[item]
        self._waiting_bytes -= item.message.size
        return True

    def offer(self, message: RoutedMessage, flow: ISenderFlow | None = None) -> Deferred[None]:
        """
        Hand a message to the listener, waiting for room up to C{send_timeout}.

        @return: a Deferred that fires when the envelope has been written to the connection, or fails with
            L{RelayFaultError} (C{ServerBusy} after the timeout, or at once when as many messages or bytes
            are held back as the queue holds; C{ListenerGone} if the listener leaves). Cancelling it
            withdraws the message.
        """
        if self._closed:
            return fail(RelayFaultError(RelayFault.LISTENER_GONE, "the listener has left"))
        if self._sealed:
            return fail(RelayFaultError(RelayFault.LISTENER_GONE, "the listener is leaving"))
        item = _Item(message, None)
        item.done = Deferred(lambda _d: self._withdraw(item))
        if not self._paused and not self._queue and not self._waiting:
            self._write(item)
        elif not self._waiting and self._room_for(message):
            self._enqueue(item)
        elif self._room_to_wait(message):
            item.timer = self._clock.callLater(self._send_timeout, self._expire, item)
            self._hold_back(item)
            if flow is not None:
                item.flow = flow  # released once, when it leaves the held-back list
                flow.pause_reading()
        else:
            self._refuse_busy(message)
            return fail(
                RelayFaultError(RelayFault.SERVER_BUSY, "too many messages are held back for the listener")
            )
        return item.done

    def _refuse_busy(self, message: RoutedMessage) -> None:
        """Log a refusal at the held-back bound, within a budget: senders cause them as fast as they send."""
        if self._busy_lines is None:
            self._busy_lines = LogBudget(self._clock)
        unlogged = self._busy_lines.allow()
        if unlogged is None:
            return
        self.log.info(
            "message {message_id} for {entity} refused: listener {listener_id} is busy"
            + (" ({unlogged} refusals before this one were not logged)" if unlogged else ""),
            message_id=short_id(message.message_id),
            entity=self._entity,
            listener_id=self.connection.listener_id,
            tracking_id=message.tracking_id,
            unlogged=unlogged,
        )

    def offer_or_drop(self, message: RoutedMessage) -> bool:
        """
        Hand a multicast copy to a subscriber without ever holding the publisher back.

        @return: whether the subscriber took the copy; on overflow the subscriber is disconnected with
            1008 "subscriber queue overflow" and this outlet is closed.
        """
        if self._closed or self._sealed:
            return False
        item = _Item(message, None)
        if not self._paused and not self._queue:
            return self._write(item)  # a closing subscriber is not counted
        if self._room_for(message):
            self._enqueue(item)
            return True
        self.log.warn(
            "subscriber {listener_id} of {entity} dropped: queue overflow at message {message_id}",
            listener_id=self.connection.listener_id,
            entity=self._entity,
            message_id=short_id(message.message_id),
            tracking_id=message.tracking_id,
            queued_bytes=self._queued_bytes,
        )
        self.close(RelayFault.LISTENER_GONE, "the subscriber was too slow")
        self.connection.disconnect(OVERFLOW_CLOSE_CODE, OVERFLOW_REASON)
        return False

    def _withdraw(self, item: _Item) -> None:
        if item in self._queue:
            del self._queue[item]
            self._queued_bytes -= item.message.size
        elif self._unhold(item):
            self._release(item)
        self._pump()  # the room it leaves lets held-back senders in

    def _release(self, item: _Item) -> None:
        if item.timer is not None and item.timer.active():
            item.timer.cancel()
        item.timer = None
        flow, item.flow = item.flow, None  # a queued message never held its sender; a let-in one no more
        if flow is not None:
            flow.resume_reading()

    def _expire(self, item: _Item) -> None:
        item.timer = None
        if self._unhold(item):
            self._release(item)
            self.log.info(
                "message {message_id} for {entity} refused: listener {listener_id} is busy",
                message_id=short_id(item.message.message_id),
                entity=self._entity,
                listener_id=self.connection.listener_id,
                tracking_id=item.message.tracking_id,
            )
            if item.done is not None:
                item.done.errback(RelayFaultError(RelayFault.SERVER_BUSY, "the listener's queue stayed full"))
            self._pump()  # a smaller message behind it may fit

    def _pump(self) -> None:
        """Write what is queued, let held-back senders in as room appears; a sealed outlet may be drained."""
        self._write_queued()
        self._check_drained()

    def _write_queued(self) -> None:
        while not self._closed:
            while not self._paused and self._queue:
                item, _ = self._queue.popitem(last=False)
                self._queued_bytes -= item.message.size
                self._write(item)
            first = self._first_waiting()
            if first is None or not self._room_for(first.message):
                return
            while first is not None and self._room_for(first.message):
                self._unhold(first)
                self._release(first)
                self._enqueue(first)
                first = self._first_waiting()
            if self._paused:
                return

    def pauseProducing(self) -> None:
        """The connection's buffer is full: queue from now on."""
        self._paused = True

    def resumeProducing(self) -> None:
        """The connection drained: write what is queued and let held-back senders in."""
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        """The connection is gone."""
        self.close(RelayFault.LISTENER_GONE, "the listener has left")

    def close(self, kind: RelayFault, message: str) -> None:
        """Fail everything not yet written with C{kind}; later offers fail at once."""
        if self._closed:
            return
        self._closed = True
        self._on_drained = []
        if self._busy_lines is not None and self._busy_lines.held:
            self.log.info(
                "{unlogged} more refusals for {entity} on listener {listener_id} were not logged",
                unlogged=self._busy_lines.held,
                entity=self._entity,
                listener_id=self.connection.listener_id,
            )
        pending = [*self._queue, *self._waiting]
        self._queue.clear()
        self._waiting.clear()
        self._queued_bytes = self._waiting_bytes = 0
        copies = sum(1 for item in pending if item.done is None)
        # Multicast copies: their publisher was told they were taken, and nobody else waits on them.
        if copies:
            if self._discarded is not None:
                self._discarded.value += copies
            self.log.info(
                "{copies} copies queued for subscriber {listener_id} of {entity} were discarded unsent: {why}",
                copies=copies,
                listener_id=self.connection.listener_id,
                entity=self._entity,
                why=message,
            )
        for item in pending:
            self._release(item)
            if item.done is not None:
                item.done.errback(RelayFaultError(kind, message))


OutletFactory = Callable[[IListenerConnection], Outlet]
