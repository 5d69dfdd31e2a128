"""
Tests for the gateway's site.

Streamed request bodies, deferred finish, 100-continue, lingering, and the bounds on buffered bodies.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from relay.httpbody import IBodyConsumer
from relay.web import RelaySite
from relay.webchannel import RelayHTTPChannel
from relay.webrequest import RelayRequest

from .httpharness import RawHttpClient
from .wsharness import RecordingTransport


@implementer(IBodyConsumer)
class Collector:
    """A body consumer that records what it gets and can be told to pause."""

    def __init__(self) -> None:
        self.data = b""
        self.ended = False
        self.failure: Failure | None = None

    def body_data(self, data: bytes) -> None:
        self.data += data

    def body_end(self) -> None:
        self.ended = True

    def body_failed(self, reason: Failure) -> None:
        self.failure = reason


class Streaming(Resource):
    """Streams C{/stream...} bodies into a collector; answers C{/refuse...} at once; echoes the rest."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[RelayRequest] = []
        self.collectors: list[Collector] = []

    def render(self, request: Any) -> Any:
        self.requests.append(request)
        if request.path.startswith(b"/later"):
            if request.path == b"/later/sized":
                request.setHeader(b"content-length", b"5")
            request.write(b"")  # the head goes out now; the body comes later
            return NOT_DONE_YET
        if request.path == b"/takeover":  # as an upgrade does: another protocol gets the transport
            request.channel.transport = None
            return NOT_DONE_YET
        if request.path.startswith(b"/refuse-unsized"):  # as a listener's answer without a length
            request.setResponseCode(413)
            request.write(b"no ")
            request.write(b"thanks")
            request.finish()
            return NOT_DONE_YET
        if request.path.startswith(b"/refuse"):
            request.setResponseCode(413)
            return b"no thanks"
        if request.body is None:
            return b"buffered %d" % len(request.content.read())
        collector = Collector()
        self.collectors.append(collector)
        request.body.attach(collector)
        return NOT_DONE_YET


class WriteCountingTransport(RecordingTransport):
    """A server transport that keeps each C{write} and C{writeSequence} call apart."""

    def __init__(self, protocol: Any, is_server: bool) -> None:
        super().__init__(protocol, is_server)
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)

    def writeSequence(self, iovec: Any) -> None:
        self.writes.append(b"<sequence>" + b"".join(iovec))
        super().writeSequence(iovec)


def connect_to(site: RelaySite) -> tuple[RawHttpClient, WriteCountingTransport, iosim.IOPump, Any]:
    """A raw HTTP client on an in-memory connection to C{site}, and the site's channel for it."""
    client = RawHttpClient()
    server = site.buildProtocol(IPv4Address("TCP", "10.0.0.9", 5000))
    server_transport = WriteCountingTransport(server, True)
    pump = iosim.connect(server, server_transport, client, iosim.FakeTransport(client, False), greet=False)
    return client, server_transport, pump, server


class SiteTests(SynchronousTestCase):
    """A L{RelaySite} whose policy streams paths under C{/stream} and C{/refuse}."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Streaming()
        self.site = RelaySite(
            self.resource,
            reactor=self.clock,
            stream_policy=lambda request: not request.path.startswith(b"/buffer"),
            buffered_body=1000,
            linger_timeout=5.0,
        )

    def connect(self) -> tuple[RawHttpClient, WriteCountingTransport, iosim.IOPump]:
        client, server_transport, pump, _ = connect_to(self.site)
        return client, server_transport, pump

    def test_local_address_is_read_once_per_connection(self) -> None:
        """Every request on a kept connection gets the local address; the transport is asked once."""
        client, server_transport, pump = self.connect()
        asked = []
        real = server_transport.getHost
        server_transport.getHost = lambda: asked.append(1) or real()  # type: ignore[method-assign]
        for _ in range(3):
            client.request("GET", "/buffer")
            pump.flush()
        self.assertEqual(len(self.resource.requests), 3)
        self.assertEqual({r.getHost() for r in self.resource.requests}, {real()})
        self.assertEqual(len(asked), 1)

    def test_small_bodies_are_buffered(self) -> None:
        """A body within the buffered size is read whole before the resource renders."""
        client, _, pump = self.connect()
        client.request("POST", "/stream", body=b"x" * 1000)
        pump.flush()
        self.assertEqual(client.reply.body, b"buffered 1000")

    def test_other_resources_keep_twisted_behaviour(self) -> None:
        """Where the policy says no, even a large body arrives whole in C{content}."""
        client, _, pump = self.connect()
        client.request("POST", "/buffer", body=b"y" * 50000)
        pump.flush()
        self.assertEqual(client.reply.body, b"buffered 50000")

    def test_large_body_streams(self) -> None:
        """A large or chunked body is handed over piece by piece while the request is already handled."""
        client, _transport, pump = self.connect()
        client.request("POST", "/stream", chunked=True)
        pump.flush()
        (collector,) = self.resource.collectors
        client.chunk(b"one ")
        pump.flush()
        self.assertEqual(collector.data, b"one ")
        client.chunk(b"two")
        client.chunk(b"")
        pump.flush()
        self.assertEqual((collector.data, collector.ended), (b"one two", True))
        request = self.resource.requests[0]
        self.assertEqual(
            (request.method, request.uri, request.clientproto), (b"POST", b"/stream", b"HTTP/1.1")
        )
        request.write(b"thanks")
        request.finish()
        pump.flush()
        self.assertEqual(client.reply.body, b"thanks")

    def test_streamed_request_with_an_encoded_query(self) -> None:
        """
        A streamed request's query is read as twisted.web reads it, whatever its percent-escapes decode to.

        Escapes of non-ASCII bytes (UTF-8 C{%C3%A9}, a bare C{%FF}) used to raise UnicodeEncodeError.
        """
        client, _transport, pump = self.connect()
        client.request("POST", "/buffer?name=%C3%A9&raw=%FF&flag", body=b"x")
        client.request("POST", "/stream?name=%C3%A9&raw=%FF&flag", chunked=True)
        pump.flush()
        buffered, streamed = self.resource.requests
        self.assertEqual(buffered.args, {b"name": [b"\xc3\xa9"], b"raw": [b"\xff"]})
        self.assertEqual(streamed.args, buffered.args)
        self.assertEqual(len(self.resource.collectors), 1)

    def test_consumer_pauses_the_sender(self) -> None:
        """A consumer's pause stops reading the sender's socket until it resumes."""
        client, transport, pump = self.connect()
        client.request("POST", "/stream", chunked=True)
        client.chunk(b"z" * 5000)
        pump.flush()
        body = self.resource.requests[0].body
        assert body is not None
        body.pause()
        self.assertTrue(transport.reading_paused)
        body.resume()
        self.assertFalse(transport.reading_paused)

    def test_early_answer_waits_for_the_body(self) -> None:
        """
        An answer before the body is complete goes out at once.

        The rest of the body is read and dropped, and the connection carries the next request.
        """
        client, transport, pump = self.connect()
        client.request("PUT", "/refuse", chunked=True)
        pump.flush()
        self.assertEqual((client.reply.status, client.reply.body), (413, b"no thanks"))
        client.chunk(b"x" * 3000)
        client.chunk(b"")
        client.request("POST", "/stream", body=b"small")
        pump.flush()
        self.assertEqual([r.status for r in client.replies], [413, 200])
        self.assertFalse(transport.disconnecting)

    def test_early_unsized_answer_ends_at_once(self) -> None:
        """
        A chunked answer before the body is complete is ended at once: its last chunk does not wait.

        Clients such as curl stop uploading when an answer comes early and wait for its end; the last
        chunk used to wait for the rest of the body, so they waited for the linger time and a reset.
        The rest of a body that does come is still read and dropped, and the connection carries on.
        """
        client, transport, pump = self.connect()
        client.request("PUT", "/refuse-unsized", chunked=True)
        client.chunk(b"x" * 3000)
        pump.flush()
        reply = client.reply
        self.assertEqual((reply.status, reply.chunked, reply.body), (413, True, b"no thanks"))
        self.assertTrue(reply.complete)
        client.chunk(b"y" * 3000)
        client.chunk(b"")
        client.request("POST", "/stream", body=b"small")
        pump.flush()
        self.assertEqual(
            [(r.status, r.body) for r in client.replies], [(413, b"no thanks"), (200, b"buffered 5")]
        )
        self.assertFalse(transport.disconnecting)

    def test_no_continue_after_an_answer(self) -> None:
        """C{Expect: 100-continue} gets its 100 unless the final answer already went out."""
        client, _, pump = self.connect()
        client.request("POST", "/refuse", {"Expect": "100-continue"}, chunked=True)
        pump.flush()
        self.assertTrue(client.data.startswith(b"HTTP/1.1 413"))
        self.assertNotIn(b"100 Continue", client.data)
        other, _, other_pump = self.connect()
        other.request("POST", "/stream", {"Expect": "100-continue"}, chunked=True)
        other_pump.flush()
        self.assertTrue(other.data.startswith(b"HTTP/1.1 100 Continue"))

    def test_lingering_sender_is_dropped(self) -> None:
        """A sender that keeps a body going after the answer is disconnected after the linger time."""
        client, transport, pump = self.connect()
        client.request("PUT", "/refuse", chunked=True)
        pump.flush()
        self.clock.advance(4)
        self.assertFalse(transport.aborted)
        self.clock.advance(2)
        self.assertTrue(transport.aborted)

    def test_lost_connection_fails_the_body(self) -> None:
        """A sender that disconnects mid-body is reported to the consumer."""
        client, _transport, pump = self.connect()
        client.request("POST", "/stream", chunked=True)
        client.chunk(b"part")
        pump.flush()
        client.transport.loseConnection()  # type: ignore[union-attr]
        pump.flush()
        (collector,) = self.resource.collectors
        self.assertIsNotNone(collector.failure)
        self.assertFalse(collector.ended)

    def test_server_header_names_no_version(self) -> None:
        """The gateway's own answers say C{Server: relay}, not twisted.web's name and version."""
        client, _, pump = self.connect()
        client.request("POST", "/refuse", body=b"")
        pump.flush()
        self.assertEqual(client.reply.header("Server"), "relay")

    def test_connection_close_among_other_options(self) -> None:
        """
        A request whose C{Connection} lists C{close} with other options is answered, then the connection closes.

        The answer says C{Connection: close}, whatever the case and spacing; twisted.web split on spaces.
        """
        for value in ("close, TE", "close,TE", "TE ,CLOSE", "TE,\tclose"):
            with self.subTest(value=value):
                client, _, pump = self.connect()
                client.request("POST", "/buffer", {"Connection": value}, body=b"abc")
                pump.flush()
                self.assertEqual(client.reply.body, b"buffered 3")
                self.assertEqual(client.reply.header("Connection"), "close")
                self.assertIsNotNone(client.lost)
        client, _, pump = self.connect()
        client.request("POST", "/buffer", {"Connection": "TE, closed"}, body=b"abc")
        pump.flush()
        self.assertIsNone(client.reply.header("Connection"))
        self.assertIsNone(client.lost)

    def test_head_and_body_are_one_write(self) -> None:
        """A response written at once reaches the transport as one write: head and body together."""
        client, transport, pump = self.connect()
        client.request("POST", "/buffer", body=b"abc")
        pump.flush()
        self.assertEqual(client.reply.body, b"buffered 3")
        (write,) = transport.writes
        self.assertTrue(write.startswith(b"HTTP/1.1 200 OK\r\n"), write)
        self.assertTrue(write.endswith(b"\r\n\r\nbuffered 3"), write)

    def test_a_head_without_body_goes_out_at_once(self) -> None:
        """A head written before any body bytes is sent at once; the body follows when it comes."""
        client, transport, pump = self.connect()
        client.request("GET", "/later/sized")
        pump.flush()
        (head,) = transport.writes
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n"), head)
        self.assertFalse(client.reply.complete)
        (request,) = self.resource.requests
        request.write(b"hello")
        request.finish()
        pump.flush()
        self.assertEqual((client.reply.body, client.reply.complete), (b"hello", True))
        self.assertEqual(transport.writes[1:], [b"hello"])

    def test_chunked_response_keeps_its_framing(self) -> None:
        """Without a length, HTTP/1.1 responses are chunked; the held head goes out with the first chunk."""
        client, transport, pump = self.connect()
        client.request("GET", "/later/unsized")
        pump.flush()
        (request,) = self.resource.requests
        request.write(b"part one, ")
        request.write(b"part two")
        request.finish()
        pump.flush()
        reply = client.reply
        self.assertEqual((reply.chunked, reply.body, reply.complete), (True, b"part one, part two", True))
        self.assertFalse(any(w.startswith(b"<sequence>") for w in transport.writes), transport.writes)

    def test_head_request_gets_the_head_only(self) -> None:
        """A HEAD answer is its head alone, in one write, and the connection stays usable."""
        client, transport, pump = self.connect()
        client.request("HEAD", "/buffer")
        pump.flush()
        (write,) = transport.writes
        self.assertTrue(write.startswith(b"HTTP/1.1 200 OK\r\n") and write.endswith(b"\r\n\r\n"), write)
        client.request("POST", "/buffer", body=b"ab")
        pump.flush()
        self.assertEqual(client.replies[-1].body, b"buffered 2")


class IdleTimeoutTests(SynchronousTestCase):
    """The connection's idle timeout: one timer per connection, suspended while a request is in hand."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Streaming()
        self.site = RelaySite(self.resource, reactor=self.clock, timeout=30.0)
        self.client, self.transport, self.pump, self.channel = connect_to(self.site)

    def test_an_idle_connection_times_out(self) -> None:
        """Nothing sent for the timeout: the connection is closed; activity restarts the count."""
        self.clock.advance(20)
        self.client.transport.write(b"GET /buff")  # part of a head: activity
        self.pump.flush()
        self.clock.advance(20)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(10.5)
        self.assertTrue(self.transport.disconnecting)

    def test_no_timeout_while_a_request_is_in_hand(self) -> None:
        """A request answered late is not cut by the idle timeout; the idle time counts from its end."""
        self.client.request("GET", "/later")
        self.pump.flush()
        self.clock.advance(100)
        self.assertFalse(self.transport.disconnecting)
        self.resource.requests[0].write(b"late")
        self.resource.requests[0].finish()
        self.pump.flush()
        self.clock.advance(29)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1.5)
        self.assertTrue(self.transport.disconnecting)

    def test_one_timer_for_all_requests(self) -> None:
        """Requests on a kept connection move the connection's one timer instead of making new ones."""
        self.clock.advance(1)
        (timer,) = self.clock.getDelayedCalls()
        for _ in range(3):
            self.client.request("GET", "/buffer")
            self.pump.flush()
        self.assertEqual(len(self.resource.requests), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [timer])
        self.assertTrue(timer.active())

    def test_no_timer_after_a_takeover(self) -> None:
        """A request whose handler took the connection over (a WebSocket upgrade) leaves no idle timer."""
        self.client.request("GET", "/takeover")
        self.pump.flush()
        self.assertEqual(len(self.resource.requests), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_timer_goes_with_the_connection(self) -> None:
        """A closed connection leaves no timer behind."""
        self.client.request("GET", "/buffer")
        self.pump.flush()
        self.client.transport.loseConnection()
        self.pump.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class BufferedBodyLimitTests(SynchronousTestCase):
    """
    A L{RelaySite} whose policy streams paths under C{/stream}, buffering at most 10000 body bytes elsewhere.

    The channel of each connection is kept (C{self.channels}) to look at the request twisted.web made.
    """

    LIMIT = 10000

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Streaming()
        self.site = RelaySite(
            self.resource,
            reactor=self.clock,
            stream_policy=lambda request: request.path.startswith(b"/stream"),
            buffered_body=1000,
            max_buffered_body=self.LIMIT,
        )
        self.channels: list[RelayHTTPChannel] = []
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def connect(self) -> tuple[RawHttpClient, WriteCountingTransport, iosim.IOPump]:
        client, server_transport, pump, server = connect_to(self.site)
        self.channels.append(server)
        return client, server_transport, pump

    def refusals(self) -> list[Any]:
        return [e for e in self.events if e.get("log_namespace") == "relay.web.RelaySite"]

    def assert_refused(self, client: RawHttpClient, transport: Any, status: int, cause: bytes) -> None:
        """One answer with C{status} naming C{cause} and a tracking id, the connection closed, no render."""
        (reply,) = client.replies
        self.assertEqual(reply.status, status)
        self.assertEqual(reply.header("Connection"), "close")
        self.assertEqual(reply.header("Content-Type"), "text/plain; charset=utf-8")
        self.assertIn(cause, reply.body)
        self.assertIn(b"TrackingId:", reply.body)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.resource.requests, [])

    def test_upgrade_announcing_a_body_is_refused_unread(self) -> None:
        """
        An upgrade with C{Content-Length: 10000000} gets 400 from its head, and the connection is closed.

        None of the body bytes that followed the head was buffered, and a log event says why.
        """
        client, transport, pump = self.connect()
        client.methods.append("GET")
        client.send(
            b"GET /buffer?sb-hc-action=connect HTTP/1.1\r\nHost: relay.test\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nContent-Length: 10000000\r\n\r\n" + b"b" * 65536
        )
        pump.flush()
        self.assert_refused(client, transport, 400, b"A WebSocket upgrade request must not have a body")
        (request,) = self.channels[0].requests
        self.assertIsNone(request.content)  # twisted.web never made a buffer for it
        (event,) = self.refusals()
        self.assertEqual(
            (event["kind"], event["method"], event["path"], event["content_length"]),
            ("BAD_REQUEST", "GET", "/buffer", 10000000),
        )
        self.assertEqual(event["peer"], str(transport.getPeer()))

    def test_chunked_upgrade_is_refused_on_streaming_routes_too(self) -> None:
        """A chunked upgrade is refused the same way where bodies would be streamed."""
        client, transport, pump = self.connect()
        client.request("GET", "/stream", {"Upgrade": "websocket", "Connection": "Upgrade"}, chunked=True)
        client.chunk(b"c" * 5000)
        pump.flush()
        self.assert_refused(client, transport, 400, b"must not have a body")
        self.assertEqual(self.resource.collectors, [])
        self.assertEqual(self.refusals()[0]["content_length"], None)

    def test_upgrade_without_body_is_handled(self) -> None:
        """C{Content-Length: 0} on an upgrade is no body: the resource answers as before."""
        client, _, pump = self.connect()
        client.request("GET", "/buffer", {"Upgrade": "websocket", "Connection": "Upgrade"}, body=b"")
        pump.flush()
        self.assertEqual(client.reply.body, b"buffered 0")

    def test_content_length_over_the_limit_is_refused_at_once(self) -> None:
        """A buffered body announced above the limit gets 413 from its head alone (no 100 Continue either)."""
        client, transport, pump = self.connect()
        client.methods.append("POST")
        client.send(
            b"POST /buffer HTTP/1.1\r\nHost: relay.test\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % (self.LIMIT + 1)
        )
        pump.flush()
        self.assertNotIn(b"100 Continue", client.data)
        self.assert_refused(client, transport, 413, b"larger than 10000 bytes")
        self.assertEqual(client.reply.reason, "Content Too Large")
        self.assertIsNone(self.channels[0].requests[0].content)
        (event,) = self.refusals()
        self.assertEqual((event["kind"], event["content_length"]), ("PAYLOAD_TOO_LARGE", self.LIMIT + 1))

    def test_chunked_body_is_cut_at_the_limit(self) -> None:
        """A chunked body to be buffered gets 413 once it passes the limit; what is buffered stays within."""
        client, transport, pump = self.connect()
        client.request("POST", "/buffer", chunked=True)
        for _ in range(3):
            client.chunk(b"d" * 3000)
        pump.flush()
        self.assertEqual(client.data, b"")  # 9000 bytes: within the limit
        client.chunk(b"d" * 3000)
        pump.pump()  # the chunk reaches the gateway, which answers; the connection is not closed yet
        (request,) = self.channels[0].requests
        self.assertEqual(request.content.tell(), 9000)
        pump.flush()
        self.assert_refused(client, transport, 413, b"larger than 10000 bytes")
        client.chunk(b"d" * 3000)  # read no more
        client.chunk(b"")
        pump.flush()
        self.assertEqual(len(client.replies), 1)
        self.assertEqual(self.resource.requests, [])

    def test_chunked_body_ending_in_the_refused_read_is_not_handled(self) -> None:
        """A body over the limit whose end came in the same read is refused, not handed to the resource."""
        client, transport, pump = self.connect()
        client.methods.append("POST")
        client.send(
            b"POST /buffer HTTP/1.1\r\nHost: relay.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"%x\r\n%s\r\n0\r\n\r\n" % (self.LIMIT + 1, b"e" * (self.LIMIT + 1))
        )
        pump.flush()
        self.assert_refused(client, transport, 413, b"larger than 10000 bytes")
        self.assertEqual(self.refusals()[0]["content_length"], None)

    def test_bodies_within_the_limit_are_buffered(self) -> None:
        """Up to the limit, with a length or chunked, a body reaches the resource whole, and keep-alive holds."""
        client, transport, pump = self.connect()
        client.request("POST", "/buffer", body=b"f" * self.LIMIT)
        client.request("POST", "/buffer", chunked=True, body=b"g" * 6000)
        client.chunk(b"g" * 4000)
        client.chunk(b"")
        pump.flush()
        self.assertEqual([r.body for r in client.replies], [b"buffered 10000", b"buffered 10000"])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.refusals(), [])

    def test_streamed_bodies_have_no_limit(self) -> None:
        """Bodies the resource streams pass the limit, with a length or chunked."""
        client, _, pump = self.connect()
        client.request("POST", "/stream", body=b"h" * 50000)
        pump.flush()
        client, _, pump = self.connect()
        client.request("POST", "/stream", chunked=True, body=b"i" * 30000)
        client.chunk(b"i" * 30000)
        client.chunk(b"")
        pump.flush()
        self.assertEqual([len(c.data) for c in self.resource.collectors], [50000, 60000])
        self.assertTrue(all(c.ended for c in self.resource.collectors))
        self.assertEqual(self.refusals(), [])


class _Answers(Resource):
    """Answers as a relayed response does: C{/whole...} with L{RelayRequest.write_whole}, others as twisted.web."""

    isLeaf = True

    def render(self, request: Any) -> Any:
        code = int(request.args.get(b"code", [b"201"])[0])
        body = request.args.get(b"body", [b"made"])[0]
        request.setResponseCode(code, b"Made It")
        request.drop_default_fields()
        request.defaultContentType = None
        request.add_fields([("X-A", "1"), ("X-U", "\u00e9t\u00e9")])
        if request.path.startswith(b"/whole"):
            request.write_whole(body)
        else:
            request.setHeader(b"content-length", b"%d" % len(body))
            if body:
                request.write(body)
        request.finish()
        return NOT_DONE_YET


class WriteWholeTests(SynchronousTestCase):
    """L{RelayRequest.write_whole} writes what twisted.web would, byte for byte, in one write."""

    def answer(self, raw: bytes) -> tuple[bytes, int]:
        """What a client sending C{raw} gets, and how many writes the gateway made."""
        site = RelaySite(_Answers(), reactor=Clock())
        client, transport, pump, _ = connect_to(site)
        client.transport.write(raw)  # type: ignore[union-attr]
        pump.flush()
        return client.data, len(transport.writes)

    def test_same_bytes(self) -> None:
        """Plain answers, empty bodies, HTTP/1.0, Connection: close, and what takes twisted.web's way."""
        for request in (
            b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET %s?body= HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            b"GET %s HTTP/1.0\r\n\r\n",
            b"HEAD %s HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET %s?code=204&body= HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET %s?code=304 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        ):
            with self.subTest(request=request):
                whole, writes = self.answer(request.replace(b"%s", b"/whole"))
                general, _ = self.answer(request.replace(b"%s", b"/general"))
                self.assertEqual(whole, general)
                self.assertIn(b"\r\nX-U: \xc3\xa9t\xc3\xa9\r\n", whole)
                if b"code=" not in request and not request.startswith(b"HEAD"):
                    self.assertEqual(writes, 1)  # head and body in one write
