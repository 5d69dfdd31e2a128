"""
One-way (unicast) routing: each message reaches exactly one live listener (spec 5.1).

The listener is picked per message by an injectable L{IListenerChooser} (uniform random in production,
fixed in tests). The sender learns of the hand-off when the envelope has been written to that listener's
connection; messages from one sender that land on one listener keep their order because each listener has
one FIFO L{Outlet}.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogLevel

from bindings.faultcodes import RelayFault, RelayFaultError
from bindings.outlet import IListenerConnection, ISenderFlow, Outlet, RoutedMessage, short_id
from bindings.settings import BindingEntitySettings
from relay.listeners import IListenerChooser
from relay.logbudget import LogBudget, emit_within
from relay.logger import Logger


@dataclass(frozen=True, slots=True)
class Delivered:
    """
    The outcome of a datagram: C{r:Delivered} for WebSocket senders, 202 for HTTP senders.

    @ivar count: how many listeners took a copy.
    @ivar listener_ids: who they were (for logs).
    """

    count: int
    listener_ids: tuple[str, ...] = ()


class ListenerSet:
    """
    The live listener connections of one name and their outlets, oldest first.

    Shared by the one-way and request/reply routers; quotas are enforced before a connection gets here
    (L{relay.listeners.ListenerRegistry} at the handshake).

    @ivar trace: whether the routers log a debug event for every message routed (refusals, faults and
        drops are always logged); off by default because the event costs more than routing the message.
    """

    def __init__(
        self, entity: str, settings: BindingEntitySettings, clock: IReactorTime, *, trace: bool = False
    ) -> None:
        self.entity = entity
        self.settings = settings
        self.clock = clock
        self.trace = trace
        self._outlets: dict[IListenerConnection, Outlet] = {}
        self._refusal_lines: LogBudget | None = None

    def log_refusal(self, log: Logger, message: RoutedMessage, why: str) -> None:
        """
        Log a message refused by routing, within the name's budget of such lines (L{log_line}).

        Senders cause refusals as fast as they send; the MessageID, the sender's own text, is shortened.
        """
        self.log_line(
            log,
            "message {message_id} for {entity} refused: {why}",
            message_id=short_id(message.message_id),
            why=why,
            tracking_id=message.tracking_id,
        )

    def log_line(self, log: Logger, format: str, **fields: object) -> None:
        """
        Log a line about one sender's message within the name's budget (L{LogBudget}: 20, then 10 a second).

        The next line let through says how many were left out. C{entity} is added to C{fields}.
        """
        if self._refusal_lines is None:
            self._refusal_lines = LogBudget(self.clock)
        self._refusal_lines.emit(log, LogLevel.info, format, entity=self.entity, **fields)

    def add(self, connection: IListenerConnection) -> Outlet:
        """Start routing to a connection; the transport registers the returned outlet as its producer."""
        outlet = Outlet(
            connection,
            clock=self.clock,
            entity=self.entity,
            max_bytes=self.settings.max_queue_bytes,
            max_messages=self.settings.max_queue_messages,
            send_timeout=self.settings.send_timeout,
        )
        self._outlets[connection] = outlet
        return outlet

    def remove(self, connection: IListenerConnection) -> Outlet | None:
        """Stop routing to a connection; messages not yet written to it fail with C{ListenerGone}."""
        outlet = self._outlets.pop(connection, None)
        if outlet is not None:
            outlet.close(RelayFault.LISTENER_GONE, "the listener left before the message was written")
        return outlet

    def outlet(self, connection: IListenerConnection) -> Outlet | None:
        """The outlet of a connection, if it is routed to."""
        return self._outlets.get(connection)

    @property
    def connections(self) -> list[IListenerConnection]:
        """The routed connections, oldest first."""
        return list(self._outlets)

    def candidates(self) -> list[IListenerConnection]:
        """
        The connections a message may be routed to: the open ones, or all of them when none is open.

        A listener whose socket is closing stays registered until the close handshake ends; a message
        routed to it fails with C{ListenerGone}, which is right only when no other listener could take it.
        """
        connections = list(self._outlets)
        if len(connections) < 2:
            return connections
        return [c for c in connections if c.accepting] or connections


class OneWayRouter:
    """Route datagrams of one C{oneway} name (or the one-way operations of a C{requestreply} name)."""

    log = Logger()

    def __init__(self, listeners: ListenerSet, chooser: IListenerChooser) -> None:
        self.listeners = listeners
        self._chooser = chooser

    def add_listener(self, connection: IListenerConnection) -> Outlet:
        """Start routing to a listener; returns its outlet for the transport to register as producer."""
        return self.listeners.add(connection)

    def remove_listener(self, connection: IListenerConnection) -> None:
        """Stop routing to a listener; datagrams not yet written to it fail with C{ListenerGone}."""
        self.listeners.remove(connection)

    def send(self, message: RoutedMessage, flow: ISenderFlow | None = None) -> Deferred[Delivered]:
        """
        Deliver a datagram to one listener.

        @return: a Deferred firing with L{Delivered} (count 1) once written, or failing with
            L{RelayFaultError}: C{NoListener}, C{ServerBusy}, C{ListenerGone}.
        """
        entity = self.listeners.entity
        candidates = self.listeners.candidates()
        if not candidates:
            self.listeners.log_refusal(self.log, message, "no listener")
            return fail(RelayFaultError(RelayFault.NO_LISTENER, "No listener is connected"))
        connection: IListenerConnection = (
            candidates[0] if len(candidates) == 1 else self._chooser.choose(candidates)  # type: ignore[assignment]
        )
        outlet = self.listeners.outlet(connection)
        if outlet is None:  # pragma: no cover - chosen from the same table
            return fail(RelayFaultError(RelayFault.NO_LISTENER, "No listener is connected"))
        listener_id = connection.listener_id
        if not self.listeners.trace:
            return outlet.offer(message, flow).addCallback(lambda _: Delivered(1, (listener_id,)))

        def delivered(_: None) -> Delivered:
            self.log.debug(
                "message {message_id} ({size} bytes) for {entity} delivered to {listener_id}",
                message_id=message.message_id,
                size=message.size,
                entity=entity,
                listener_id=listener_id,
                tracking_id=message.tracking_id,
            )
            return Delivered(1, (listener_id,))

        return outlet.offer(message, flow).addCallback(delivered)

    def unexpected_reply(
        self, connection: IListenerConnection, relates_to: str | None, lines: LogBudget | None = None
    ) -> None:
        """
        A one-way listener answered; spec 5.1.5 says log and drop.

        @param lines: the listener connection's budget of such lines, if it has one (a listener may send
            these as fast as it likes).
        """
        emit_within(
            lines,
            self.log,
            LogLevel.info,
            "dropped a reply from one-way listener {listener_id} of {entity} (RelatesTo {relates_to})",
            listener_id=connection.listener_id,
            entity=self.listeners.entity,
            relates_to=relates_to and short_id(relates_to),
        )
