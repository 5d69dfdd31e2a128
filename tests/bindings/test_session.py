"""Tests for L{bindings.session.ListenerSession}'s bound on concurrent handler calls, across reconnects."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bindings.control import Registration
from bindings.credentials import parse_address
from bindings.session import ListenerSession
from relay.writes import WriteGate


class Reading:
    """A transport that counts how often reading was paused and resumed."""

    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.resumed += 1


class Connection:
    """Stands in for the listener's C{SoapClientProtocol}."""

    STATE_OPEN, STATE_CLOSED = 1, 3

    def __init__(self) -> None:
        self.transport = Reading()
        self.state = self.STATE_OPEN
        self.sent: list[bytes] = []
        self.write_gate = WriteGate()

    def send_bytes(self, data: bytes) -> bool:
        self.sent.append(data)
        return True


class Hanging:
    """A service whose calls finish only when the test says so."""

    def __init__(self) -> None:
        self.calls: list[Deferred[Any]] = []

    def handle(self, envelope: object) -> Deferred[Any]:
        call: Deferred[Any] = Deferred()
        self.calls.append(call)
        return call


class Reply:
    """A reply envelope as the session sees it."""

    def to_bytes(self) -> bytes:
        return b"<reply/>"


class ConcurrencyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.handler = Hanging()
        self.session = ListenerSession(
            parse_address("ws://relay.test/rr"),
            Registration(kind="requestreply"),
            self.handler,
            None,
            Clock(),
            lambda address: None,
            max_concurrent=4,
        )

    def dispatch(self, connection: Connection, count: int) -> None:
        for _ in range(count):
            self.session._dispatch(connection, object())  # type: ignore[arg-type]

    def test_reading_pauses_at_the_limit_and_resumes_below_it(self) -> None:
        """The fourth running call pauses reading; the first to finish resumes it."""
        connection = Connection()
        self.dispatch(connection, 3)
        self.assertEqual(connection.transport.paused, 0)
        self.dispatch(connection, 1)
        self.assertEqual(connection.transport.paused, 1)
        self.handler.calls[0].callback(None)
        self.assertEqual(connection.transport.resumed, 1)

    def test_a_new_connection_is_held_while_the_old_ones_calls_run(self) -> None:
        """
        Calls still running from a dropped connection count against the limit on the one that replaced it.

        The pause used to stay with the session, not the connection: the new connection was never paused,
        and calls ran without a bound until the old ones finished.
        """
        old = Connection()
        self.dispatch(old, 4)
        self.assertEqual(old.transport.paused, 1)
        old.state = Connection.STATE_CLOSED
        self.session.connection_closed(old, 1006, "dropped")  # type: ignore[arg-type]
        new = Connection()
        self.dispatch(new, 100)
        self.assertEqual(new.transport.paused, 1)
        for call in self.handler.calls[:-3]:
            call.callback(None)
        self.assertEqual(new.transport.resumed, 1)
        self.assertEqual(old.transport.resumed, 0)

    def test_replies_the_gateway_does_not_read_hold_reading(self) -> None:
        """
        A call whose reply waits for a full socket buffer counts against the limit until the buffer drains.

        Replies used to be written and forgotten: a gateway that sent requests without reading the replies
        had every reply queued in the listener's write buffer, and reading was never paused.
        """
        connection = Connection()
        connection.write_gate.pauseProducing()  # the gateway stopped reading the replies
        self.dispatch(connection, 100)
        for call in self.handler.calls:
            call.callback(Reply())
        self.assertEqual(connection.transport.paused, 1)
        self.assertEqual(connection.transport.resumed, 0)
        connection.write_gate.resumeProducing()
        self.assertEqual(connection.transport.resumed, 1)
