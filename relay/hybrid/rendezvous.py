"""
One-time rendezvous addresses: a sender waits while its listener is asked to come and meet it.

Each pending sender gets a L{Ticket} with a secret key (part of the address), a deadline, and a Deferred
that fires with the listener's answer. A key is claimable exactly once; after a claim, timeout, rejection
or cancellation it is gone and any later use is refused (403).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from relay.entropy import random16
from relay.errors import ErrorKind, RelayError
from relay.logger import Logger


def new_key() -> str:
    """An unguessable rendezvous key (128 random bits from the kernel's CSPRNG, URL-safe)."""
    return random16().hex()


@dataclass(eq=False)
class Ticket:
    """
    A sender waiting for its listener.

    @ivar key: the secret in the rendezvous address.
    @ivar connection_id: the tracking id shown to both parties.
    @ivar outcome: fires with what the listener side hands over, or fails with a L{RelayError}.
    @ivar context: whatever the sender side needs to remember (offered subprotocols, headers).
    @ivar lapse_note: for an address nobody waits on any more, what the debug line says when it lapses
        unclaimed (a format with C{connection_id} and C{timeout}); C{None}: an info line that no listener
        came.
    """

    key: str
    connection_id: str
    outcome: Deferred[Any] = field(default_factory=Deferred)
    context: Any = None
    _timer: IDelayedCall | None = None
    _on_done: list[Callable[[Ticket], None]] = field(default_factory=list)
    done: bool = False
    lapse_note: str | None = None

    def when_done(self, callback: Callable[[Ticket], None]) -> None:
        """Call C{callback} once when the ticket is claimed, fails or is cancelled."""
        self._on_done.append(callback)

    def _finish(self) -> None:
        self.done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        callbacks, self._on_done = self._on_done, []
        for callback in callbacks:
            callback(self)


class RendezvousTable:
    """
    Pending rendezvous tickets by key, each with a deadline.

    @ivar timeout: seconds a ticket stays claimable.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, timeout: float = 30.0) -> None:
        self._clock = clock
        self.timeout = timeout
        self._tickets: dict[str, Ticket] = {}

    def __len__(self) -> int:
        return len(self._tickets)

    def open(
        self,
        connection_id: str,
        context: Any = None,
        key: str | None = None,
        timeout: float | None = None,
        *,
        lapse_note: str | None = None,
        told_window: float | None = None,
    ) -> Ticket:
        """
        Create a ticket that fails with 504 unless claimed within the timeout.

        @param timeout: seconds the ticket stays claimable, when not the table's default (the response
            address of an HTTP request is good for as long as the request waits for its response).
        @param lapse_note: its L{Ticket.lapse_note}.
        @param told_window: the window its lapse line names, when not C{timeout} (an address opened for
            what is left of a window that began earlier).
        """
        ticket = Ticket(key=key or new_key(), connection_id=connection_id, context=context)
        ticket.lapse_note = lapse_note
        if ticket.key in self._tickets:
            raise ValueError("rendezvous key collision")
        self._tickets[ticket.key] = ticket
        window = self.timeout if timeout is None else timeout
        told = window if told_window is None else told_window
        ticket._timer = self._clock.callLater(window, self._expire, ticket, told)
        return ticket

    def claim(self, key: str, context: type | None = None) -> Ticket | None:
        """
        Take a ticket out of the table; C{None} when the key is unknown, used or expired.

        @param context: the type of context the claimer can serve (a sender's or an HTTP request's); a
            ticket with another context is left in the table and C{None} returned.
        """
        ticket = self._tickets.get(key)
        if ticket is None or (context is not None and not isinstance(ticket.context, context)):
            return None
        del self._tickets[key]
        ticket._finish()
        return ticket

    def fail(self, ticket: Ticket, error: RelayError) -> None:
        """Withdraw a pending ticket and fail its sender."""
        if self._tickets.get(ticket.key) is ticket:
            del self._tickets[ticket.key]
            ticket._finish()
            ticket.outcome.errback(error)

    def cancel(self, ticket: Ticket) -> None:
        """Withdraw a pending ticket without telling anyone (the sender went away)."""
        if self._tickets.get(ticket.key) is ticket:
            del self._tickets[ticket.key]
            ticket._finish()

    def _expire(self, ticket: Ticket, window: float) -> None:
        ticket._timer = None
        if self._tickets.get(ticket.key) is ticket:
            if ticket.lapse_note is None:
                self.log.info(
                    "rendezvous {connection_id} expired: no listener came within {timeout:g}s",
                    connection_id=ticket.connection_id,
                    timeout=window,
                )
            else:  # nobody waits on it: its sender's failure or departure was logged already
                self.log.debug(ticket.lapse_note, connection_id=ticket.connection_id, timeout=window)
            self.fail(
                ticket,
                RelayError(
                    ErrorKind.LISTENER_TIMEOUT,
                    f"No listener accepted the connection within {window:g}s",
                ),
            )

    def fail_all(self, error: RelayError, which: Callable[[Ticket], bool] = lambda ticket: True) -> None:
        """Fail every pending ticket (shutdown), or those C{which} picks (a drain: waiting senders)."""
        for ticket in list(self._tickets.values()):
            if which(ticket):
                self.fail(ticket, error)
