"""
Multicast routing: each publish is copied to every subscriber registered when it is processed (spec 5.2).

Fan-out is synchronous: the payload is shared, not copied, and a name has at most 1,000 subscribers, so
one publish costs at most that many queue appends in one reactor turn. That is also what makes the
membership rule exact: subscribers added later see nothing earlier; removed ones see nothing more. A slow
subscriber whose queue overflows is disconnected and not counted; the publisher is never held back. The
copies still queued for a subscriber that is dropped or leaves are discarded: counted and logged.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from bindings.outlet import IListenerConnection, Outlet, RoutedMessage, short_id
from bindings.settings import BindingEntitySettings
from relay.logger import Logger
from relay.metrics import Cell


class MulticastRouter:
    """
    The subscribers of one C{multicast} name.

    @ivar trace: whether each publish is logged at debug level (see L{bindings.oneway.ListenerSet}).
    @ivar slow_disconnects: counts subscribers dropped because their queue overflowed (a metric).
    @ivar dropped_copies: counts copies queued for a subscriber that were discarded unsent because it was
        dropped or left (a metric; each such discard is logged too).
    """

    log = Logger()

    def __init__(
        self,
        entity: str,
        settings: BindingEntitySettings,
        clock: IReactorTime,
        *,
        trace: bool = False,
        slow_disconnects: Cell | None = None,
        dropped_copies: Cell | None = None,
    ) -> None:
        self.entity = entity
        self.trace = trace
        self.slow_disconnects = slow_disconnects if slow_disconnects is not None else Cell()
        self.dropped_copies = dropped_copies if dropped_copies is not None else Cell()
        self._settings = settings
        self._clock = clock
        self._outlets: dict[IListenerConnection, Outlet] = {}

    @property
    def subscribers(self) -> list[IListenerConnection]:
        """The current subscribers, oldest first."""
        return list(self._outlets)

    def subscribe(self, connection: IListenerConnection) -> Outlet:
        """Add a subscriber; the transport registers the returned outlet as its connection's producer."""
        outlet = Outlet(
            connection,
            clock=self._clock,
            entity=self.entity,
            max_bytes=self._settings.max_queue_bytes,
            max_messages=self._settings.max_queue_messages,
            send_timeout=self._settings.send_timeout,
            discarded=self.dropped_copies,
        )
        self._outlets[connection] = outlet
        return outlet

    def outlet(self, connection: IListenerConnection) -> Outlet | None:
        """A subscriber's outlet (for queue metrics)."""
        return self._outlets.get(connection)

    def unsubscribe(self, connection: IListenerConnection) -> None:
        """Remove a subscriber; copies it had not received yet are discarded with it."""
        outlet = self._outlets.pop(connection, None)
        if outlet is not None:
            outlet.stopProducing()

    def publish(self, message: RoutedMessage) -> Deferred[int]:
        """
        Copy a message to every current subscriber.

        @return: a Deferred firing with the number of subscribers that took a copy (0 is a success). It is
            a Deferred so that a multi-gateway router can add counts reported over the control bus.
        """
        count = 0
        for connection, outlet in list(self._outlets.items()):
            was_closed = outlet.closed
            try:
                taken = outlet.offer_or_drop(message)
            except Exception:  # one subscriber's failure is not the others'
                self.log.failure(
                    "a copy for subscriber {listener_id} failed", listener_id=connection.listener_id
                )
                continue
            if taken:
                count += 1
            elif outlet.closed:
                self._outlets.pop(connection, None)
                if not was_closed:  # it overflowed: dropped for being too slow
                    self.slow_disconnects.value += 1
            # else its socket is closing: no copy, not counted; it leaves the router with its close
        if not self.trace:
            return succeed(count)
        self.log.debug(
            "message {message_id} ({size} bytes) published on {entity} to {count} subscribers",
            message_id=short_id(message.message_id),
            size=message.size,
            entity=self.entity,
            count=count,
            tracking_id=message.tracking_id,
        )
        return succeed(count)
