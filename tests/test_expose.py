"""Tests for L{relay.expose}: what C{relay expose} answers the relay for its local server's responses."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from relay.client.accepting import AcceptContext
from relay.client.headers import Headers
from relay.exposeaddress import ExposeError, local_base, resolve_dots, websocket_forward_headers
from relay.hybrid.messages import RemoteEndpoint

from .client.test_http_abandon import ForwarderOverRendezvous, send_request


class LocalStatusTests(ForwarderOverRendezvous, SynchronousTestCase):
    """The local server's status reaches the relay only when the relay can take it (100-599)."""

    def exchange(self, answer: bytes) -> tuple[dict[str, Any], bytes]:
        """Relay a GET, let the local server send C{answer}; the response head and body the relay got."""
        send_request(self.channel, "GET", "/hyco/x")
        [(protocol, _transport)] = self.local.connections
        protocol.dataReceived(answer)
        [head] = [
            json.loads(payload)["response"] for kind, payload in self.rendezvous.calls if kind == "text"
        ]
        body = b"".join(payload for kind, payload in self.rendezvous.calls if kind == "frame")
        return head, body

    def test_status_beyond_599(self) -> None:
        """
        A status of 600 or more gets the relay a 502 from expose, and the log names the local server's status.

        Before, expose relayed it, and the relay refused the answer as invalid and blamed the listener.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        head, body = self.exchange(b"HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nhi")
        self.assertEqual(head["statusCode"], 502)
        self.assertIn(b"The local server http://127.0.0.1:8000 did not answer. TrackingId:r1", body)
        [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(warning["error"], "status code 600 out of range")
        self.assertIn('"GET /x" 502', self.lines[-1])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_interim_answers_are_not_relayed(self) -> None:
        """A local C{100 Continue} or C{103 Early Hints} is skipped: the relay gets the final status only."""
        head, body = self.exchange(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
        )
        self.assertEqual(head["statusCode"], 200)
        self.assertNotIn("Link", head.get("responseHeaders", {}))
        self.assertEqual(body, b"hi")


class OwnAnswerTests(ForwarderOverRendezvous, SynchronousTestCase):
    """The answers expose makes itself (400, 502, 503) carry their length."""

    def answered(self) -> tuple[dict[str, Any], bytes]:
        [head] = [
            json.loads(payload)["response"] for kind, payload in self.rendezvous.calls if kind == "text"
        ]
        body = b"".join(payload for kind, payload in self.rendezvous.calls if kind == "frame")
        return head, body

    def test_lengths(self) -> None:
        """
        Streamed without a length, such an answer to an upload still under way never ended for the sender.

        The relay sends an answer without a length chunked, and held its end until the upload was over:
        a sender uploading to a local server that was down waited 10 s (the relay's linger) for a reset
        instead of its 502.
        """
        for status, setup in (
            (400, lambda: send_request(self.channel, "GET", "/hyco/../x")),
            (502, lambda: self.cut(b"HTTP/1.1 600 Odd\r\n\r\n")),
            (503, lambda: self.stopping()),
        ):
            with self.subTest(status=status):
                self.rendezvous.calls.clear()
                setup()
                head, body = self.answered()
                self.assertEqual(head["statusCode"], status)
                self.assertEqual(head["responseHeaders"]["Content-Length"], str(len(body)))
                self.forwarder.draining = False

    def cut(self, answer: bytes) -> None:
        send_request(self.channel, "GET", "/hyco/x")
        protocol, _transport = self.local.connections[-1]
        protocol.dataReceived(answer)

    def stopping(self) -> None:
        self.forwarder.draining = True
        send_request(self.channel, "GET", "/hyco/x")


class CutAnswerTests(ForwarderOverRendezvous, SynchronousTestCase):
    """A local answer that breaks off: 502 while nothing of it has left, else the relayed answer is cut too."""

    def cut(self, answer: bytes) -> tuple[list[dict[str, Any]], bytes]:
        send_request(self.channel, "GET", "/hyco/x")
        [(protocol, _transport)] = self.local.connections
        protocol.dataReceived(answer)
        protocol.connectionLost(Failure(ConnectionDone()))
        heads = [json.loads(payload)["response"] for kind, payload in self.rendezvous.calls if kind == "text"]
        body = b"".join(payload for kind, payload in self.rendezvous.calls if kind == "frame")
        return heads, body

    def test_cut_before_anything_left(self) -> None:
        """A head and then nothing: the relay gets a 502 saying so, not a wait for its own timeout."""
        heads, body = self.cut(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        self.assertEqual([head["statusCode"] for head in heads], [502])
        self.assertEqual(
            body, b"The local server http://127.0.0.1:8000 broke off its answer. TrackingId:r1\n"
        )
        self.assertNotIn(("drop", True), self.rendezvous.calls)
        self.assertIn('"GET /x" 502', self.lines[-1])

    def test_cut_after_the_head_left(self) -> None:
        """Once the answer streams to the relay its status cannot change: the rendezvous is dropped."""
        heads, body = self.cut(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        self.assertEqual([head["statusCode"] for head in heads], [200])
        self.assertEqual(body, b"0123456789")
        self.assertEqual(self.rendezvous.calls[-1], ("drop", True))


class LocalBaseTests(SynchronousTestCase):
    """The local URL given on the command line."""

    def test_credentials_refused(self) -> None:
        """
        A user name or password in the URL is refused: expose sends none, and the URL is in its answers.

        Before, it was taken, no C{Authorization} was sent, and every 502 or 504 told the sender the
        password (C{The local server http://admin:secret@... did not answer}).
        """
        for url in ("http://admin:secret@127.0.0.1:8000", "https://token@example.org/app"):
            with self.subTest(url=url):
                with self.assertRaises(ExposeError) as raised:
                    local_base(url)
                self.assertNotIn("secret", str(raised.exception))
                self.assertNotIn("token", str(raised.exception))
        self.assertEqual(local_base("http://127.0.0.1:8000/app/"), "http://127.0.0.1:8000/app")


class DotSegmentTests(ForwarderOverRendezvous, SynchronousTestCase):
    """C{.} and C{..} below the hybrid connection are resolved; none climbs above it (to what is not exposed)."""

    def test_resolved(self) -> None:
        for suffix, resolved in (
            ("", ""),
            ("/a/b", "/a/b"),
            ("/a.b/c.d", "/a.b/c.d"),
            ("/a/./b", "/a/b"),
            ("/a/b/../c", "/a/c"),
            ("/a/b/..", "/a/"),
            ("/a/%2E/b/%2e%2e", "/a/"),
            ("/a/..", "/"),
            ("/.", "/"),
            ("/..", None),
            ("/a/../..", None),
            ("/%2e%2e/secret", None),
            ("/.%2E/secret", None),
        ):
            with self.subTest(suffix=suffix):
                self.assertEqual(resolve_dots(suffix), resolved)

    def test_climbing_request_refused(self) -> None:
        """A request whose path climbs above the hybrid connection gets 400; the local server sees nothing."""
        send_request(self.channel, "GET", "/hyco/a/../../secret.txt")
        self.assertEqual(self.local.connections, [])
        [head] = [
            json.loads(payload)["response"] for kind, payload in self.rendezvous.calls if kind == "text"
        ]
        self.assertEqual(head["statusCode"], 400)

    def test_resolved_request_forwarded(self) -> None:
        send_request(self.channel, "GET", "/hyco/a/./b/../c?x=1")
        [(_protocol, transport)] = self.local.connections
        self.assertTrue(transport.value().startswith(b"GET /a/c?x=1 HTTP/1.1\r\n"))


class BodilessAnswerTests(ForwarderOverRendezvous, SynchronousTestCase):
    """A local HEAD answer written with a body anyway still answers the relay."""

    def test_head_answer_with_body_bytes(self) -> None:
        send_request(self.channel, "HEAD", "/hyco/file")
        [(protocol, transport)] = self.local.connections
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        [head] = [
            json.loads(payload)["response"] for kind, payload in self.rendezvous.calls if kind == "text"
        ]
        self.assertEqual(head["statusCode"], 200)
        self.assertTrue(transport.disconnecting or transport.disconnected)


class WebSocketForwardingTests(SynchronousTestCase):
    """The headers a WebSocket sender's local handshake gets (the relay passes the sender's as sent)."""

    def context(self, headers: dict[str, str], remote: str | None = "203.0.113.9") -> AcceptContext:
        return AcceptContext(
            connection_id="c1",
            request_headers=Headers(headers),
            suffix="/ws",
            query="",
            remote_endpoint=RemoteEndpoint(remote, 5000) if remote is not None else None,
            offered_subprotocols=("chat",),
        )

    def test_forwarding_headers_are_this_hops(self) -> None:
        """A sender's forged X-Forwarded-Host/-Proto go; Via and X-Forwarded-For get this hop appended."""
        headers = websocket_forward_headers(
            self.context(
                {
                    "Host": "relay.example.org",
                    "Upgrade": "websocket",
                    "Sec-WebSocket-Key": "k",
                    "x-forwarded-for": "9.9.9.9",
                    "X-Forwarded-Host": "evil.example",
                    "X-Forwarded-Proto": "https",
                    "Via": "1.1 fake",
                    "X-App": "yes",
                }
            )
        )
        self.assertEqual(
            headers,
            {
                "x-forwarded-for": "9.9.9.9, 203.0.113.9",
                "Via": "1.1 fake, 1.1 relay.example.org",
                "X-App": "yes",
                "X-Forwarded-Host": "relay.example.org",
            },
        )

    def test_without_host_or_address(self) -> None:
        """No Host and no address from the relay: Via names the relay, nothing else is made up."""
        self.assertEqual(websocket_forward_headers(self.context({}, remote=None)), {"Via": "1.1 relay"})

    def test_hop_by_hop_fields_stay_out(self) -> None:
        """
        The sender's hop-by-hop fields, those its Connection names, and a body length stay out.

        They are about the sender's connection to the relay (C{Proxy-Authorization} is a credential for a
        proxy on the way, not for the local server). This relay refuses an upgrade with a body length,
        but a local handshake written with one waits for a body that never comes (twisted.web does).
        """
        headers = websocket_forward_headers(
            self.context(
                {
                    "Host": "relay.example.org",
                    "Connection": "Upgrade, X-Hop",
                    "X-Hop": "1",
                    "Keep-Alive": "timeout=5",
                    "Proxy-Authorization": "Basic c2VjcmV0",
                    "Proxy-Connection": "keep-alive",
                    "TE": "trailers",
                    "Trailer": "X-T",
                    "Transfer-Encoding": "chunked",
                    "Content-Length": "100",
                    "Authorization": "Bearer app",
                    "X-App": "yes",
                }
            )
        )
        self.assertEqual(
            headers,
            {
                "Authorization": "Bearer app",
                "X-App": "yes",
                "Via": "1.1 relay.example.org",
                "X-Forwarded-For": "203.0.113.9",
                "X-Forwarded-Host": "relay.example.org",
            },
        )
