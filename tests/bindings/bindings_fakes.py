"""Verified fakes of the interfaces the binding routers talk to."""

from __future__ import annotations

from zope.interface import implementer

from bindings.outlet import IListenerConnection, ISenderFlow, RoutedMessage


@implementer(IListenerConnection)
class FakeConnection:
    """A listener connection that records what was written and whether it was closed."""

    def __init__(self, listener_id: str) -> None:
        self.listener_id = listener_id
        self.sent: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    @property
    def accepting(self) -> bool:
        return self.closed is None

    def send_envelope(self, payload: bytes) -> bool:
        if self.closed is not None:  # as a socket that is closing
            return False
        self.sent.append(payload)
        return True

    def disconnect(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


@implementer(ISenderFlow)
class FakeFlow:
    """A sender whose reading is paused and resumed."""

    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    @property
    def reading(self) -> bool:
        return self.paused == self.resumed

    def pause_reading(self) -> None:
        self.paused += 1

    def resume_reading(self) -> None:
        self.resumed += 1


def message(n: int | str, size: int = 10, tracking_id: str = "T") -> RoutedMessage:
    """A routed message with id C{urn:m:n} whose payload is C{size} bytes starting with the id."""
    ident = f"urn:m:{n}"
    payload = ident.encode().ljust(size, b".")
    return RoutedMessage(payload, ident, tracking_id)
