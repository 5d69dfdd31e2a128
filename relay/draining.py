"""
Shutdown draining: wait for a set of open connections to empty, aborting stragglers after a deadline.

Both WebSocket factories (C{$hc} and C{$wcf}) send close frames at shutdown and then wait here, so
well-behaved peers finish their closing handshake while a silent one cannot hold the process up.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime


class ConnectionDrain:
    """
    Waiters on one set of open connections.

    @ivar connections: the set the owner adds its open protocols to; L{forget} takes them out.
    """

    def __init__(self, connections: set[Any], clock: IReactorTime) -> None:
        self.connections = connections
        self._clock = clock
        self._waiters: list[Deferred[None]] = []

    def forget(self, connection: Any) -> None:
        """A connection is gone; wake the waiters when it was the last."""
        self.connections.discard(connection)
        if not self.connections:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def wait(self, timeout: float) -> Deferred[None]:
        """Fire when every connection is gone; abort the ones still open after C{timeout} seconds."""
        waiting: Deferred[None] = Deferred()
        if not self.connections:
            waiting.callback(None)
            return waiting
        self._waiters.append(waiting)

        def abort() -> None:
            for connection in list(self.connections):
                transport: Any = connection.transport
                transport.abortConnection()

        call = self._clock.callLater(timeout, abort)

        def stop_timer(result: None) -> None:
            if call.active():
                call.cancel()
            return result

        return waiting.addBoth(stop_timer)
