"""
A listener against a relay that floods it.

The control channel is not read while answers pile up unsent, or while rejections, accepts or request
fetches are being dialled at their limit, and is read again once none holds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from relay.client import (
    HttpListener,
    HybridConnectionListener,
    HybridWebSocket,
    RelayedRequest,
    RelayedResponse,
)
from relay.client.accepting import AcceptContext
from relay.client.flow import ACCEPT_DIALS, FETCH_DIALS, REJECTION_DIALS, WRITE_BACKLOG
from relay.client.http import _RequestChannel
from relay.hybrid.messages import Accept, RemoteEndpoint
from relay.wsframes import server_frame

from .network import ClientTransport
from .test_listener import ListenerTestCase

BODY = b"x" * 40_000


class Rendezvous(Protocol):
    """A rendezvous port that answers an upgrade only when the test says so."""

    def __init__(self, dials: list[Rendezvous]) -> None:
        self.dials = dials
        self.received = b""

    def connectionMade(self) -> None:
        self.dials.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def accept(self) -> None:
        """The relay completes the upgrade: the rendezvous is open."""
        found = re.search(rb"(?i)sec-websocket-key:\s*(\S+)", self.received)
        assert found is not None
        key = found.group(1) + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + base64.b64encode(hashlib.sha1(key).digest()) + b"\r\n\r\n"  # noqa: S324
        )

    def gone(self) -> None:
        """The relay confirms the rejection."""
        self.transport.write(b"HTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n")

    def fail(self) -> None:
        """The rendezvous breaks before it answers."""
        self.transport.loseConnection()


class FlowTestCase(ListenerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.dials: list[Rendezvous] = []
        factory = Factory()
        factory.buildProtocol = lambda addr: Rendezvous(self.dials)  # type: ignore[method-assign]
        self.network.serve(81, factory)
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def wire(self) -> ClientTransport:
        """The listener's end of its (first) control channel."""
        return self.network.transports[0]

    def flood(self, *ids: str) -> None:
        """The relay announces senders (in one write) whose rendezvous is on port 81."""
        for sender_id in ids:
            accept = Accept(
                address=f"ws://relay.test:81/$hc/hyco?sb-hc-action=accept&sb-hc-id={sender_id}",
                id=sender_id,
                connect_headers={},
                remote_endpoint=RemoteEndpoint("203.0.113.9", 1),
            )
            self.control().sendMessage(accept.encode(), isBinary=False)
        self.network.flush()

    def request(self, request_id: str) -> None:
        message = {
            "request": {
                "address": "ws://relay.test:80/$hc/hyco?sb-hc-action=request",
                "id": request_id,
                "requestTarget": "/hyco/",
                "method": "GET",
                "requestHeaders": {},
            }
        }
        self.control().sendMessage(json.dumps(message).encode(), isBinary=False)

    def announce(self, *ids: str) -> None:
        """The relay announces large requests (in one write) for the listener to fetch on port 81."""
        for request_id in ids:
            address = f"ws://relay.test:81/$hc/hyco?sb-hc-action=request&sb-hc-id={request_id}"
            message = {"request": {"address": address, "id": request_id}}
            self.control().sendMessage(json.dumps(message).encode(), isBinary=False)
        self.network.flush()

    def fetched(self, app: Any) -> tuple[HybridConnectionListener, Rendezvous]:
        """A listener serving C{app} has fetched request f1 over a rendezvous: it and the relay's end."""
        listener = self.open_listener()
        HttpListener(listener, app, reactor=self.reactor)
        self.announce("f1")
        [dial] = self.dials
        dial.accept()
        self.network.flush()
        self.send_request(dial, "f1")
        return listener, dial

    def send_request(self, dial: Rendezvous, request_id: str) -> None:
        """The relay sends a request (a GET without body) on a request rendezvous."""
        address = f"ws://relay.test:81/$hc/hyco?sb-hc-action=request&sb-hc-id={request_id}"
        fields = {"address": address, "id": request_id, "method": "GET", "requestTarget": "/hyco/a"}
        dial.transport.write(server_frame(json.dumps({"request": fields}).encode()))
        self.network.flush()

    def request_rendezvous(self) -> Any:
        """The listener's (one) request rendezvous socket."""
        [protocol] = [
            p._wrappedProtocol
            for p in self.network.protocols
            if isinstance(getattr(p._wrappedProtocol, "receiver", None), _RequestChannel)
        ]
        return protocol

    def responses(self) -> list[str]:
        return [m["response"]["requestId"] for m in self.relay.control_messages if isinstance(m, dict)]

    def serve(self, **kwargs: Any) -> dict[str, Deferred[None]]:
        """
        Open a listener with an HTTP application that answers each request when told.

        The answer (40 kB, on the control channel) goes when the request's L{Deferred} in the returned
        mapping fires.
        """
        listener = self.open_listener(**kwargs)
        answers: dict[str, Deferred[None]] = {}

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            answers[request.id] = Deferred()
            await answers[request.id]
            await response.write(BODY)

        HttpListener(listener, app, reactor=self.reactor)
        self.wire().write_high_water = 64 * 1024
        return answers

    def flow_lines(self) -> list[str]:
        return [e["log_format"] for e in self.observer if e["log_namespace"].startswith("relay.client.flow")]


class UnreadAnswersTests(FlowTestCase, SynchronousTestCase):
    def test_reading_stops_while_answers_are_unsent(self) -> None:
        """
        Answers the relay does not read stop the listener reading until they have been sent.

        Past the write buffer's high-water mark the listener reads no more requests (they wait in TCP
        buffers, the relay's) until the buffer has drained.
        """
        answers = self.serve()
        for request_id in ("r1", "r2", "r3"):
            self.request(request_id)
        self.network.flush()
        self.wire().stalled = True
        answers["r1"].callback(None)
        self.assertFalse(self.wire().reading_paused)
        answers["r2"].callback(None)
        self.assertTrue(self.wire().reading_paused)
        self.request("r4")
        self.network.flush()
        self.assertNotIn("r4", answers)
        self.assertGreater(self.wire().held_bytes, 0)
        answers["r3"].callback(None)  # a request already being handled still answers
        self.assertGreater(self.wire().unsent_bytes, 3 * len(BODY))
        self.assertEqual(
            self.flow_lines(),
            ["listener {listener_id} stops reading its control channel: {reason}{unlogged}"],
        )
        self.assertEqual([e["reason"] for e in self.observer if "reason" in e], [WRITE_BACKLOG])

        self.wire().stalled = False
        self.network.flush()
        self.assertFalse(self.wire().reading_paused)
        self.assertIn("r4", answers)
        answers["r4"].callback(None)
        self.network.flush()
        self.assertEqual(self.responses(), ["r1", "r2", "r3", "r4"])
        self.assertEqual(len(self.flow_lines()), 2)

    def test_a_flood_of_requests_stays_with_the_relay(self) -> None:
        """A relay that sends requests without reading the answers gets two answers, then waits."""
        listener = self.open_listener()

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            await response.write(BODY)

        HttpListener(listener, app, reactor=self.reactor)
        self.wire().write_high_water = 64 * 1024
        self.wire().stalled = True
        for n in range(100):
            self.request(f"r{n}")
            self.network.flush()
        self.assertLess(self.wire().unsent_bytes, 3 * len(BODY))
        self.assertGreater(self.wire().held_bytes, 90 * 100)
        self.wire().stalled = False
        self.network.flush()
        self.assertEqual(self.responses(), [f"r{n}" for n in range(100)])
        self.assertFalse(self.wire().reading_paused)


class RejectionLimitTests(FlowTestCase, SynchronousTestCase):
    def test_reading_stops_at_the_limit_until_a_rejection_completes_or_fails(self) -> None:
        """
        At C{max_rejection_dials} rejections in progress the control channel is not read.

        A rejection that completes (410) or fails makes room, and reading resumes.
        """
        listener = self.open_listener(accept_handler=lambda _: False, max_rejection_dials=2)
        self.flood("s1")
        self.flood("s2")
        self.assertEqual(len(self.dials), 2)
        self.assertTrue(self.wire().reading_paused)
        self.assertEqual(listener.control_channel and listener.control_channel.reading_paused, True)
        self.flood("s3")
        self.assertEqual(len(self.dials), 2, "the third accept is not read")
        self.assertGreater(self.wire().held_bytes, 0)

        self.dials[0].gone()
        self.network.flush()
        self.assertEqual(len(self.dials), 3, "room for one: the third accept is read and rejected")
        self.assertTrue(self.wire().reading_paused)

        self.dials[1].fail()
        self.network.flush()
        self.assertFalse(self.wire().reading_paused)
        self.flood("s4")
        self.assertEqual(len(self.dials), 4)
        self.assertTrue(self.wire().reading_paused)
        stops = "listener {listener_id} stops reading its control channel: {reason}{unlogged}"
        again = "listener {listener_id} reads its control channel again after {seconds:.1f} s"
        self.assertEqual(self.flow_lines(), [stops, again, stops, again, stops])
        self.assertEqual(
            {e.get("reason") for e in self.observer if e["log_format"] == stops}, {REJECTION_DIALS}
        )

    def test_rejections_read_together_wait_for_their_turn(self) -> None:
        """Accepts that arrive in one read beyond the limit are not dialled until a slot is free."""
        self.open_listener(accept_handler=lambda _: False, max_rejection_dials=2)
        self.flood("s1", "s2", "s3", "s4")
        self.assertEqual(len(self.dials), 2)
        self.assertTrue(self.wire().reading_paused)
        self.dials[0].gone()
        self.network.flush()
        self.assertEqual(len(self.dials), 3)
        self.assertTrue(self.wire().reading_paused)
        for dial in self.dials[1:3]:
            dial.gone()
        self.network.flush()
        self.assertEqual(len(self.dials), 4)
        self.assertFalse(self.wire().reading_paused)

    def test_busy_rejections_count_too(self) -> None:
        """The 503s of a full accept queue are rejections like the handler's."""
        self.open_listener(max_pending_connections=0, max_rejection_dials=1)
        self.flood("s1", "s2")
        self.assertEqual(len(self.dials), 1)
        self.assertTrue(self.wire().reading_paused)

    def test_a_new_control_channel_waits_for_the_rejections_of_the_old_one(self) -> None:
        """Rejections outlive a reconnect: the new control channel is not read while they are at the limit."""
        listener = self.open_listener(accept_handler=lambda _: False, max_rejection_dials=1)
        self.flood("s1")
        self.assertTrue(self.wire().reading_paused)
        self.wire().loseConnection()
        self.network.advance(5)
        self.assertTrue(listener.is_online)
        self.assertEqual(len(self.network.transports), 3)  # control, rendezvous, control
        self.assertTrue(self.network.transports[-1].reading_paused)
        self.dials[0].gone()
        self.network.flush()
        self.assertFalse(self.network.transports[-1].reading_paused)

    def test_close_with_rejections_waiting(self) -> None:
        """Closing the listener gives up rejections in progress and waiting, and frees their slots."""
        listener = self.open_listener(accept_handler=lambda _: False, max_rejection_dials=1)
        self.flood("s1", "s2")
        closed = listener.close()
        self.network.flush()
        self.successResultOf(closed)
        self.assertEqual(len(self.dials), 1)
        self.assertEqual(self.relay.listener_closes, [(True, 1000, None)])


class BothReasonsTests(FlowTestCase, SynchronousTestCase):
    def test_one_reason_ending_does_not_resume_what_the_other_holds(self) -> None:
        """Reading resumes only when the rejection limit and the write backlog have both ended."""
        answers = self.serve(accept_handler=lambda _: False, max_rejection_dials=1)
        wire = self.wire()
        for request_id in ("r1", "r2", "r3", "r4"):
            self.request(request_id)
        self.network.flush()

        self.flood("s1")
        self.assertTrue(wire.reading_paused)
        wire.stalled = True
        answers["r1"].callback(None)
        answers["r2"].callback(None)  # the write backlog holds too
        self.dials[0].gone()
        self.network.flush()
        self.assertEqual(len(self.flow_lines()), 1)
        self.assertTrue(wire.reading_paused, "the write backlog still holds")
        wire.stalled = False
        self.network.flush()
        self.assertFalse(wire.reading_paused)
        self.assertEqual(self.responses(), ["r1", "r2"])

        wire.stalled = True
        answers["r3"].callback(None)
        answers["r4"].callback(None)
        self.assertTrue(wire.reading_paused)
        self.flood("s2")
        self.assertEqual(len(self.dials), 1, "nothing more is read")
        wire.stalled = False
        self.network.flush()
        self.assertEqual(len(self.dials), 2)
        self.assertEqual(self.responses(), ["r1", "r2", "r3", "r4"])
        self.assertTrue(wire.reading_paused, "now the rejection limit holds")
        self.dials[1].fail()
        self.network.flush()
        self.assertFalse(wire.reading_paused)
        self.assertEqual(len(self.flow_lines()), 6)  # three pauses, three resumes

    def test_listener_option(self) -> None:
        """The limit must allow at least one rejection."""
        self.assertRaises(ValueError, self.make_listener, max_rejection_dials=0)


class AcceptLimitTests(FlowTestCase, SynchronousTestCase):
    def test_accepts_handed_to_on_connection_stop_reading_at_the_limit(self) -> None:
        """
        With C{on_connection}, at C{max_accept_dials} accepts in progress the control channel is not read.

        There is no accept queue to fill up then: without the limit every C{accept} command was dialled at
        once. A connection handed over no longer counts, nor does a rendezvous that failed.
        """
        connections: list[HybridWebSocket] = []
        failed: list[AcceptContext] = []
        listener = self.open_listener(
            on_connection=connections.append, on_accept_failed=failed.append, max_accept_dials=2
        )
        self.flood("s1", "s2")
        self.flood("s3")
        self.assertEqual(len(self.dials), 2, "the third accept is not read")
        self.assertTrue(self.wire().reading_paused)
        self.assertGreater(self.wire().held_bytes, 0)

        self.dials[0].accept()
        self.network.flush()
        self.assertEqual([c.tracking_id for c in connections], ["s1"])
        self.assertEqual(len(self.dials), 3, "room for one: the third accept is read and dialled")
        self.assertTrue(self.wire().reading_paused)

        self.dials[1].fail()
        self.network.flush()
        self.assertEqual([c.connection_id for c in failed], ["s2"])
        self.assertFalse(self.wire().reading_paused, "s1 is the application's: it does not count")
        self.flood("s4", "s5")
        self.assertEqual(len(self.dials), 4, "s3 and s4")
        self.assertTrue(self.wire().reading_paused)
        for dial in self.dials[2:]:
            dial.accept()
        self.network.flush()
        self.assertEqual(len(self.dials), 5)
        self.dials[4].accept()
        self.network.flush()
        self.assertEqual([c.tracking_id for c in connections], ["s1", "s3", "s4", "s5"])
        self.assertFalse(self.wire().reading_paused)
        self.assertTrue(listener.is_online)
        self.assertEqual(
            {e.get("reason") for e in self.observer if "reason" in e and "stops reading" in e["log_format"]},
            {ACCEPT_DIALS},
        )

    def test_the_accept_handler_counts_too(self) -> None:
        """
        A slot is taken from the accept handler's call on: a slow handler holds reading at the limit.

        A sender it rejects gives its slot up for a rejection slot.
        """
        decisions: dict[str, Deferred[bool]] = {}

        def handler(context: AcceptContext) -> Deferred[bool]:
            decisions[context.connection_id] = Deferred()
            return decisions[context.connection_id]

        self.open_listener(accept_handler=handler, on_connection=lambda _: None, max_accept_dials=2)
        self.flood("s1", "s2", "s3")
        self.assertEqual((list(decisions), self.dials), (["s1", "s2"], []))
        self.assertTrue(self.wire().reading_paused)
        decisions["s1"].callback(False)
        self.network.flush()
        self.assertEqual(list(decisions), ["s1", "s2", "s3"])
        self.assertEqual(len(self.dials), 1, "s1's rejection")
        self.assertTrue(self.wire().reading_paused)
        self.dials[0].gone()
        decisions["s2"].callback(False)
        self.network.flush()
        self.assertFalse(self.wire().reading_paused)

    def test_queued_accepts_are_limited_too(self) -> None:
        """Without C{on_connection}, accepts beyond the limit wait for a slot (rather than a 503) too."""
        listener = self.open_listener(max_pending_connections=10, max_accept_dials=1)
        self.flood("s1", "s2")
        self.assertEqual(len(self.dials), 1)
        self.assertTrue(self.wire().reading_paused)
        self.dials[0].accept()
        self.network.flush()
        self.assertEqual(len(self.dials), 2)
        self.dials[1].accept()
        self.network.flush()
        self.assertFalse(self.wire().reading_paused)
        taken = [self.successResultOf(listener.accept_connection()) for _ in range(2)]
        self.assertEqual([c and c.tracking_id for c in taken], ["s1", "s2"])

    def test_a_new_control_channel_waits_for_the_accepts_of_the_old_one(self) -> None:
        """Accepts outlive a reconnect: the new control channel is not read while they are at the limit."""
        listener = self.open_listener(on_connection=lambda _: None, max_accept_dials=1)
        self.flood("s1")
        self.assertTrue(self.wire().reading_paused)
        self.wire().loseConnection()
        self.network.advance(5)
        self.assertTrue(listener.is_online)
        self.assertTrue(self.network.transports[-1].reading_paused)
        self.dials[0].accept()
        self.network.flush()
        self.assertFalse(self.network.transports[-1].reading_paused)

    def test_a_handler_that_never_decides_gives_its_slot_up(self) -> None:
        """
        After C{accept_timeout} an undecided handler is cancelled and its sender rejected with 504.

        Without the deadline a handler that never answered kept its accept slot for good; at the limit
        the control channel was then never read again.
        """
        cancelled: list[str] = []

        def handler(context: AcceptContext) -> Deferred[bool]:
            return Deferred(lambda _: cancelled.append(context.connection_id))

        self.open_listener(
            accept_handler=handler, on_connection=lambda _: None, max_accept_dials=1, accept_timeout=10
        )
        self.flood("s1", "s2")
        self.assertTrue(self.wire().reading_paused)
        self.network.advance(10)
        self.assertEqual(cancelled, ["s1"])
        self.assertEqual(len(self.dials), 1, "s1's rejection")
        self.assertIn(b"sb-hc-statusCode=504", self.dials[0].received)
        self.assertTrue(self.wire().reading_paused, "s2's handler has the slot now")
        self.network.advance(10)
        self.assertEqual(cancelled, ["s1", "s2"])
        self.assertFalse(self.wire().reading_paused)
        warnings = [e for e in self.observer if "did not decide" in e.get("log_format", "")]
        self.assertEqual([e["connection_id"] for e in warnings], ["s1", "s2"])

    def test_a_coroutine_handler_is_cancelled_too(self) -> None:
        """A coroutine handler still waiting at the deadline gets C{CancelledError}, and its sender a 504."""
        outcome: list[str] = []

        async def handler(context: AcceptContext) -> bool:
            try:
                await Deferred()
            except CancelledError:
                outcome.append("cancelled")
                raise
            return True  # pragma: no cover - never decided

        self.open_listener(accept_handler=handler, on_connection=lambda _: None, accept_timeout=5)
        self.flood("s1")
        self.network.advance(4)
        self.assertEqual((outcome, self.dials), ([], []))
        self.network.advance(1)
        self.assertEqual(outcome, ["cancelled"])
        self.assertIn(b"sb-hc-statusCode=504", self.dials[0].received)

    def test_no_deadline(self) -> None:
        """C{accept_timeout=0}: a handler may take as long as it likes."""
        decided: Deferred[bool] = Deferred()
        connections: list[HybridWebSocket] = []
        self.open_listener(
            accept_handler=lambda _: decided, on_connection=connections.append, accept_timeout=0
        )
        self.flood("s1")
        self.network.advance(3600)
        decided.callback(True)
        self.network.flush()
        self.assertEqual(len(self.dials), 1)
        self.assertNotIn(b"sb-hc-statusCode", self.dials[0].received)

    def test_listener_option(self) -> None:
        """The limit must allow at least one accept."""
        self.assertRaises(ValueError, self.make_listener, max_accept_dials=0)


class FetchLimitTests(FlowTestCase, SynchronousTestCase):
    def serve_fetches(self, **kwargs: Any) -> list[str]:
        """An HTTP listener whose application records each request it gets (and answers 204)."""
        self.listener = self.open_listener()
        seen: list[str] = []

        def app(request: RelayedRequest, response: RelayedResponse) -> None:
            seen.append(request.id)
            response.status_code = 204

        HttpListener(self.listener, app, reactor=self.reactor, **kwargs)
        return seen

    def test_reading_stops_at_the_limit_until_a_fetch_is_open_or_failed(self) -> None:
        """
        At C{max_fetch_dials} rendezvous being opened to fetch requests, the control channel is not read.

        C{max_concurrent} does not bound these dials: it is checked once a request has been fetched (and
        a busy listener answers 503 on the fetched rendezvous). Without the limit every announced
        request was dialled at once.
        """
        self.serve_fetches(max_fetch_dials=2, max_concurrent=1)
        self.announce("f1", "f2")
        self.announce("f3")
        self.assertEqual(len(self.dials), 2, "the third request is not read")
        self.assertTrue(self.wire().reading_paused)
        self.assertGreater(self.wire().held_bytes, 0)

        self.dials[0].accept()
        self.network.flush()
        self.assertEqual(len(self.dials), 3, "an open rendezvous no longer counts")
        self.assertTrue(self.wire().reading_paused)
        self.dials[1].fail()
        self.network.flush()
        self.assertFalse(self.wire().reading_paused)
        self.assertEqual(
            {e.get("reason") for e in self.observer if "reason" in e and "stops reading" in e["log_format"]},
            {FETCH_DIALS},
        )

    def test_fetches_read_together_wait_for_their_turn(self) -> None:
        """Requests announced in one read beyond the limit are not dialled until a slot is free."""
        self.serve_fetches(max_fetch_dials=1)
        self.announce("f1", "f2", "f3")
        self.assertEqual(len(self.dials), 1)
        for n in (1, 2):
            self.dials[-1].accept()
            self.network.flush()
            self.assertEqual(len(self.dials), n + 1)
            self.assertTrue(self.wire().reading_paused)
        self.dials[-1].accept()
        self.network.flush()
        self.assertFalse(self.wire().reading_paused)

    def test_fetches_waiting_at_close_are_not_dialled(self) -> None:
        """Requests still waiting for a fetch slot when the listener closes are dropped, with a log line."""
        self.serve_fetches(max_fetch_dials=1)
        self.announce("f1", "f2", "f3")
        self.assertEqual(len(self.dials), 1)
        self.listener.close()
        self.dials[0].fail()
        self.network.flush()
        self.assertEqual(len(self.dials), 1, "f2 and f3 were announced to a listener that is gone")
        dropped = [e for e in self.observer if "listener closed" in e.get("log_format", "")]
        self.assertEqual([e["request_id"] for e in dropped], ["f2", "f3"])

    def test_http_listener_option(self) -> None:
        """The limit must allow at least one fetch."""
        listener = self.make_listener()
        self.assertRaises(
            ValueError, HttpListener, listener, lambda request, response: None, max_fetch_dials=0
        )


class AcceptFailedOnCloseTests(FlowTestCase, SynchronousTestCase):
    def test_close_during_the_rendezvous(self) -> None:
        """
        A sender accepted while the listener closes, its rendezvous still being dialled: on_accept_failed.

        C{relay expose} closes the local socket it opened for the sender there; it used to stay open.
        """
        failed: list[Any] = []
        listener = self.open_listener(on_accept_failed=failed.append)
        self.flood("s1")
        self.assertEqual(len(self.dials), 1)
        listener.close()
        self.network.flush()
        self.assertEqual([context.connection_id for context in failed], ["s1"])
