"""
Exchanges the relay gives up on, and request bodies nobody reads.

When the sender leaves or the relay's C{request_timeout} expires, the relay closes the rendezvous: the
application hears it through L{RelayedResponse.when_lost}, and C{relay expose} drops its local request.
A body the application did not read is discarded once it has answered, so its socket is read again.
"""

from __future__ import annotations

import json
import re
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionAborted
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from relay.client.address import parse_address
from relay.client.commands import parse_command
from relay.client.control import ControlChannel
from relay.client.errors import ConnectionClosedError
from relay.client.http import HttpListener, _RequestChannel, _ResponseChannel
from relay.client.httprequest import RelayedRequest, RequestBody
from relay.client.httpresponse import RelayedResponse
from relay.client.options import MIB
from relay.expose import Forwarder
from relay.localclient import LocalClient, LocalConnection

from .test_flow import FakeProtocol as FlowProtocol
from .test_http import FakeProtocol
from .test_listener_flow import FlowTestCase


class FakeTransport:
    """The rendezvous socket's transport: whether it is read."""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False


class FakeRendezvous(FakeProtocol):
    """A rendezvous channel's Autobahn protocol: its calls recorded, its transport's reading watched."""

    def __init__(self) -> None:
        super().__init__()
        self.transport = FakeTransport()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer


class FakeListener:
    """What L{HttpListener} uses of a hybrid connection listener."""

    def __init__(self) -> None:
        self.address, _ = parse_address("sb://relay.example/", "hyco")
        self.control_channel = None
        self.request_handler: Any = None


class FakeLocalServer:
    """An endpoint to the local server: each connection is a L{LocalConnection} on a L{StringTransport}."""

    def __init__(self) -> None:
        self.connections: list[tuple[LocalConnection, StringTransport]] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)


CLOSE_1000 = b"\x88\x02\x03\xe8"
"""The relay's close frame (1000), as it sends it when it gives up on an exchange."""


def request_message(method: str, target: str, *, body: bool = False) -> bytes:
    fields = {
        "address": "wss://relay.example/$hc/hyco?sb-hc-action=request&sb-hc-id=r1",
        "id": "r1",
        "method": method,
        "requestTarget": target,
        "requestHeaders": {"Host": "relay.example"},
        "body": body,
    }
    return json.dumps({"request": fields}).encode()


def send_request(
    channel: _RequestChannel,
    method: str,
    target: str,
    *,
    body: bool = False,
    headers: dict[str, str] | None = None,
) -> None:
    """The relay sends a request on the rendezvous."""
    message = request_message(method, target, body=body)
    if headers is not None:
        fields = json.loads(message)
        fields["request"]["requestHeaders"] = headers
        message = json.dumps(fields).encode()
    channel.message_begin(False)
    channel.message_data(message)
    channel.message_end()


class WhenLostTests(SynchronousTestCase):
    """The application learns when the relay gave up on its response."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.lost: list[Exception] = []

    def test_request_rendezvous_closes(self) -> None:
        """The rendezvous the request came on closes mid-body: the application is told at once."""

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            response.when_lost().addCallback(self.lost.append)
            await response.write(b"data: 1\n\n")
            await Deferred()  # an event stream with nothing more to say for now

        http = HttpListener(FakeListener(), app, reactor=self.reactor)
        channel = _RequestChannel(http, FakeRendezvous())  # type: ignore[arg-type]
        send_request(channel, "GET", "/hyco/events")
        self.assertEqual(self.lost, [])
        channel.connection_closed(False, 1006, None)
        self.assertEqual(len(self.lost), 1)
        self.assertIsInstance(self.lost[0], ConnectionClosedError)

    def test_request_rendezvous_closes_under_two_responses(self) -> None:
        """
        A second request came on the rendezvous before the first was answered: the close reaches both.

        Before, only the latest response was kept, so the first application never heard that its sender
        was gone.
        """
        answers: dict[str, RelayedResponse] = {}

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            answers[request.path] = response
            response.when_lost().addCallback(self.lost.append)
            await Deferred()  # not answered yet

        http = HttpListener(FakeListener(), app, reactor=self.reactor)
        channel = _RequestChannel(http, FakeRendezvous())  # type: ignore[arg-type]
        send_request(channel, "GET", "/hyco/first")
        send_request(channel, "GET", "/hyco/second")
        self.assertEqual(sorted(answers), ["/first", "/second"])
        channel.connection_closed(False, 1006, None)
        self.assertEqual(len(self.lost), 2)
        self.assertEqual([type(error) for error in self.lost], [ConnectionClosedError] * 2)

    def test_listener_close_waits_for_every_response(self) -> None:
        """Closing the listener closes the rendezvous only once the last response under way on it is done."""
        answers: dict[str, Deferred[None]] = {}

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            answers[request.path] = Deferred()
            await answers[request.path]
            await response.finish(b"ok")

        listener = FakeListener()
        rendezvous = FakeRendezvous()
        http = HttpListener(listener, app, reactor=self.reactor)
        channel = _RequestChannel(http, rendezvous)  # type: ignore[arg-type]
        send_request(channel, "GET", "/hyco/first")
        send_request(channel, "GET", "/hyco/second")
        listener.closed = True  # type: ignore[attr-defined]
        channel.close_when_idle()
        answers["/first"].callback(None)
        self.assertNotIn(("close", 1000), rendezvous.calls)
        answers["/second"].callback(None)
        self.assertEqual(rendezvous.calls[-1], ("close", 1000))

    def test_response_rendezvous_closes(self) -> None:
        """The rendezvous opened for a large response closes before its end: the application is told."""
        rendezvous = FakeRendezvous()
        channel = _ResponseChannel(rendezvous)  # type: ignore[arg-type]
        response = RelayedResponse(
            "r1", reactor=self.reactor, control=object(), open_rendezvous=lambda: succeed(channel.sink)
        )
        response.when_lost().addCallback(self.lost.append)
        self.successResultOf(response.write(b"x" * 100_000))  # more than the control channel takes
        self.assertIn(("frame", b"x" * 100_000), rendezvous.calls)
        self.assertEqual(self.lost, [])
        channel.connection_closed(False, 1006, None)
        self.assertEqual(len(self.lost), 1)
        self.assertIsInstance(self.lost[0], ConnectionClosedError)
        self.failureResultOf(response.write(b"more"), ConnectionClosedError)

    def control_channel(self) -> tuple[FakeListener, ControlChannel]:
        """A listener whose control channel is a real L{ControlChannel} over a string transport."""
        ignore: Any = lambda *args: None  # noqa: E731
        control = ControlChannel(
            FlowProtocol(StringTransport()),  # type: ignore[arg-type]
            listener_id="L",
            on_accept=ignore,
            on_request=ignore,
            on_closed=ignore,
        )
        listener = FakeListener()
        listener.control_channel = control  # type: ignore[assignment]
        return listener, control

    def test_control_channel_closes(self) -> None:
        """
        The control channel a small request came on closes before the answer: the application is told.

        The relay answers the senders of every request still due on a control channel that closes (502),
        so the answer can no longer go. A long poll used to wait on, holding its request slot, until it
        wrote.
        """

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            response.when_lost().addCallback(self.lost.append)
            await Deferred()  # a long poll: nothing to say yet

        listener, control = self.control_channel()
        http = HttpListener(listener, app, reactor=self.reactor)
        listener.request_handler(parse_command(request_message("GET", "/hyco/poll")), None)
        self.assertEqual((self.lost, http.active), ([], 1))
        control.connection_closed(False, 1006, None)
        self.assertEqual(len(self.lost), 1)
        self.assertIsInstance(self.lost[0], ConnectionClosedError)

    def test_control_channel_keeps_no_answered_response(self) -> None:
        """
        An answer that left (on the control channel or a rendezvous) is not lost when the channel closes.

        Nor does the channel keep anything of it: a long-lived channel serves any number of requests.
        """
        _, control = self.control_channel()
        rendezvous = _ResponseChannel(FakeRendezvous())  # type: ignore[arg-type]
        small = RelayedResponse("r1", reactor=self.reactor, control=control)
        large = RelayedResponse(
            "r2", reactor=self.reactor, control=control, open_rendezvous=lambda: succeed(rendezvous.sink)
        )
        lost = [small.when_lost(), large.when_lost()]
        self.successResultOf(small.finish(b"ok"))
        self.successResultOf(large.write(b"x" * 100_000))
        self.assertEqual(control._watchers, set())
        control.connection_closed(False, 1006, None)
        for waiter in lost:
            self.assertNoResult(waiter)

    def test_delivered_response_is_not_lost(self) -> None:
        """A response that was delivered is never reported lost, not even when its socket closes after."""
        rendezvous = FakeRendezvous()
        channel = _ResponseChannel(rendezvous)  # type: ignore[arg-type]
        response = RelayedResponse(
            "r1", reactor=self.reactor, control=object(), open_rendezvous=lambda: succeed(channel.sink)
        )
        lost = response.when_lost()
        self.successResultOf(response.finish(b"x" * 100_000))
        channel.connection_closed(True, 1000, None)
        self.assertNoResult(lost)
        self.assertNoResult(response.when_lost())


class RelayClosedTests(FlowTestCase, SynchronousTestCase):
    """
    A response on a request rendezvous the relay has closed (close frame sent, TCP not gone yet) fails.

    Autobahn drops what is sent after a close frame without a word, so the response must not count on it.
    """

    def test_response_finished_after_the_close_frame_is_lost(self) -> None:
        """The rest of a started response and its end fail, and when_lost() fires."""
        go: Deferred[None] = Deferred()
        outcome: list[str] = []
        lost: list[Exception] = []

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            response.when_lost().addCallback(lost.append)
            await response.write(b"first part ")
            await go
            try:
                await response.write(b"second part")
                await response.finish()
            except ConnectionClosedError:
                outcome.append("failed")
            else:
                outcome.append("delivered")

        _listener, dial = self.fetched(app)
        dial.transport.write(CLOSE_1000)
        self.network.flush()
        go.callback(None)
        self.network.advance(5)  # the TCP connection is gone by now too
        self.assertEqual(outcome, ["failed"])
        self.assertEqual(len(lost), 1)

    def test_first_write_after_the_close_frame_fails(self) -> None:
        """With nothing sent yet, write() fails with ConnectionClosedError, not with Autobahn's error."""
        go: Deferred[None] = Deferred()
        outcome: list[BaseException] = []

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            await go
            try:
                await response.write(b"answer")
            except Exception as e:
                outcome.append(e)

        _listener, dial = self.fetched(app)
        dial.transport.write(CLOSE_1000)
        self.network.flush()
        go.callback(None)
        self.network.flush()
        self.assertEqual([type(e) for e in outcome], [ConnectionClosedError])


def forwarder_to_fake_local(reactor: Any, lines: list[str]) -> tuple[Forwarder, FakeLocalServer]:
    """A C{relay expose} forwarder for C{http://127.0.0.1:8000} whose local server is a L{FakeLocalServer}."""
    forwarder = Forwarder("http://127.0.0.1:8000", reactor=reactor, log_line=lines.append)
    local = FakeLocalServer()
    forwarder.client = LocalClient(reactor, "http", "127.0.0.1", 8000, endpoint=local, response_timeout=None)
    return forwarder, local


class ForwarderOverRendezvous:
    """A C{relay expose} forwarder behind an L{HttpListener}, a fake local server, one request rendezvous."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.lines: list[str] = []
        self.forwarder, self.local = forwarder_to_fake_local(self.reactor, self.lines)
        self.http = HttpListener(
            FakeListener(), self.forwarder, reactor=self.reactor, on_response=self.forwarder.access_line
        )
        self.rendezvous = FakeRendezvous()
        self.channel = _RequestChannel(self.http, self.rendezvous)  # type: ignore[arg-type]


class ExposeAbandonTests(ForwarderOverRendezvous, SynchronousTestCase):
    """C{relay expose} drops its local request when the relay gives up, and frees the request slot."""

    def access(self) -> list[str]:
        """The access lines without their time stamp and duration."""
        return [
            " ".join(f for f in line.split()[1:] if not re.fullmatch(r"[0-9.]+ms", f)) for line in self.lines
        ]

    def close_rendezvous(self) -> None:
        """The relay gives up on the exchange; the local connection's abort completes."""
        self.channel.connection_closed(False, 1006, None)
        for protocol, transport in self.local.connections:
            if transport.disconnected and not protocol.closed:
                protocol.connectionLost(Failure(ConnectionAborted()))

    def test_stalled_body(self) -> None:
        """A local event stream that goes quiet is dropped when the relay gives up on it."""
        send_request(self.channel, "GET", "/hyco/events")
        [(protocol, transport)] = self.local.connections
        self.assertTrue(transport.value().startswith(b"GET /events HTTP/1.1\r\n"))
        protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"9\r\ndata: 1\n\n\r\n"
        )
        self.assertIn(("frame", b"data: 1\n\n"), self.rendezvous.calls)
        self.assertEqual(self.http.active, 1)
        self.close_rendezvous()
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.http.active, 0)
        self.assertEqual(self.access(), ['- "GET /events" 200 9 given up: the sender got a cut answer'])
        self.assertEqual(self.local.connections[0][0].closed, True)

    def test_no_head_yet(self) -> None:
        """A local server that has not answered yet is dropped when the relay gives up (no 502 is sent)."""
        send_request(self.channel, "GET", "/hyco/poll")
        [(_protocol, transport)] = self.local.connections
        sent = list(self.rendezvous.calls)
        self.assertEqual(self.http.active, 1)
        self.close_rendezvous()
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.http.active, 0)
        self.assertEqual(self.rendezvous.calls, sent)
        # Before, "200 0": the response's default status, as if the local server had answered.
        self.assertEqual(self.access(), ['- "GET /poll" - 0 given up: the local server had not answered'])

    def test_delivered(self) -> None:
        """A delivered answer's line is as before: nothing after the duration."""
        send_request(self.channel, "GET", "/hyco/x")
        [(protocol, _transport)] = self.local.connections
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(self.access(), ['- "GET /x" 200 2'])


class ExposeUnsendableTests(SynchronousTestCase):
    """A relayed request that cannot be written to the local server is answered 400, and nothing is sent."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.forwarder = Forwarder("http://127.0.0.1:8000", reactor=self.reactor, log_line=lambda line: None)
        self.local = FakeLocalServer()
        self.forwarder.client = LocalClient(
            self.reactor, "http", "127.0.0.1", 8000, endpoint=self.local, response_timeout=None
        )
        self.http = HttpListener(FakeListener(), self.forwarder, reactor=self.reactor)
        self.rendezvous = FakeRendezvous()
        self.channel = _RequestChannel(self.http, self.rendezvous)  # type: ignore[arg-type]

    def assert_refused(self) -> None:
        self.assertEqual(self.local.connections, [])
        [head] = [
            json.loads(payload)["response"] for kind, payload in self.rendezvous.calls if kind == "text"
        ]
        self.assertEqual(head["statusCode"], 400)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_method_that_is_no_token(self) -> None:
        """
        The method is checked as the target and fields are.

        A line break in it started a request of its own on the local connection, an empty one a request
        line without a method.
        """
        for method in ("GET /x HTTP/1.1\r\nX-Injected: yes\r\n\r\nGET", "GET /x", ""):
            with self.subTest(method=method):
                self.setUp()
                send_request(self.channel, method, "/hyco/x")
                self.assert_refused()

    def test_text_that_cannot_be_encoded(self) -> None:
        """
        JSON text that no request head can hold is refused with 400.

        A method or field name beyond latin-1, a lone surrogate in a value or target: before, C{encode}
        raised and the sender got 500 and a traceback.
        """
        cases: list[tuple[str, str, dict[str, str]]] = [
            ("G\u0100T", "/hyco/x", {}),
            ("GET", "/hyco/x", {"X-\u0100": "1"}),
            ("GET", "/hyco/x", {"X-A": "\ud800"}),
            ("GET", "/hyco/x", {"Host": "relay\u0100.example"}),
            ("GET", "/hyco/\ud800", {}),
            ("GET", "/hyco/x?q=\ud800", {}),
        ]
        for method, target, headers in cases:
            with self.subTest(method=method, target=target, headers=headers):
                self.setUp()
                send_request(self.channel, method, target, headers=headers)
                self.assert_refused()


class DiscardedBodyTests(SynchronousTestCase):
    """A request body left unread once the application has answered is discarded, not held."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.bodies: list[RequestBody] = []
        self.rendezvous = FakeRendezvous()

    def channel(self, app: Any, **kwargs: Any) -> _RequestChannel:
        http = HttpListener(FakeListener(), app, reactor=self.reactor, **kwargs)
        original = http.handle

        def handle(command: Any, body: RequestBody, response: RelayedResponse) -> None:
            self.bodies.append(body)
            original(command, body, response)

        http.handle = handle  # type: ignore[method-assign]
        return _RequestChannel(http, self.rendezvous)  # type: ignore[arg-type]

    def upload(self, channel: _RequestChannel, size: int) -> None:
        """The relay streams C{size} bytes of body in 64 KiB frames, then ends the message."""
        channel.message_begin(True)
        piece = b"x" * (64 * 1024)
        for _ in range(size // len(piece)):
            channel.message_data(piece)

    def assert_drained(self) -> None:
        [body] = self.bodies
        self.assertFalse(self.rendezvous.transport.paused)
        self.assertEqual(body._queued, 0)
        self.assertEqual(len(body._chunks), 0)

    def test_answered_while_paused(self) -> None:
        """
        An application answers 401 after one piece, while the body has paused its socket.

        The socket is read again, and 2 MiB more flow through and are dropped.
        """
        answer: Deferred[None] = Deferred()

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            await request.body.read()
            await answer
            response.status_code = 401
            await response.finish(b"no\n")

        channel = self.channel(app)
        send_request(channel, "POST", "/hyco/up", body=True)
        self.upload(channel, 2 * MIB)
        self.assertTrue(self.rendezvous.transport.paused)
        answer.callback(None)
        heads = [json.loads(payload)["response"] for kind, payload in self.rendezvous.calls if kind == "text"]
        self.assertEqual([head["statusCode"] for head in heads], [401])
        self.assert_drained()
        self.upload(channel, 2 * MIB)
        self.assert_drained()
        channel.message_end()
        self.failureResultOf(self.bodies[0].read(), ConnectionClosedError)

    def test_answered_before_the_body(self) -> None:
        """An application that answers without reading: the body that follows is not queued."""

        def app(request: RelayedRequest, response: RelayedResponse) -> None:
            response.status_code = 413

        channel = self.channel(app)
        send_request(channel, "POST", "/hyco/up", body=True)
        self.upload(channel, 2 * MIB)
        self.assert_drained()
        self.assertEqual(self.rendezvous.transport.pauses, 0)

    def test_busy_listener(self) -> None:
        """A request answered 503 because the listener is busy does not hold its body either."""
        channel = self.channel(lambda request, response: None, max_concurrent=0)
        send_request(channel, "POST", "/hyco/up", body=True)
        self.upload(channel, 2 * MIB)
        self.assert_drained()

    def test_text_instead_of_the_announced_body(self) -> None:
        """
        A request announces a body, but the relay sends another request next: the first goes on without one.

        Before, its body stayed open for good: its application waited on it forever, holding one of the
        listener's request slots, and the rendezvous closing did not cut it either.
        """
        read: list[bytes] = []

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            read.append(await request.body.read_all())
            await response.finish(b"ok")

        channel = self.channel(app)
        send_request(channel, "POST", "/hyco/up", body=True)
        send_request(channel, "POST", "/hyco/next", body=True)
        channel.message_begin(True)
        channel.message_data(b"second")
        channel.message_end()
        self.assertEqual(read, [b"", b"second"])
        heads = [json.loads(payload)["response"] for kind, payload in self.rendezvous.calls if kind == "text"]
        self.assertEqual([head["statusCode"] for head in heads], [200, 200])

    def test_stray_binary_message_is_logged(self) -> None:
        """
        A binary message no request announced is ignored with a log line giving its size.

        As on the control channel; before, it was dropped without a trace. The next request and its body
        are served as usual.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        read: list[bytes] = []

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            read.append(await request.body.read_all())
            await response.finish(b"ok")

        channel = self.channel(app)
        channel.message_begin(True)
        channel.message_data(b"x" * 5)
        channel.message_data(b"y" * 7)
        channel.message_end()
        [event] = [e for e in observer if "binary message" in e["log_format"]]
        self.assertEqual((event["log_level"], event["size"]), (LogLevel.info, 12))
        self.assertIn("request rendezvous", event["log_format"])
        send_request(channel, "POST", "/hyco/up", body=True)
        channel.message_begin(True)
        channel.message_data(b"body")
        channel.message_end()
        self.assertEqual(read, [b"body"])
        self.assertEqual(len([e for e in observer if "binary message" in e["log_format"]]), 1)

    def test_paused_body_resumes(self) -> None:
        """A body that had paused its socket is resumed when discarded."""
        events: list[str] = []
        body = RequestBody(
            high_water=10, pause=lambda: events.append("pause"), resume=lambda: events.append("resume")
        )
        body.feed(b"x" * 20)
        body.discard()
        body.feed(b"y" * 20)
        self.assertEqual(events, ["pause", "resume"])
        self.assertEqual(body._queued, 0)
        self.failureResultOf(body.read(), ConnectionClosedError)
