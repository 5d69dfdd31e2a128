"""Tests for L{bindings.session.ListenerSession}: its bound on concurrent handler calls, its connections."""

from __future__ import annotations

from typing import Any

from lxml import etree
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bindings.addressing import addressing_headers
from bindings.control import Registered, Registration, registered_envelope
from bindings.credentials import parse_address
from bindings.session import ListenerSession
from bindings.soap import Envelope, SoapVersion
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
        self.closed: tuple[int, str] | None = None
        self.write_gate = WriteGate()

    def send_bytes(self, data: bytes) -> bool:
        self.sent.append(data)
        return True

    def close_with(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


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


def request_reply_session(handler: Hanging, **options: Any) -> ListenerSession:
    """A session of a request-reply listener at C{ws://relay.test/rr} calling C{handler}, not yet open."""
    return ListenerSession(
        parse_address("ws://relay.test/rr"),
        Registration(kind="requestreply"),
        handler,
        None,
        Clock(),
        lambda address: None,
        **options,
    )


class ConcurrencyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.handler = Hanging()
        self.session = request_reply_session(self.handler, max_concurrent=4)

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


class StaleConnectionTests(SynchronousTestCase):
    """A connection closed by close() while open() has started another one."""

    def setUp(self) -> None:
        self.handler = Hanging()
        self.session = request_reply_session(self.handler)
        self.stale, self.current = Connection(), Connection()
        self.session._protocol = self.stale  # type: ignore[assignment]
        self.closing = self.session.close()
        self.session._running = True  # open() again: the new connection is registering
        self.session._protocol = self.current  # type: ignore[assignment]
        self.session._register_id = "urn:uuid:register"

    def test_its_close_leaves_the_new_registration_alone(self) -> None:
        """Its loss fires close()'s Deferred, and neither resets the registration under way nor retries."""
        self.session.connection_closed(self.stale, 1000, "listener closing")  # type: ignore[arg-type]
        self.successResultOf(self.closing)
        self.assertEqual(
            (self.session._protocol, self.session._register_id, self.session._retry),
            (self.current, "urn:uuid:register", None),
        )

    def test_its_deliveries_are_served_and_its_answers_ignored(self) -> None:
        """
        A request on it is served (the gateway counted it delivered); an answer on it is no registration answer.

        Before, while the new connection registered, the request was taken for the registration's
        answer and dropped.
        """
        request = Envelope(
            SoapVersion.SOAP12,
            addressing_headers(action="urn:a", message_id="urn:uuid:1", reply_to_anonymous=True),
            (etree.Element("{urn:x}A"),),
        )
        self.session.envelope_received(self.stale, request.to_bytes())  # type: ignore[arg-type]
        self.assertEqual(len(self.handler.calls), 1)
        answer = registered_envelope(
            Registered("https://relay.test/rr", "rr", "requestreply"), "urn:uuid:register"
        )
        self.session.envelope_received(self.stale, answer.to_bytes())  # type: ignore[arg-type]
        self.assertEqual((self.session._register_id, self.session.registered), ("urn:uuid:register", None))
