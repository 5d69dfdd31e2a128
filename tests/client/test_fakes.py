"""
Verify the fake relay against the protocol spec, using plain Autobahn clients (not L{relay.client}).

The client's tests lean on L{FakeRelay}; these tests make sure it answers as the spec (sections 2-5)
says a relay does, so a client that passes against the fake is not just agreeing with itself.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.trial.unittest import SynchronousTestCase
from typing_extensions import override

from relay.auth import make_token
from relay.hybrid.addressing import split_target

from .fakes import ROOT_KEY, ROOT_KEY_NAME, SEND_KEY, SEND_KEY_NAME, FakeRelayTestCase


class RawClient(WebSocketClientProtocol):  # type: ignore[misc]
    """An Autobahn client that records what happens to it."""

    def __init__(self) -> None:
        super().__init__()
        self.is_open_now = False
        self.messages: list[tuple[bytes, bool]] = []
        self.close_info: tuple[bool, int | None, str | None] | None = None
        self.status_line: str | None = None
        self.selected: str | None = None

    @override
    def onConnect(self, response: Any) -> None:
        self.selected = response.protocol

    @override
    def onOpen(self) -> None:
        self.is_open_now = True

    @override
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))

    @override
    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_info = (wasClean, code, reason)

    @override
    def failHandshake(self, reason: str) -> None:
        self.status_line = getattr(self, "http_status_line", None)
        super().failHandshake(reason)


class FakeRelaySpecTests(FakeRelayTestCase, SynchronousTestCase):
    def dial(self, url: str, token: str | None = None, protocols: list[str] | None = None) -> RawClient:
        headers = {"ServiceBusAuthorization": token} if token else {}
        factory = WebSocketClientFactory(
            url, reactor=self.reactor, headers=headers, protocols=protocols or []
        )
        factory.protocol = RawClient
        factory.setProtocolOptions(openHandshakeTimeout=0)
        parts = urlsplit(url)
        self.reactor.connectTCP(parts.hostname, parts.port or 80, factory)
        self.network.flush()
        client: RawClient = self.network.protocols[-1]
        return client

    def token(
        self, key_name: str = ROOT_KEY_NAME, key: str = ROOT_KEY, resource: str = "http://relay.test/hyco"
    ) -> str:
        return make_token(resource, key_name, key, ttl=60, now=self.reactor.seconds())

    def listen(self) -> RawClient:
        listener = self.dial("ws://relay.test:80/$hc/hyco?sb-hc-action=listen&sb-hc-id=L1", self.token())
        self.assertTrue(listener.is_open_now)
        return listener

    def test_listen_statuses(self) -> None:
        """Listening: 101 with a Listen token, 401 without or with a bad one, 404 for unknown entities."""
        self.listen()
        self.assertIn(" 401 ", self.dial("ws://relay.test:80/$hc/hyco?sb-hc-action=listen").status_line or "")
        bad = self.dial("ws://relay.test:80/$hc/hyco?sb-hc-action=listen", self.token(key="wrong"))
        self.assertIn(" 401 ", bad.status_line or "")
        send_only = self.dial(
            "ws://relay.test:80/$hc/hyco?sb-hc-action=listen", self.token(SEND_KEY_NAME, SEND_KEY)
        )
        self.assertIn(" 403 ", send_only.status_line or "")
        missing = self.dial("ws://relay.test:80/$hc/nope?sb-hc-action=listen", self.token())
        self.assertIn(" 404 ", missing.status_line or "")

    def test_connect_without_listener(self) -> None:
        """A sender with nobody listening gets 404."""
        sender = self.dial("ws://relay.test:80/$hc/hyco?sb-hc-action=connect", self.token())
        self.assertIn(" 404 ", sender.status_line or "")

    def test_accept_message_and_rendezvous(self) -> None:
        """The accept command has the spec's shape and the sender waits until the listener upgrades."""
        listener = self.listen()
        sender = self.dial(
            "ws://relay.test:80/$hc/hyco/chat?room=1&sb-hc-action=connect&sb-hc-id=my-id",
            self.token(),
            protocols=["chat", "superchat"],
        )
        self.assertFalse(sender.is_open_now)
        [(payload, binary)] = listener.messages
        self.assertFalse(binary)
        accept = json.loads(payload)["accept"]
        self.assertEqual(accept["id"], "my-id")
        target = split_target(urlsplit(accept["address"]).path + "?" + urlsplit(accept["address"]).query)
        self.assertEqual((target.path, target.query), ("/$hc/hyco/chat", "room=1"))
        self.assertEqual((target.param("action"), target.param("id")), ("accept", "my-id"))
        headers = {k.lower(): v for k, v in accept["connectHeaders"].items()}
        self.assertIn("sec-websocket-key", headers)
        self.assertEqual(headers["sec-websocket-version"], "13")
        self.assertNotIn("servicebusauthorization", headers)
        self.assertEqual(accept["remoteEndpoint"]["address"], "203.0.113.7")

        leg = self.dial(accept["address"], protocols=["superchat"])
        self.assertTrue(leg.is_open_now)
        self.assertTrue(sender.is_open_now)
        self.assertEqual((leg.selected, sender.selected), ("superchat", "superchat"))

        sender.sendMessage(b"\x00\x01", isBinary=True)
        leg.sendMessage(b"text")
        self.network.flush()
        self.assertEqual(leg.messages, [(b"\x00\x01", True)])
        self.assertEqual(sender.messages, [(b"text", False)])

        leg.sendClose(4000, "done")
        self.network.flush()
        assert sender.close_info is not None
        self.assertEqual(sender.close_info[1:], (4000, "done"))

        again = self.dial(accept["address"])
        self.assertIn(" 403 ", again.status_line or "")

    def test_reject(self) -> None:
        """A reject upgrade is answered 410 and the sender gets the listener's status and text."""
        listener = self.listen()
        sender = self.dial("ws://relay.test:80/$hc/hyco?sb-hc-action=connect", self.token())
        address = json.loads(listener.messages[0][0])["accept"]["address"]
        leg = self.dial(address + "&sb-hc-statusCode=401&sb-hc-statusDescription=Go+away")
        self.assertIn(" 410 ", leg.status_line or "")
        self.assertEqual(sender.status_line, "HTTP/1.1 401 Go away")

    def test_accept_timeout(self) -> None:
        """A sender nobody accepts within 30 s gets 504."""
        self.listen()
        sender = self.dial("ws://relay.test:80/$hc/hyco?sb-hc-action=connect", self.token())
        self.network.advance(30)
        self.assertIn(" 504 ", sender.status_line or "")

    def test_token_expiry_and_renewal(self) -> None:
        """The control channel closes with 1008 at token expiry unless a valid renewToken came first."""
        listener = self.listen()
        self.network.advance(50)
        renewed = make_token(
            "http://relay.test/", ROOT_KEY_NAME, ROOT_KEY, ttl=60, now=self.reactor.seconds()
        )
        listener.sendMessage(json.dumps({"renewToken": {"token": renewed}}).encode())
        self.network.advance(50)
        self.assertIsNone(listener.close_info)
        self.network.advance(11)
        assert listener.close_info is not None
        self.assertEqual(listener.close_info[1], 1008)

    def test_invalid_renewal(self) -> None:
        """A renewToken with a bad token closes the channel with 1008."""
        listener = self.listen()
        listener.sendMessage(json.dumps({"renewToken": {"token": "SharedAccessSignature nope"}}).encode())
        self.network.flush()
        assert listener.close_info is not None
        self.assertEqual(listener.close_info[1], 1008)
