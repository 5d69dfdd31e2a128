"""Verified fakes for the seams routing talks to (each has a C{verifyObject} test)."""

from __future__ import annotations

from zope.interface import implementer

from relay.hybrid.rendezvous import Ticket
from relay.hybrid.router import IListenerChannel


@implementer(IListenerChannel)
class FakeListenerChannel:
    """A control channel that records what it is sent and can be told to refuse."""

    def __init__(self, listener_id: str, accepts: bool = True) -> None:
        self.listener_id = listener_id
        self.closing = False
        self.keeps_rendezvous = True
        self.accepts = accepts
        self.sent: list[bytes] = []
        self.pending: list[Ticket] = []

    def send_control(self, payload: bytes) -> bool:
        """Record the message unless told to refuse."""
        if not self.accepts:
            return False
        self.sent.append(payload)
        return True

    def send_request(self, payload: bytes, body: bytes) -> bool:
        """Record the request and its body (if any) unless told to refuse."""
        if not self.accepts:
            return False
        self.sent.extend((payload, body) if body else (payload,))
        return True

    def add_pending(self, ticket: Ticket) -> None:
        """Remember the ticket."""
        self.pending.append(ticket)
