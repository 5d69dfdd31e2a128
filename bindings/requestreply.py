"""
Request/reply routing: correlation of replies to callers, timeouts, and listener loss (spec 5.3).

A request goes to one live listener (injectable chooser) under C{request_timeout}; the entry
(listener connection, MessageID) -> caller is forgotten when the reply, a timeout or the listener's
departure settles it. Requests are never retried on another listener (at-most-once). Replies that match
nothing (late, unknown, duplicate) are logged and dropped. One-way operations of the contract go through
the one-way path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from bindings.faultcodes import RelayFault, RelayFaultError
from bindings.oneway import Delivered, ListenerSet, OneWayRouter
from bindings.outlet import IListenerConnection, ISenderFlow, Outlet, RoutedMessage, short_id
from relay.listeners import IListenerChooser
from relay.logbudget import LogBudget, emit_within
from relay.logger import Logger


@dataclass(frozen=True, slots=True)
class Reply:
    """
    A listener's answer (a normal reply or a fault envelope), to forward to the caller.

    @ivar payload: the SOAP 1.2 envelope from the listener.
    @ivar listener_id: who answered.
    """

    payload: bytes = field(repr=False)
    listener_id: str


@dataclass(eq=False, slots=True)
class _Pending:
    """
    A request awaiting its reply: what logs and settling need, never the envelope.

    The outlet holds the L{RoutedMessage} until it is written; the entry keeps only its ids, so the
    payload is freed once written rather than held until the reply (C{max_in_flight} times the message
    limit per listener).
    """

    message_id: str
    tracking_id: str
    connection: IListenerConnection
    caller: Deferred[Reply]
    timer: IDelayedCall | None = None
    written: Deferred[None] | None = None


class RequestReplyRouter:
    """Route the requests of one C{requestreply} name and correlate the replies."""

    log = Logger()

    def __init__(self, listeners: ListenerSet, chooser: IListenerChooser) -> None:
        self.listeners = listeners
        self._chooser = chooser
        self._oneway = OneWayRouter(listeners, chooser)
        self._pending: dict[tuple[IListenerConnection, str], _Pending] = {}
        self._by_listener: dict[IListenerConnection, set[str]] = {}

    def in_flight(self, connection: IListenerConnection | None = None) -> int:
        """Requests awaiting a reply, on one listener or on the whole name."""
        if connection is None:
            return len(self._pending)
        return len(self._by_listener.get(connection, ()))

    def add_listener(self, connection: IListenerConnection) -> Outlet:
        """Start routing to a listener; returns its outlet for the transport to register as producer."""
        return self.listeners.add(connection)

    def remove_listener(self, connection: IListenerConnection) -> None:
        """A listener left: every request pending on it fails with C{ListenerGone} (no retry)."""
        self.listeners.remove(connection)
        for message_id in sorted(self._by_listener.pop(connection, set())):
            pending = self._pending.pop((connection, message_id), None)
            if pending is not None:
                self._settle(
                    pending, RelayFaultError(RelayFault.LISTENER_GONE, "The listener left mid-request")
                )

    def send_one_way(self, message: RoutedMessage, flow: ISenderFlow | None = None) -> Deferred[Delivered]:
        """Deliver a one-way operation of the contract as a datagram (spec 5.3.6)."""
        return self._oneway.send(message, flow)

    def request(self, message: RoutedMessage, flow: ISenderFlow | None = None) -> Deferred[Reply]:
        """
        Send a request to one listener and wait for its reply.

        @return: a Deferred firing with the L{Reply}, or failing with L{RelayFaultError}: C{NoListener},
            C{ServerBusy} (every listener at its in-flight cap, or its queue full past C{send_timeout}),
            C{DuplicateMessageId}, C{Timeout}, C{ListenerGone}. Cancelling it (the caller went away)
            forgets the request; a later reply is dropped.
        """
        entity = self.listeners.entity
        connections = self.listeners.candidates()
        if not connections:
            self._refused(message, "no listener")
            return fail(RelayFaultError(RelayFault.NO_LISTENER, "No listener is connected"))
        cap = self.listeners.settings.max_in_flight
        available = [c for c in connections if self.in_flight(c) < cap]
        if not available:
            self._refused(message, "every listener is at its in-flight limit")
            return fail(
                RelayFaultError(RelayFault.SERVER_BUSY, "Every listener has too many requests in flight")
            )
        connection: IListenerConnection = (
            available[0] if len(available) == 1 else self._chooser.choose(available)  # type: ignore[assignment]
        )
        key = (connection, message.message_id)
        if key in self._pending:
            self._refused(message, "duplicate MessageID")
            return fail(
                RelayFaultError(RelayFault.DUPLICATE_MESSAGE_ID, "A request with this MessageID is in flight")
            )
        outlet = self.listeners.outlet(connection)
        if outlet is None:  # pragma: no cover - chosen from the same table
            return fail(RelayFaultError(RelayFault.NO_LISTENER, "No listener is connected"))
        caller: Deferred[Reply] = Deferred(lambda _d: self._cancel(key))
        pending = _Pending(message.message_id, message.tracking_id, connection, caller)
        self._pending[key] = pending
        self._by_listener.setdefault(connection, set()).add(message.message_id)
        pending.timer = self.listeners.clock.callLater(
            self.listeners.settings.request_timeout, self._timeout, key
        )
        pending.written = outlet.offer(message, flow)
        pending.written.addErrback(self._not_written, key)
        if not self.listeners.trace:
            return caller
        self.log.debug(
            "request {message_id} ({size} bytes) for {entity} routed to {listener_id}",
            message_id=short_id(message.message_id),
            size=message.size,
            entity=entity,
            listener_id=connection.listener_id,
            tracking_id=message.tracking_id,
        )
        return caller

    def reply(
        self,
        connection: IListenerConnection,
        relates_to: str | None,
        payload: bytes,
        lines: LogBudget | None = None,
    ) -> bool:
        """
        Hand a listener's reply to the caller waiting for it.

        @param lines: the listener connection's budget of lines about replies that match nothing, if it
            has one (a listener may send these as fast as it likes).
        @return: whether a caller was waiting; a reply that matches nothing is logged and dropped.
        """
        pending = self._pop((connection, relates_to)) if relates_to is not None else None
        if pending is None:
            emit_within(
                lines,
                self.log,
                LogLevel.info,
                "dropped a reply from {listener_id} of {entity}: nothing waits for RelatesTo {relates_to}",
                listener_id=connection.listener_id,
                entity=self.listeners.entity,
                relates_to=relates_to and short_id(relates_to),
            )
            return False
        self._stop_timer(pending)
        pending.caller.callback(Reply(payload, connection.listener_id))
        return True

    def _pop(self, key: tuple[IListenerConnection, str]) -> _Pending | None:
        pending = self._pending.pop(key, None)
        if pending is not None:
            ids = self._by_listener.get(key[0])
            if ids is not None:
                ids.discard(key[1])
                if not ids:
                    del self._by_listener[key[0]]
        return pending

    def _stop_timer(self, pending: _Pending) -> None:
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        pending.timer = None

    def _settle(self, pending: _Pending, error: RelayFaultError) -> None:
        self._stop_timer(pending)
        if pending.written is not None and not pending.written.called:
            pending.written.cancel()
        self.log.info(
            "request {message_id} for {entity} failed: {subcode}",
            message_id=short_id(pending.message_id),
            entity=self.listeners.entity,
            subcode=error.kind.subcode_name,
            listener_id=pending.connection.listener_id,
            tracking_id=pending.tracking_id,
        )
        pending.caller.errback(error)

    def _timeout(self, key: tuple[IListenerConnection, str]) -> None:
        pending = self._pop(key)
        if pending is not None:
            pending.timer = None
            self._settle(pending, RelayFaultError(RelayFault.TIMEOUT, "The listener did not reply in time"))

    def _not_written(self, failure: Failure, key: tuple[IListenerConnection, str]) -> None:
        if failure.check(CancelledError):
            return None
        pending = self._pop(key)
        if pending is not None:
            error = failure.value
            if not isinstance(error, RelayFaultError):  # pragma: no cover - outlets only fail with these
                error = RelayFaultError(RelayFault.LISTENER_GONE, "The message could not be written")
            self._settle(pending, error)
        return None

    def _cancel(self, key: tuple[IListenerConnection, str]) -> None:
        pending = self._pop(key)
        if pending is not None:
            self._stop_timer(pending)
            if pending.written is not None and not pending.written.called:
                pending.written.cancel()
            self.listeners.log_line(  # a sender that leaves abandons all it sent: within a budget
                self.log,
                "request {message_id} for {entity} abandoned by its caller",
                message_id=short_id(pending.message_id),
                tracking_id=pending.tracking_id,
            )

    def _refused(self, message: RoutedMessage, why: str) -> None:
        self.listeners.log_refusal(self.log, message, why)
