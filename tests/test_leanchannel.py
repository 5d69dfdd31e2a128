"""
Tests for L{relay.leanchannel}: plain relayed GETs without twisted.web's channel, answered as twisted.web would.

The in-memory gateway rig runs every HTTP test through the lean channel already (its GETs are plain); these
tests check what is particular to it: which requests it keeps, handing connections to twisted.web, its
idle timeout and read-ahead bound, and that its answers are byte for byte those of twisted.web's channel.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher

from relay.leanchannel import _PENDING_LIMIT, LeanChannel

from .httpharness import RawHttpClient
from .test_http import TIMEOUT, HttpTestCase


class LeanTestCase(HttpTestCase):
    """Counts the senders' connections (not from 10.0.0.1, the listeners') that got twisted.web's channel."""

    def setUp(self) -> None:
        super().setUp()
        self.web_channels: list[Any] = []
        site = self.gateway.site
        build = site.build_channel  # type: ignore[attr-defined]

        def counted(addr: Any) -> Any:
            channel = build(addr)
            if addr.host != "10.0.0.1":  # listeners' control channels are twisted.web's WebSocket resource
                self.web_channels.append(channel)
            return channel

        site.build_channel = counted  # type: ignore[attr-defined]

    def protocol_of(self, sender: RawHttpClient) -> Any:
        """The gateway's protocol on a sender's connection (under TLS: the one the TLS layer feeds)."""
        protocol = sender.server_transport.protocol  # type: ignore[attr-defined]
        return getattr(protocol, "wrappedProtocol", protocol)

    def get(self, sender: RawHttpClient, listener: Any, target: str = "/open/x", **headers: str) -> None:
        """A GET the listener answers with 200 and a 5-byte body."""
        sender.request("GET", target, headers)
        self.net.flush()
        request = self.last_request(listener)
        self.respond(listener, request["id"], headers={"Content-Type": "text/plain"}, body=b"hello")


class LeanLaneTests(LeanTestCase):
    """Which requests stay on the lean channel, and how a connection goes to twisted.web."""

    def test_keep_alive_gets(self) -> None:
        """Plain GETs on one keep-alive connection stay lean and get their answers in turn."""
        listener = self.listen("open")
        sender = self.sender()
        for _ in range(3):
            self.get(sender, listener)
        self.assertEqual([(r.status, r.body) for r in sender.replies], [(200, b"hello")] * 3)
        self.assertIsInstance(self.protocol_of(sender), LeanChannel)
        self.assertEqual(self.web_channels, [])

    def test_body_hands_over(self) -> None:
        """A POST after lean GETs goes to twisted.web with all its bytes, and is relayed as usual."""
        listener = self.listen("open")
        sender = self.sender()
        self.get(sender, listener)
        sender.request("POST", "/open/up", {"Content-Type": "text/plain"}, body=b"data")
        self.net.flush()
        request = self.texts(listener)[-1]["request"]
        self.assertEqual(request["method"], "POST")
        self.assertEqual(listener.messages[-1], (b"data", True))
        self.respond(listener, request["id"], body=b"ok")
        self.assertEqual([r.status for r in sender.replies], [200, 200])
        self.assertEqual(len(self.web_channels), 1)
        self.assertIs(self.protocol_of(sender), self.web_channels[0])

    def test_pipelined_requests_hand_over(self) -> None:
        """Two heads in one read are twisted.web's: both are answered, in order."""
        listener = self.listen("open")
        sender = self.sender()
        sender.methods += ["GET", "GET"]
        sender.send(
            b"GET /open/a HTTP/1.1\r\nHost: relay.test\r\n\r\nGET /open/b HTTP/1.1\r\nHost: relay.test\r\n\r\n"
        )
        self.net.flush()
        first = self.last_request(listener)
        self.assertEqual(first["requestTarget"], "/open/a")
        self.respond(listener, first["id"], body=b"a")
        second = self.last_request(listener)
        self.assertEqual(second["requestTarget"], "/open/b")
        self.respond(listener, second["id"], body=b"b")
        self.assertEqual([r.body for r in sender.replies], [b"a", b"b"])
        self.assertEqual(len(self.web_channels), 1)

    def test_read_ahead_while_answering(self) -> None:
        """A head sent before the answer to the one in hand waits, then goes to twisted.web."""
        listener = self.listen("open")
        sender = self.sender()
        sender.request("GET", "/open/a")
        self.net.flush()
        first = self.last_request(listener)
        sender.request("GET", "/open/b")
        self.net.flush()
        self.assertEqual(len(listener.messages), 1)  # the second waits for the first's answer
        self.respond(listener, first["id"], body=b"a")
        second = self.last_request(listener)
        self.respond(listener, second["id"], body=b"b")
        self.assertEqual([r.body for r in sender.replies], [b"a", b"b"])

    def test_read_ahead_is_bounded(self) -> None:
        """Past the bound, a sender that sends ahead of its answer is not read until the answer is out."""
        listener = self.listen("open")
        sender = self.sender()
        sender.request("GET", "/open/a")
        self.net.flush()
        first = self.last_request(listener)
        sender.send(b"x" * (_PENDING_LIMIT + 1))
        self.net.flush()
        transport = sender.server_transport  # type: ignore[attr-defined]
        self.assertTrue(transport.reading_paused)
        self.respond(listener, first["id"], body=b"a")
        self.assertFalse(transport.reading_paused)
        self.assertEqual(sender.replies[0].body, b"a")
        self.assertEqual(len(self.web_channels), 1)  # the garbage went to twisted.web, which refuses it

    def test_connection_close(self) -> None:
        """
        C{Connection} listing C{close} is twisted.web's: it says so and closes after the answer.

        Whatever the other options and spacing: twisted.web itself split the field on spaces only.
        """
        listener = self.listen("open")
        for count, value in enumerate(
            ("close", "close, TE", "close,TE", "TE,CLOSE", "keep-alive , Close ", "TE,\tclose"), start=1
        ):
            with self.subTest(value=value):
                sender = self.sender()
                self.get(sender, listener, Connection=value)
                self.assertEqual(sender.reply.body, b"hello")
                self.assertEqual(sender.reply.header("Connection"), "close")
                self.assertIsNotNone(sender.lost)
                self.assertEqual(len(self.web_channels), count)

    def test_options_without_close_keep_the_connection(self) -> None:
        """Options that only look like C{close} keep an HTTP/1.1 connection (on twisted.web's channel)."""
        listener = self.listen("open")
        for value in ("TE", "closed", "keep-alive, TE", "close-ish,x"):
            with self.subTest(value=value):
                sender = self.sender()
                self.get(sender, listener, Connection=value)
                self.assertEqual(sender.reply.body, b"hello")
                self.assertIsNone(sender.reply.header("Connection"))
                self.assertIsNone(sender.lost)

    def test_unrouted_requests(self) -> None:
        """Unknown names and hosts, C{$hc} and the namespace root are routed (and refused) by twisted.web."""
        for target, host in (("/nothing", "relay.test"), ("/open/x", "other.test"), ("/", "relay.test")):
            sender = self.sender()
            sender.request("GET", target, host=host)
            self.net.flush()
            self.assertEqual(sender.reply.status, 404, target)
        self.assertEqual(len(self.web_channels), 3)

    def test_idle_timeout(self) -> None:
        """An idle lean connection is timed out by twisted.web's channel, with its log line."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        listener = self.listen("open")
        sender = self.sender()
        self.get(sender, listener)
        self.net.advance(self.gateway.settings.limits["http_idle_timeout"] - 1)
        self.assertIsNone(sender.lost)
        self.net.advance(2)
        self.assertIsNotNone(sender.lost)
        self.assertTrue(any("Timing out client" in formatEvent(e) for e in events))

    def test_sender_gone(self) -> None:
        """A sender that leaves while its answer is awaited: the late answer is dropped, nothing breaks."""
        listener = self.listen("open")
        sender = self.sender()
        sender.request("GET", "/open/x")
        self.net.flush()
        request = self.last_request(listener)
        sender.transport.loseConnection()  # type: ignore[union-attr]
        self.net.flush()
        self.respond(listener, request["id"], body=b"late")
        self.assertEqual(self.gateway.http.exchanges, set())


class LeanIdleTests(LeanTestCase):
    """An idle timeout (5 s) shorter than the request timeout (10 s)."""

    def limits(self) -> dict[str, float]:
        return {"http_idle_timeout": 5}

    def test_not_idle_while_answering(self) -> None:
        """A request in hand is not idle: its own timeout answers it (504); then the idle time counts."""
        self.listen("open")
        sender = self.sender()
        sender.request("GET", "/open/slow")
        self.net.advance(6)
        self.assertEqual((sender.data, sender.lost), (b"", None))
        self.net.advance(TIMEOUT - 6 + 0.5)
        self.assertEqual(sender.reply.status, 504)
        self.assertIsNone(sender.lost)
        self.net.advance(5.5)
        self.assertIsNotNone(sender.lost)


class LeanOffTests(LeanTestCase):
    """C{http_lean_channel = 0}: every connection gets twisted.web's channel."""

    def limits(self) -> dict[str, float]:
        return {"http_lean_channel": 0}

    def test_off(self) -> None:
        listener = self.listen("open")
        sender = self.sender()
        self.get(sender, listener)
        self.assertEqual(sender.reply.body, b"hello")
        self.assertEqual(len(self.web_channels), 1)


_DATE = re.compile(rb"Date: [^\r]*")
_TRACKING = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class _Scenarios:
    """The same exchanges, run on a gateway with or without the lean channel; the raw bytes each sender got."""

    def run_all(self: Any) -> dict[str, bytes]:
        got: dict[str, bytes] = {}
        hyco, streamed, request, rendezvous = self.answer_over_rendezvous("/hyco/big")
        self.stream_response(rendezvous, request["id"], [b"a" * 1000, b"b" * 1000], headers={"X": "1"})
        got["streamed"] = streamed.data
        listener = self.listen("open")

        def answer(
            name: str, via: Any, target: str, request_headers: dict[str, str] | None = None, **respond: Any
        ) -> None:
            sender = self.sender()
            sender.request("GET", target, request_headers)
            self.net.flush()
            if respond:
                request = self.last_request(via)
                self.respond(via, request["id"], **respond)
            got[name] = sender.data

        answer(
            "small",
            listener,
            "/open/a?x=1",
            {"Accept": "*/*"},
            headers={"Content-Type": "a/b", "Set-Cookie": ["a", "b"]},
            body=b"hi",
        )
        answer("empty", listener, "/open/e", headers={}, body=None)
        answer("no content", listener, "/open/n", status=204, headers={"Content-Length": "0"})
        answer("error from listener", listener, "/open/f", status=500, description="Broke Down", body=b"x")
        answer("invalid header", listener, "/open/i", headers={"Bad Name": "v"}, body=b"x")
        answer("no token", hyco, "/hyco/t")
        answer("token", hyco, "/hyco/t", {"ServiceBusAuthorization": self.token("hyco")}, body=b"ok")
        answer("upgrade refused", listener, "/open/u", {"Upgrade": "websocket", "Connection": "keep-alive"})
        sender = self.sender()
        sender.request("GET", "/open/late")
        self.net.advance(TIMEOUT + 1)
        got["timeout"] = sender.data
        return {name: _DATE.sub(b"Date: <now>", _TRACKING.sub(b"<id>", data)) for name, data in got.items()}


class LeanEquivalenceTests(_Scenarios, LeanTestCase):
    """Each answer on the lean channel is byte for byte twisted.web's (tracking ids aside)."""

    def test_same_bytes(self) -> None:
        lean = self.run_all()
        self.assertEqual(self.web_channels, [])
        self.assertEqual(lean, _web_answers(self))


class _WebOnly(_Scenarios, HttpTestCase):
    def limits(self) -> dict[str, float]:
        return {"http_lean_channel": 0}

    def runTest(self) -> None:
        pass


def _web_answers(case: LeanTestCase) -> dict[str, bytes]:
    """The same scenarios on a gateway without the lean channel, on the same clock time."""
    other = _WebOnly("runTest")
    other.setUp()
    try:
        other.clock.advance(case.clock.seconds() - other.clock.seconds())
        return other.run_all()
    finally:
        other.net.flush()


class LeanOverTLSTests(LeanLaneTests):
    """The same, every connection through real in-memory TLS: the lean channel sits on the TLS layer."""

    use_tls = True

    def test_secure(self) -> None:
        """The listener hears that the sender came over TLS."""
        listener = self.listen("open")
        sender = self.sender()
        self.get(sender, listener)
        self.assertEqual(self.texts(listener)[-1]["request"]["requestHeaders"]["X-Forwarded-Proto"], "https")
        self.assertEqual(self.web_channels, [])
