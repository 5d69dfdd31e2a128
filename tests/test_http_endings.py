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


class RelayedBytesTests(HttpTestCase):
    """C{relay_bytes_transferred_total} counts request bodies only as far as they reached a listener."""

    def relayed(self) -> float:
        return self.gateway.metrics.value("relay_bytes_transferred_total", entity="hyco")

    def test_body_never_fetched(self) -> None:
        """A large upload announced for a rendezvous the listener never opens relayed nothing (504)."""
        self.listen()
        sender = self.sender()
        sender.request("POST", "/hyco/up", self.auth(), b"u" * 100_000)
        self.net.flush()
        self.net.advance(31)  # past the rendezvous timeout
        self.assertEqual(sender.reply.status, 504)
        self.assertEqual(self.relayed(), 0)

    def test_body_fetched_and_streamed(self) -> None:
        """A fetched upload counts what went into the rendezvous, plus the answer's body."""
        listener = self.listen()
        sender = self.sender()
        sender.request("POST", "/hyco/up", self.auth(), b"u" * 100_000)
        self.net.flush()
        announced = self.last_request(listener)
        rendezvous = self.net.connect(announced["address"])
        self.net.flush()
        self.respond(rendezvous, announced["id"], body=b"done")
        self.assertEqual((sender.reply.status, sender.reply.body), (200, b"done"))
        uploaded = sum(len(payload) for payload, binary in rendezvous.messages if binary)
        self.assertEqual(uploaded, 100_000)
        self.assertEqual(self.relayed(), 100_000 + 4)
