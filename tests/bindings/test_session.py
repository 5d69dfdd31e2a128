"""Tests for L{bindings.session.ListenerSession}: its bound on concurrent handler calls, its connections."""

from __future__ import annotations

from typing import Any

from lxml import etree
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bindings.addressing import addressing_headers, read_addressing
from bindings.control import (
    ACTION_UNREGISTER,
    Registered,
    Registration,
    registered_envelope,
    unregistered_envelope,
)
from bindings.credentials import parse_address
from bindings.faultcodes import RelayFault
from bindings.faults import gateway_fault
from bindings.session import ListenerSession
from bindings.soap import Envelope, SoapVersion, parse_envelope
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


def _request(number: int) -> bytes:
    return Envelope(
        SoapVersion.SOAP12,
        addressing_headers(action="urn:a", message_id=f"urn:uuid:{number}", reply_to_anonymous=True),
        (etree.Element("{urn:x}A"),),
    ).to_bytes()


class LeavingTests(SynchronousTestCase):
    """close(): r:Unregister, serve what came before the gateway's r:Unregistered, then close."""

    def setUp(self) -> None:
        self.handler = Hanging()
        self.session = request_reply_session(self.handler, close_timeout=5.0)
        self.clock: Clock = self.session.clock  # type: ignore[assignment]
        self.connection = Connection()
        self.session._protocol = self.connection  # type: ignore[assignment]
        self.session._running = True
        self.session.registered = Registered("https://relay.test/rr", "rr", "requestreply")

    def receive(self, payload: bytes) -> None:
        self.session.envelope_received(self.connection, payload)  # type: ignore[arg-type]

    def unregister_id(self) -> str:
        envelope = parse_envelope(self.connection.sent[-1], SoapVersion.SOAP12)
        headers = read_addressing(envelope)
        self.assertEqual(headers.action, ACTION_UNREGISTER)
        assert headers.message_id is not None
        return headers.message_id

    def test_calls_in_progress_finish_before_the_close(self) -> None:
        """Calls running, and one that came before the fence, end with their replies sent; then it closes."""
        self.receive(_request(1))
        self.receive(_request(2))
        closed = self.session.close()
        fence = self.unregister_id()
        self.receive(_request(3))  # written by the gateway before it read r:Unregister: served
        self.receive(unregistered_envelope(fence).to_bytes())
        self.assertEqual((len(self.handler.calls), self.connection.closed), (3, None))
        for call in self.handler.calls:
            self.assertIsNone(self.connection.closed)
            call.callback(Reply())
        self.assertEqual(self.connection.sent[-3:], [b"<reply/>"] * 3)
        self.assertEqual(self.connection.closed, (1000, "listener closing"))
        self.assertNoResult(closed)
        self.session.connection_closed(self.connection, 1000, "listener closing")  # type: ignore[arg-type]
        self.successResultOf(closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_calls_ended_before_the_fence(self) -> None:
        """With nothing running it still waits for the fence: requests may be on their way."""
        self.session.close()
        fence = self.unregister_id()
        self.clock.advance(4)
        self.assertIsNone(self.connection.closed)
        self.receive(unregistered_envelope(fence).to_bytes())
        self.assertEqual(self.connection.closed, (1000, "listener closing"))

    def test_close_timeout(self) -> None:
        """A call still running at the close timeout is cut off: it closes anyway."""
        self.receive(_request(1))
        self.session.close()
        self.receive(unregistered_envelope(self.unregister_id()).to_bytes())
        self.clock.advance(4.9)
        self.assertIsNone(self.connection.closed)
        self.clock.advance(0.1)
        self.assertEqual(self.connection.closed, (1000, "close timeout; calls still running"))
        self.handler.calls[0].callback(Reply())  # too late: nothing more happens
        self.assertEqual(self.connection.closed, (1000, "close timeout; calls still running"))

    def test_a_gateway_that_refuses_unregister(self) -> None:
        """A fault in answer (a gateway without r:Unregister) is taken as the fence."""
        self.session.close()
        fault = gateway_fault(
            RelayFault.ACTION_NOT_SUPPORTED,
            SoapVersion.SOAP12,
            path="rr",
            tracking_id="t",
            relates_to=self.unregister_id(),
        )
        self.receive(fault.to_bytes())
        self.assertEqual(self.connection.closed, (1000, "listener closing"))

    def test_abort_and_close_zero_close_at_once(self) -> None:
        """abort(), or close(0), sends no r:Unregister and closes at once, calls running or not."""
        self.receive(_request(1))
        self.session.abort()
        self.assertEqual(self.connection.sent, [])
        self.assertEqual(self.connection.closed, (1000, "listener closing"))

    def test_abort_while_leaving(self) -> None:
        """An abort during a graceful close closes at once; both Deferreds fire when the socket is gone."""
        self.receive(_request(1))
        first = self.session.close()
        self.unregister_id()
        second = self.session.abort()
        self.assertEqual(self.connection.closed, (1000, "listener closing"))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.session.connection_closed(self.connection, 1000, "listener closing")  # type: ignore[arg-type]
        self.successResultOf(first)
        self.successResultOf(second)

    def test_connection_lost_while_leaving(self) -> None:
        """The gateway gone before the fence: close() fires, its timer is cancelled, nothing reconnects."""
        closed = self.session.close()
        self.session.connection_closed(self.connection, 1006, None)  # type: ignore[arg-type]
        self.successResultOf(closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(self.connection.closed)

    def test_not_registered_closes_at_once(self) -> None:
        """A connection still registering has nothing to leave: it is closed at once."""
        self.session.registered = None
        self.session.close()
        self.assertEqual((self.connection.sent, self.connection.closed), ([], (1000, "listener closing")))

    def test_closed_opened_and_closed_again(self) -> None:
        """A second leave on a new connection ends the first one's at once: no connection is left open."""
        self.session.close()
        first_fence = self.unregister_id()
        second = Connection()
        self.session._protocol = second  # type: ignore[assignment]  # open() again, registered again
        self.session._running = True
        self.session.close()
        self.assertEqual(self.connection.closed, (1000, "listener closing"))
        self.assertIsNone(second.closed)
        self.session.envelope_received(second, unregistered_envelope(first_fence).to_bytes())  # type: ignore[arg-type]
        self.assertIsNone(second.closed)  # the first connection's fence is not the second's
        envelope = parse_envelope(second.sent[-1], SoapVersion.SOAP12)
        fence = read_addressing(envelope).message_id
        assert fence is not None
        self.session.envelope_received(second, unregistered_envelope(fence).to_bytes())  # type: ignore[arg-type]
        self.assertEqual(second.closed, (1000, "listener closing"))
        self.assertEqual(self.clock.getDelayedCalls(), [])
