"""Tests for L{relay.client.connection.HybridWebSocket}, driven through the fake relay."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from bindings.wsclient import SoapClientProtocol
from relay import wsdata
from relay.client import (
    ConnectionClosedError,
    HybridConnectionClient,
    HybridConnectionListener,
    HybridWebSocket,
    WebSocketOptions,
)
from relay.client.protocol import IWebSocketReceiver, RelayClientProtocol

from .fakes import FakeRelayTestCase
from .network import ClientTransport


class ConnectionTestCase(FakeRelayTestCase):
    """Opens a listener and connects a sender to it, both ending in a L{HybridWebSocket}."""

    def pair(
        self, listener_options: WebSocketOptions | None = None, sender_options: WebSocketOptions | None = None
    ) -> tuple[HybridWebSocket, HybridWebSocket]:
        listener = HybridConnectionListener(
            "ws://relay.test:80", "hyco", self.root_tokens(), reactor=self.reactor, options=listener_options
        )
        self.successResultOf(self.pump(listener.open()))
        client = HybridConnectionClient(
            "ws://relay.test:80", "hyco", self.root_tokens(), reactor=self.reactor, options=sender_options
        )
        sender = self.successResultOf(self.pump(client.connect()))
        accepted = self.successResultOf(self.pump(listener.accept_connection()))
        assert accepted is not None
        return sender, accepted

    def pump(self, d: Deferred[Any]) -> Deferred[Any]:
        self.network.flush()
        return d

    def send_fragmented(self, connection: HybridWebSocket) -> None:
        """Send the text message C{"fragm\u00e9nt"} in two frames, with a ping between them."""
        peer = connection._protocol
        peer.beginMessage(isBinary=False)
        peer.sendMessageFrame(b"frag")
        peer.sendPing(b"between")
        peer.sendMessageFrame("m\u00e9nt".encode())
        peer.endMessage()

    def transport(self, connection: HybridWebSocket) -> ClientTransport:
        transport = connection._transport
        assert isinstance(transport, ClientTransport)
        return transport


class MessageTests(ConnectionTestCase, SynchronousTestCase):
    def test_interfaces(self) -> None:
        """The connection is a receiver for its protocol and its write gate is a push producer."""
        sender, _accepted = self.pair()
        verifyObject(IWebSocketReceiver, sender)
        verifyObject(IPushProducer, sender._gate)

    def test_types_are_preserved(self) -> None:
        """C{str} travels as text and arrives as C{str}; bytes-like data as binary, arriving as bytes."""
        sender, accepted = self.pair()
        for message in ("héllo", b"\x00\xff", bytearray(b"ba"), memoryview(b"mv")):
            self.successResultOf(sender.send(message))
        self.network.flush()
        received = [self.successResultOf(accepted.receive()) for _ in range(4)]
        self.assertEqual(received, ["héllo", b"\x00\xff", b"ba", b"mv"])
        accepted.send(b"back")
        self.network.flush()
        self.assertEqual(self.successResultOf(sender.receive()), b"back")

    def test_whole_messages_skip_autobahns_parser(self) -> None:
        """Whole text and binary messages arrive without Autobahn's frame parser (L{relay.wsfast})."""
        sender, accepted = self.pair()
        protocol = accepted._protocol
        parsed: list[bytes] = []
        real = protocol._dataReceived

        def spy(data: bytes) -> None:
            parsed.append(data)
            real(data)

        self.patch(protocol, "_dataReceived", spy)
        sender.send("whole")
        sender.send(b"\x00binary")
        self.network.flush()
        self.assertEqual(parsed, [])
        received = [self.successResultOf(accepted.receive()) for _ in range(2)]
        self.assertEqual(received, ["whole", b"\x00binary"])

    def test_fragmented_message_with_a_ping_inside(self) -> None:
        """A message the peer sends in fragments, with a ping between them, arrives whole and in order."""
        sender, accepted = self.pair()
        self.send_fragmented(sender)
        sender.send(b"next")
        self.network.flush()
        received = [self.successResultOf(accepted.receive()) for _ in range(2)]
        self.assertEqual(received, ["fragm\u00e9nt", b"next"])

    def test_pings_from_a_peer_that_does_not_read_get_no_pongs(self) -> None:
        """
        Past a full write queue, a ping is left unanswered (RFC 6455 allows it); later ones are answered.

        The relay answers senders' pings itself; what can ping a client protocol is the relay (control
        channels) or, for C{relay expose}, the local WebSocket server. The bindings' client does the same.
        """
        for protocol_class in (RelayClientProtocol, SoapClientProtocol):
            protocol = protocol_class()
            protocol.state = protocol.STATE_OPEN
            protocol.transport = StringTransport()
            pongs: list[bytes] = []
            protocol.sendPong = pongs.append
            queued = {"bytes": wsdata.PONG_BACKLOG_LIMIT}
            self.patch(wsdata, "pending_write_bytes", lambda transport, queued=queued: queued["bytes"])
            for _ in range(50):
                protocol.onPing(b"p")
            self.assertEqual(pongs, [], protocol_class)
            queued["bytes"] = 0
            protocol.onPing(b"q")
            self.assertEqual(pongs, [b"q"], protocol_class)

    def test_unsupported_type(self) -> None:
        """Anything but text or bytes is a programming error, raised at once."""
        sender, _ = self.pair()
        self.assertRaises(TypeError, sender.send, 42)

    def test_receive_waits_and_can_be_cancelled(self) -> None:
        """A receive waits for the next message; a cancelled wait does not swallow one."""
        sender, accepted = self.pair()
        waiting = accepted.receive()
        self.assertNoResult(waiting)
        waiting.cancel()
        self.failureResultOf(waiting)
        second = accepted.receive()
        sender.send("one")
        self.network.flush()
        self.assertEqual(self.successResultOf(second), "one")

    def test_async_iteration(self) -> None:
        """C{async for} yields messages in order and ends when the peer closes."""
        sender, accepted = self.pair()
        seen: list[Any] = []

        async def consume() -> None:
            async for message in accepted:
                seen.append(message)

        done = Deferred.fromCoroutine(consume())
        sender.send("a")
        sender.send(b"b")
        self.network.flush()
        self.assertEqual(seen, ["a", b"b"])
        self.assertNoResult(done)
        sender.close()
        self.network.flush()
        self.successResultOf(done)


class CloseTests(ConnectionTestCase, SynchronousTestCase):
    def test_close_code_and_reason_reach_the_peer(self) -> None:
        """The code and reason one side closes with are what the other side reports."""
        sender, accepted = self.pair()
        closing = accepted.close(4001, "bye")
        self.network.flush()
        self.successResultOf(closing)
        self.assertIsNone(self.successResultOf(sender.receive()))
        self.assertEqual((sender.close_code, sender.close_reason, sender.was_clean), (4001, "bye", True))
        self.assertTrue(accepted.closed)
        self.successResultOf(sender.when_closed())

    def test_drop_without_handshake(self) -> None:
        """A connection lost without a closing handshake reports 1006; the relay tells the peer 1001."""
        sender, accepted = self.pair()
        self.transport(sender).loseConnection()
        self.network.flush()
        self.assertEqual((sender.close_code, sender.was_clean), (1006, False))
        self.assertEqual(accepted.close_code, 1001)

    def test_send_after_close(self) -> None:
        """Sending on a closing or closed connection fails with L{ConnectionClosedError}."""
        sender, _ = self.pair()
        sender.close()
        self.failureResultOf(sender.send("late"), ConnectionClosedError)
        self.network.flush()
        self.failureResultOf(sender.send("later"), ConnectionClosedError)
        self.successResultOf(sender.close())

    def test_invalid_close(self) -> None:
        """Reserved close codes and over-long reasons are refused before anything is sent."""
        sender, _ = self.pair()
        for code in (999, 1004, 1005, 1006, 1015, 2000, 5000):
            self.assertRaises(ValueError, sender.close, code)
        self.assertRaises(ValueError, sender.close, 1000, "x" * 124)
        self.assertFalse(sender.closed)

    def test_messages_after_local_close_are_dropped(self) -> None:
        """Once the application closed, late messages from the peer are not queued."""
        sender, accepted = self.pair()
        sender.send("before")
        self.network.flush()
        accepted.close()
        sender.send("after")
        self.network.flush()
        self.assertEqual(self.successResultOf(accepted.receive()), "before")
        self.assertIsNone(self.successResultOf(accepted.receive()))


class BackPressureTests(ConnectionTestCase, SynchronousTestCase):
    def test_slow_reader_pauses_the_transport(self) -> None:
        """
        Unread messages beyond C{receive_buffer} stop reading from the network.

        Reading resumes once the queue is down to half, and nothing is lost or reordered.
        """
        sender, accepted = self.pair(listener_options=WebSocketOptions(receive_buffer=1000))
        transport = self.transport(accepted)
        messages = [bytes([i]) * 300 for i in range(10)]
        for message in messages:
            sender.send(message)
            self.network.flush()
        self.assertTrue(accepted.reading_paused)
        self.assertTrue(transport.reading_paused)
        self.assertEqual(accepted.queued_bytes, 1200)
        self.assertGreater(transport.held_bytes, 0)

        received = [self.successResultOf(accepted.receive()) for _ in range(2)]
        self.assertTrue(transport.reading_paused, "600 bytes still queued: above the low-water mark")
        received.append(self.successResultOf(accepted.receive()))
        self.assertEqual(transport.pause_count, 2, "resumed at 300 bytes, paused again by held data")
        while len(received) < len(messages):
            self.network.flush()
            received.append(self.successResultOf(accepted.receive()))
        self.assertEqual(received, messages)
        self.assertGreaterEqual(transport.pause_count, 2)
        self.assertFalse(accepted.reading_paused)

    def test_close_while_paused(self) -> None:
        """Closing a paused connection resumes reading, so the closing handshake can complete."""
        sender, accepted = self.pair(listener_options=WebSocketOptions(receive_buffer=100))
        for _ in range(5):
            sender.send(b"x" * 100)
        self.network.flush()
        self.assertTrue(self.transport(accepted).reading_paused)
        closing = accepted.close()
        self.network.flush()
        self.successResultOf(closing)
        self.assertTrue(sender.closed)

    def test_send_waits_for_the_transport(self) -> None:
        """While the transport's buffer is above its mark, C{send} waits; draining releases it in order."""
        sender, accepted = self.pair()
        self.transport(sender).write_high_water = 100
        first = sender.send(b"a" * 500)
        second = sender.send(b"b" * 10)
        self.assertNoResult(first)
        self.assertNoResult(second)
        order: list[str] = []
        first.addCallback(lambda _: order.append("first"))
        second.addCallback(lambda _: order.append("second"))
        self.network.flush()
        self.assertEqual(order, ["first", "second"])
        self.successResultOf(sender.send(b"c"))
        self.assertEqual(self.successResultOf(accepted.receive()), b"a" * 500)

    def test_send_waiter_fails_when_connection_drops(self) -> None:
        """A sender waiting for buffer space learns that the connection is gone."""
        sender, _ = self.pair()
        self.transport(sender).write_high_water = 10
        waiting = sender.send(b"z" * 100)
        self.assertNoResult(waiting)
        sender.abort()
        self.network.flush()
        self.failureResultOf(waiting, ConnectionClosedError)
