"""
Request bodies the gateway would buffer whole, on the in-memory gateway (no sockets).

Upgrades that announce a body, and the C{http_max_buffered_body} limit.
"""

from __future__ import annotations

import json

from relay.hybrid.direct import DirectLeg
from relay.web import DEFAULT_MAX_BUFFERED_BODY

from .httpharness import RawHttpClient
from .test_http import HttpTestCase
from .wsharness import HOST, GatewayTestCase

LIMIT = 65536


def upgrade_head(target: str, fields: str) -> bytes:
    """A sender's WebSocket upgrade head to C{target}, with extra header C{fields} (CRLF-terminated)."""
    return (
        f"GET {target} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{fields}\r\n"
    ).encode("latin-1")


class DefaultLimitTests(GatewayTestCase):
    """The limit without configuration."""

    def test_default_reaches_the_site(self) -> None:
        """The gateway's site buffers at most 64 MiB, the largest SOAP message a binding name may allow."""
        self.assertEqual(self.gateway.site.max_buffered_body, DEFAULT_MAX_BUFFERED_BODY)  # type: ignore[attr-defined]
        self.assertEqual(DEFAULT_MAX_BUFFERED_BODY, 64 * 1024 * 1024)


class BufferedBodyTests(HttpTestCase):
    """A gateway with C{http_max_buffered_body = 65536}."""

    def limits(self) -> dict[str, float]:
        return {"http_max_buffered_body": float(LIMIT)}

    def raw_sender(self) -> RawHttpClient:
        sender = self.sender()
        sender.methods.append("GET")
        return sender

    def assert_refused(self, sender: RawHttpClient, status: int, cause: bytes) -> None:
        (reply,) = sender.replies
        self.assertEqual(reply.status, status)
        self.assertIn(cause, reply.body)
        self.assertIn(b"TrackingId:", reply.body)
        self.assertEqual(reply.header("Server"), "relay")  # as the relay's other answers
        self.assertNotEqual(reply.reason, "Error")
        self.assertTrue(sender.server_transport.disconnecting)  # type: ignore[attr-defined]
        self.assertIsNotNone(sender.lost)

    def test_limit_reaches_the_site(self) -> None:
        """The configured limit is the site's."""
        self.assertEqual(self.gateway.site.max_buffered_body, LIMIT)  # type: ignore[attr-defined]

    def test_sender_upgrade_with_a_chunked_body(self) -> None:
        """
        A sender's C{$hc} upgrade with a valid token and a chunked body gets 400 from its head.

        Its listener hears nothing, no leg is made, and the 640 KiB that follow are never read.
        """
        listener = self.listen()
        messages = len(listener.messages)
        sender = self.raw_sender()
        sender.send(
            upgrade_head(
                "/$hc/hyco?sb-hc-action=connect",
                f"ServiceBusAuthorization: {self.token()}\r\nTransfer-Encoding: chunked\r\n",
            )
        )
        for _ in range(10):
            sender.chunk(b"a" * 65536)
        self.net.flush()
        self.assert_refused(sender, 400, b"A WebSocket upgrade request must not have a body")
        self.assertEqual(len(listener.messages), messages)
        self.assertFalse(any(isinstance(c, DirectLeg) for c in self.gateway.hybrid_factory.connections))

    def test_sender_upgrade_with_a_content_length(self) -> None:
        """An upgrade announcing C{Content-Length: 10000000} gets 400 before any of it is read."""
        self.listen()
        sender = self.raw_sender()
        sender.send(upgrade_head("/$hc/hyco?sb-hc-action=connect", "Content-Length: 10000000\r\n"))
        sender.send(b"b" * 65536)
        self.net.flush()
        self.assert_refused(sender, 400, b"must not have a body")

    def test_unknown_host_with_a_large_body(self) -> None:
        """A large body for a host no namespace serves gets 404 from the head; nothing of it is read."""
        sender = self.sender()
        sender.methods.append("POST")
        sender.send(
            b"POST /anything HTTP/1.1\r\nHost: elsewhere.test\r\nContent-Length: %d\r\n\r\n" % (LIMIT + 1)
        )
        self.net.flush()
        self.assert_refused(sender, 404, b"No namespace is served under this host name")

    def test_unknown_name_with_a_chunked_body(self) -> None:
        """A chunked body for a name that does not exist gets 404 from the head, before any chunk."""
        sender = self.sender()
        sender.request("POST", "/nobody-here", chunked=True)
        self.net.flush()
        self.assert_refused(sender, 404, b"No entity with this name")

    def test_chunked_body_above_the_limit_is_cut(self) -> None:
        """Without the early refusal (a site that routes everything), a chunked body is cut with 413."""
        self.gateway.site.unrouted = None  # type: ignore[attr-defined]
        sender = self.sender()
        sender.request("POST", "/anything", chunked=True, host="elsewhere.test")
        sender.chunk(b"c" * 60000)
        self.net.flush()
        self.assertEqual(sender.replies, [])
        sender.chunk(b"c" * 60000)
        self.net.flush()
        self.assert_refused(sender, 413, b"larger than 65536 bytes")

    def test_body_within_the_limit_is_routed(self) -> None:
        """A small body is read and routed as before (here: no namespace, 404), and the connection stays."""
        sender = self.sender()
        sender.request("POST", "/anything", body=b"d" * LIMIT, host="elsewhere.test")
        self.net.flush()
        self.assertEqual(sender.reply.status, 404)
        self.assertFalse(sender.server_transport.disconnecting)  # type: ignore[attr-defined]

    def test_relayed_body_beyond_the_limit_streams(self) -> None:
        """An HTTP request relayed to a hybrid connection streams a body four times the limit, whole."""
        listener = self.listen()
        sender = self.sender()
        body = bytes(range(256)) * 1024
        sender.request("POST", "/hyco/up", self.auth(), body)
        self.net.flush()
        announcement = self.last_request(listener)
        rendezvous = self.net.connect(announcement["address"])
        (head, _), (received, binary) = rendezvous.messages
        self.assertEqual((received, binary), (body, True))
        request = json.loads(head)["request"]
        self.respond(rendezvous, request["id"], status=201, body=b"stored")
        self.assertEqual((sender.reply.status, sender.reply.body), (201, b"stored"))
