"""How a relayed HTTP exchange ends: what it leaves behind on the rendezvous, and what it counts."""

from __future__ import annotations

import json

from .test_http import TIMEOUT, HttpTestCase


class DownloadEndTests(HttpTestCase):
    """The end of a streamed answer while the sender's buffer is full."""

    def test_rendezvous_read_again_after_the_body_ended_paused(self) -> None:
        """
        The body's last frame fills the sender's buffer: the rendezvous kept for the sender is read again.

        The sender's resume comes after the exchange ended and reaches no producer; a rendezvous left
        paused would carry the sender's next request and never read its answer (a 504 after the timeout).
        """
        listener = self.listen()
        sender = self.sender()
        sender.request("POST", "/hyco/up", self.auth(), b"u" * 70000)  # too large: over a rendezvous
        self.net.flush()
        announced = self.last_request(listener)
        rendezvous = self.net.connect(announced["address"])
        self.respond(rendezvous, announced["id"], streamed=True)
        side = sender.server_transport
        write = side.write

        def write_to_full_buffer(data: bytes) -> None:  # as a TCP transport past its high-water mark
            write(data)
            if len(data) > 50_000 and side.producer is not None:
                side.producer.pauseProducing()

        side.write = write_to_full_buffer  # type: ignore[method-assign]
        rendezvous.sendMessage(b"x" * 100_000, isBinary=True)  # the whole body in one final frame
        self.net.flush()
        self.assertEqual(self.gateway.http.exchanges, set())
        self.assertEqual((sender.reply.complete, len(sender.reply.body)), (True, 100_000))
        self.assertIsNone(rendezvous.closed)  # kept for the sender's next request
        self.assertFalse(rendezvous.server_transport.reading_paused)

        side.write = write  # type: ignore[method-assign]
        sender.request("GET", "/hyco/next", self.auth())
        self.net.flush()
        following = json.loads(rendezvous.messages[-1][0])["request"]
        self.assertEqual(following["requestTarget"], "/hyco/next")
        self.respond(rendezvous, following["id"], body=b"next")
        self.assertEqual((sender.reply.status, sender.reply.body), (200, b"next"))

    def test_paused_rendezvous_closed_readable(self) -> None:
        """A failed exchange closes a rendezvous it had paused with reading resumed (its close handshake)."""
        _listener, sender, request, rendezvous = self.answer_over_rendezvous("/hyco/cut")
        self.respond(rendezvous, request["id"], streamed=True, headers={"Content-Length": "5000"})
        rendezvous.beginMessage(isBinary=True)
        rendezvous.sendMessageFrame(b"x" * 1000)
        self.net.flush()
        sender.server_transport.producer.pauseProducing()
        self.assertTrue(rendezvous.server_transport.reading_paused)
        self.net.advance(TIMEOUT + 1)  # waiting for a full sender is no stall of the listener
        self.assertTrue(rendezvous.server_transport.reading_paused)
        sender.server_transport.loseConnection()  # the sender goes away mid-body
        self.net.flush()
        self.assertEqual(self.gateway.http.exchanges, set())
        self.assertFalse(rendezvous.server_transport.reading_paused)
