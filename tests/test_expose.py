"""Tests for L{relay.expose}: what C{relay expose} answers the relay for its local server's responses."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

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
