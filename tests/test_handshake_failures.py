"""
Upgrades that fail in Autobahn after the gateway took them on: nobody is left waiting, nothing left open.

An C{Origin} header sends an upgrade through Autobahn's handshake (browsers always send one); Autobahn
reads the extension offer only after C{onConnect}, so a malformed permessage-deflate offer fails the
handshake (400) once the gateway has already claimed a ticket or paired a sender.
"""

from __future__ import annotations

import json

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher

from .wsharness import GatewayTestCase, RecordingClient

BAD_OFFER = {"Origin": "http://example", "Sec-WebSocket-Extensions": "permessage-deflate; bogus=1"}


class HandshakeFailureTests(GatewayTestCase):
    def address(self, listener: RecordingClient) -> str:
        address: str = json.loads(listener.messages[-1][0])["accept"]["address"]
        return address

    def test_listener_rendezvous_fails_after_its_claim(self) -> None:
        """The sender whose ticket the failed rendezvous claimed is refused at once (502)."""
        listener = self.listen()
        sender = self.send()
        rendezvous = self.net.connect(self.address(listener), headers=BAD_OFFER)
        self.assertEqual(rendezvous.status, 400)
        self.net.flush()
        self.assertEqual(sender.status, 502)

    def test_sender_fails_after_its_listener_accepted(self) -> None:
        """The listener's rendezvous, accepted for a sender whose handshake then failed, is closed (1001)."""
        listener = self.listen()
        sender = self.send(headers_extra=BAD_OFFER)
        rendezvous = self.net.connect(self.address(listener))
        self.assertEqual((rendezvous.status, sender.status), (101, 400))
        self.net.flush()
        self.assertIsNotNone(rendezvous.closed)
        self.assertEqual(rendezvous.closed[1], 1001)  # type: ignore[index]


class UnknownControlMessageTests(GatewayTestCase):
    def test_one_line_per_message(self) -> None:
        """However many unknown keys a control message holds, it is one log line naming a few."""
        listener = self.listen()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        listener.sendMessage(json.dumps({f"k{i}": 0 for i in range(10_000)}).encode())
        self.net.flush()
        lines = [formatEvent(e) for e in events if "ignored unknown control message" in formatEvent(e)]
        self.assertEqual(len(lines), 1)
        self.assertIn("'k0', 'k1', 'k2', 'k3', 'k4' (10000 in all)", lines[0])
        self.assertIsNone(listener.closed)
