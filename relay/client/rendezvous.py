"""
The listener's side of a rendezvous: accepting or rejecting at the accept address.

Also the bounded queue in which accepted connections wait until the application takes them.
"""

from __future__ import annotations

from collections import deque
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred, succeed

from relay.client.accepting import AcceptContext, Reject
from relay.client.address import reject_url
from relay.client.commands import AcceptCommand
from relay.client.connection import HybridWebSocket
from relay.client.errors import ConnectError
from relay.client.options import WebSocketOptions
from relay.client.protocol import RelayClientProtocol, open_websocket
from relay.logger import Logger

REJECT_DELIVERED = 410
"""The relay's answer to a reject upgrade when it passed the rejection on to the sender."""

log = Logger(namespace="relay.client.rendezvous")


async def accept_sender(
    reactor: Any,
    command: AcceptCommand,
    context: AcceptContext,
    subprotocol: str | None,
    options: WebSocketOptions,
) -> HybridWebSocket | None:
    """
    Upgrade to the accept address, offering C{subprotocol}; C{None} (logged) when that fails.

    A failure here is no error of the listener: the sender may have given up or the address expired
    (403), and the sender learns from the relay. So it is logged, not raised.
    """

    def make_connection(protocol: RelayClientProtocol) -> HybridWebSocket:
        return HybridWebSocket(protocol, tracking_id=context.connection_id, options=options, context=context)

    try:
        connection = await open_websocket(
            reactor,
            command.address,
            options=options,
            make_receiver=make_connection,
            subprotocols=[subprotocol] if subprotocol else [],
        )
    except CancelledError:
        raise
    except Exception as e:
        log.warn(
            "rendezvous for {connection_id} failed: {error}",
            connection_id=context.connection_id,
            error=str(e),
        )
        return None
    log.info("accepted {connection_id}", connection_id=context.connection_id)
    return cast(HybridWebSocket, connection)


async def reject_sender(
    reactor: Any, command: AcceptCommand, context: AcceptContext, reject: Reject, options: WebSocketOptions
) -> bool:
    """
    Reject the sender through the accept address.

    @return: whether the relay confirmed the rejection with 410; anything else is logged.
    """
    log.info(
        "rejecting {connection_id} with {status}",
        connection_id=context.connection_id,
        status=reject.status_code,
    )
    url = reject_url(command.address, reject.status_code, reject.description)

    def make_connection(protocol: RelayClientProtocol) -> HybridWebSocket:
        return HybridWebSocket(protocol, tracking_id=context.connection_id, options=options)

    try:
        unexpected = await open_websocket(reactor, url, options=options, make_receiver=make_connection)
    except ConnectError as e:
        if e.status_code == REJECT_DELIVERED:
            return True
        log.warn(
            "rejecting {connection_id} got {error} instead of 410",
            connection_id=context.connection_id,
            error=str(e),
        )
        return False
    except CancelledError:
        raise
    except Exception as e:
        log.warn(
            "rejecting {connection_id} failed: {error}", connection_id=context.connection_id, error=str(e)
        )
        return False
    log.warn("the relay opened a reject address for {connection_id}", connection_id=context.connection_id)
    cast(HybridWebSocket, unexpected).abort()
    return False


class AcceptQueue:
    """
    Accepted connections waiting to be taken, and the callers waiting to take them.

    The bound counts queued connections plus rendezvous still being set up, minus callers already
    waiting; the listener rejects senders (503) instead of exceeding it.

    @ivar in_flight: senders being decided about or dialled right now.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._ready: deque[HybridWebSocket] = deque()
        self._waiters: deque[Deferred[HybridWebSocket | None]] = deque()
        self._shut = False
        self.in_flight = 0

    def __len__(self) -> int:
        return len(self._ready)

    def has_room(self) -> bool:
        """Whether one more sender may be accepted."""
        return len(self._ready) + self.in_flight < self._limit + len(self._waiters)

    def put(self, connection: HybridWebSocket) -> None:
        """Hand a connection to the longest waiting caller, or queue it."""
        if self._waiters:
            self._waiters.popleft().callback(connection)
        else:
            self._ready.append(connection)

    def get(self) -> Deferred[HybridWebSocket | None]:
        """The next connection; C{None} when the queue is empty and shut."""
        if self._ready:
            return succeed(self._ready.popleft())
        if self._shut:
            return succeed(None)
        waiter: Deferred[HybridWebSocket | None] = Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        return waiter

    def shut(self) -> None:
        """No more connections will come: waiting callers get C{None}; queued ones can still be taken."""
        self._shut = True
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            waiter.callback(None)

    def drain(self) -> list[HybridWebSocket]:
        """Remove and return every queued connection."""
        ready, self._ready = list(self._ready), deque()
        return ready
