"""
Tests for L{HybridWebSocket.relay_to}: one connection's messages written to another as their frames come.

Two sender/listener pairs through the fake relay; the first pair's listener end is relayed to the second
pair's listener end, so what the first sender sends reaches the second sender.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from relay.client import HybridConnectionClient, HybridConnectionListener, HybridWebSocket, WebSocketOptions
from relay.client.protocol import IRelayingReceiver

from .test_connection import ConnectionTestCase

MB = 1024 * 1024


class RelayToTests(ConnectionTestCase, SynchronousTestCase):
    def relayed(
        self, options: WebSocketOptions | None = None
    ) -> tuple[HybridWebSocket, HybridWebSocket, HybridWebSocket, HybridWebSocket]:
        """C{(origin, source, sink, destination)}: what C{origin} sends, C{source} relays to C{sink}."""
        listener = HybridConnectionListener(
            "ws://relay.test:80", "hyco", self.root_tokens(), reactor=self.reactor, options=options
        )
        self.successResultOf(self.pump(listener.open()))
        client = HybridConnectionClient(
            "ws://relay.test:80", "hyco", self.root_tokens(), reactor=self.reactor
        )
        ends: list[HybridWebSocket] = []
        for _ in range(2):
            ends.append(self.successResultOf(self.pump(client.connect())))
            accepted = self.successResultOf(self.pump(listener.accept_connection()))
            assert accepted is not None
            ends.append(accepted)
        origin, source, destination, sink = ends
        return origin, source, sink, destination

    def receive_all(self, connection: HybridWebSocket, count: int) -> list[object]:
        self.network.flush()
        return [self.successResultOf(connection.receive()) for _ in range(count)]

    def test_types_sizes_and_order(self) -> None:
        """Text stays text and binary binary, empty ones too; a fragmented message arrives whole, in order."""
        origin, source, sink, destination = self.relayed()
        self.assertFalse(source.streaming)
        relaying = source.relay_to(sink)
        self.assertTrue(source.streaming)
        self.assertTrue(IRelayingReceiver.providedBy(source))
        origin.send("h\u00e9llo")
        origin.send(b"\x00\xff")
        origin.send("")
        origin.send(b"")
        self.send_fragmented(origin)
        big = bytes(range(256)) * (3 * MB // 256)
        origin.send(big)
        received = self.receive_all(destination, 6)
        self.assertEqual(received, ["h\u00e9llo", b"\x00\xff", "", b"", "fragm\u00e9nt", big])
        self.assertNoResult(relaying)
        origin.close(4001, "done")
        self.network.flush()
        self.successResultOf(relaying)

    def test_no_size_limit_applies_to_what_is_relayed(self) -> None:
        """A message larger than the source's C{max_message_size} is relayed (nothing is assembled)."""
        origin, source, sink, destination = self.relayed(WebSocketOptions(max_message_size=1 * MB))
        source.relay_to(sink)
        big = b"x" * (2 * MB)
        origin.send(big)
        self.assertEqual(self.receive_all(destination, 1), [big])
        self.assertFalse(source.closed)

    def test_queued_messages_go_first(self) -> None:
        """Messages that arrived before L{relay_to} are relayed first, in order, then the rest."""
        origin, source, sink, destination = self.relayed()
        origin.send("one")
        origin.send(b"two")
        self.network.flush()
        self.assertEqual(source.queued_bytes, 6)
        source.relay_to(sink)
        self.assertEqual(source.queued_bytes, 0)
        origin.send("three")
        self.assertEqual(self.receive_all(destination, 3), ["one", b"two", "three"])

    def test_paused_reading_waits_for_relay_to(self) -> None:
        """L{HybridWebSocket.pause_reading} holds what comes until L{relay_to} (nothing is queued meanwhile)."""
        origin, source, sink, destination = self.relayed()
        source.pause_reading()
        origin.send(b"early")
        self.network.flush()
        self.assertTrue(self.transport(source).reading_paused)
        self.assertEqual(source.queued_bytes, 0)
        source.relay_to(sink)
        self.assertFalse(self.transport(source).reading_paused)
        self.assertEqual(self.receive_all(destination, 1), [b"early"])

    def test_a_full_sink_stops_reading_the_source(self) -> None:
        """
        While the sink's write buffer is above its mark the source is not read; once it drains, it is.

        What comes meanwhile waits in the network, not here, and arrives in order.
        """
        origin, source, sink, destination = self.relayed()
        source.relay_to(sink)
        sink_transport = self.transport(sink)
        sink_transport.write_high_water = 64 * 1024
        sink_transport.stalled = True
        first, second = b"1" * (3 * MB), b"2" * (3 * MB)
        origin.send(first)
        self.network.flush()
        self.assertTrue(self.transport(source).reading_paused)
        self.assertTrue(source.reading_paused)
        unsent = sink_transport.unsent_bytes
        origin.send(second)
        self.network.flush()
        self.assertEqual(sink_transport.unsent_bytes, unsent)
        self.assertGreater(self.transport(source).held_bytes, 3 * MB)
        sink_transport.stalled = False
        self.assertEqual(self.receive_all(destination, 2), [first, second])
        self.assertFalse(self.transport(source).reading_paused)

    def test_messages_after_the_sink_closed_are_discarded(self) -> None:
        """Once the sink is closing, what the source sends goes nowhere and nothing fails."""
        origin, source, sink, destination = self.relayed()
        source.relay_to(sink)
        sink.close(1001, "gone")
        origin.send(b"late")
        origin.send(b"z" * (2 * MB))
        self.network.flush()
        self.assertTrue(sink.closed)
        self.assertFalse(source.closed)
        self.assertIsNone(self.successResultOf(destination.receive()))

    def test_a_message_begun_before_relaying_ends_as_it_began(self) -> None:
        """A fragmented message half read when relaying starts is finished whole, then relayed whole."""
        _origin, source, sink, destination = self.relayed()
        protocol = source._protocol  # fragments as the relay would pass them on (the fake relay joins them)
        protocol.dataReceived(b"\x01\x0cfirst half, ")
        source.relay_to(sink)
        protocol.dataReceived(b"\x80\x0bsecond half")
        protocol.dataReceived(b"\x82\x05after")
        self.assertEqual(self.receive_all(destination, 2), ["first half, second half", b"after"])

    def test_a_character_split_between_frames(self) -> None:
        """Text is relayed piece by piece as it comes, even when a piece ends inside a character."""
        _origin, source, sink, destination = self.relayed()
        source.relay_to(sink)
        protocol = source._protocol
        protocol.dataReceived(b"\x01\x04caf\xc3")
        protocol.dataReceived(b"\x80\x01\xa9")
        self.assertEqual(self.receive_all(destination, 1), ["caf\u00e9"])
