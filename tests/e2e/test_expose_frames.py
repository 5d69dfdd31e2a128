"""
End to end on loopback: C{relay expose} relays a WebSocket message as its frames come, in both directions.

The sender's rendezvous leg and the local server are Autobahn servers on loopback that stream a large
message in 64 KiB frames (pausing while their socket is full) and count what they receive without
assembling it; the forwarder between them is the real one, with its real local connection. Whatever
the message's size, expose must hold no more than a small constant of it (measured with tracemalloc:
the peers themselves hold at most a frame and a socket buffer).
"""

from __future__ import annotations

import hashlib
import tracemalloc
from typing import cast

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from relay.client.accepting import Accept, AcceptContext
from relay.client.connection import HybridWebSocket
from relay.client.headers import Headers
from relay.client.options import WebSocketOptions
from relay.client.protocol import RelayClientProtocol, open_websocket
from relay.expose import Forwarder

MB = 1024 * 1024
FRAME = 64 * 1024
BIG = 32 * MB
HELD_AT_MOST = 2 * MB
"""What expose may hold of a message in flight: a few socket buffers and reads, whatever the message's size."""


def pattern(total: int) -> bytes:
    """The bytes of a test message: printable ASCII (text or binary), its hash known without holding it."""
    return (bytes(range(32, 127)) * (FRAME // 95 + 1))[:total]


def expected_digest(total: int) -> str:
    digest = hashlib.sha256()
    left = total
    while left:
        n = min(FRAME, left)
        digest.update(pattern(n))
        left -= n
    return digest.hexdigest()


@implementer(IPushProducer)
class Streamer:
    """Writes one message of C{total} bytes as 64 KiB frames, pausing while the socket's buffer is full."""

    def __init__(self, protocol: WebSocketServerProtocol, total: int, binary: bool) -> None:
        self.protocol = protocol
        self.left = total
        self.binary = binary
        self.paused = False
        self.done: Deferred[None] = Deferred()
        self.chunk = pattern(FRAME)

    def start(self) -> Deferred[None]:
        self.protocol.transport.registerProducer(self, True)
        self.protocol.beginMessage(isBinary=self.binary)
        self.resumeProducing()
        return self.done

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.left:
            n = min(FRAME, self.left)
            self.left -= n
            self.protocol.sendMessageFrame(self.chunk[:n] if n < FRAME else self.chunk)
        if not self.left and not self.done.called:
            self.protocol.endMessage()
            self.protocol.transport.unregisterProducer()
            self.done.callback(None)

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True


class Peer(WebSocketServerProtocol):  # type: ignore[misc]
    """A server end that counts the messages it gets frame by frame (nothing assembled) and streams its own."""

    factory: PeerFactory

    def onOpen(self) -> None:
        self.factory.peers.append(self)
        self.received: list[tuple[bool, int, str]] = []
        self.closed: Deferred[tuple[int | None, str | None]] = Deferred()
        self.message_arrived: Deferred[tuple[bool, int, str]] = Deferred()
        if not self.factory.opened.called:
            self.factory.opened.callback(self)

    def onMessageBegin(self, isBinary: bool) -> None:
        self._binary = isBinary
        self._size = 0
        self._digest = hashlib.sha256()

    def onMessageFrameBegin(self, length: int) -> None:
        pass

    def onMessageFrameData(self, payload: bytes) -> None:
        self._size += len(payload)
        self._digest.update(payload)

    def onMessageFrameEnd(self) -> None:
        pass

    def onMessageEnd(self) -> None:
        message = (self._binary, self._size, self._digest.hexdigest())
        self.received.append(message)
        arrived, self.message_arrived = self.message_arrived, Deferred()
        arrived.callback(message)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if hasattr(self, "closed") and not self.closed.called:
            self.closed.callback((code, reason))


class PeerFactory(WebSocketServerFactory):  # type: ignore[misc]
    protocol = Peer

    def __init__(self) -> None:
        super().__init__("ws://127.0.0.1")
        self.peers: list[Peer] = []
        self.opened: Deferred[Peer] = Deferred()


class ExposeFrameRelayTests(TestCase):
    """A large message crosses expose as its frames come: expose's memory does not grow with its size."""

    timeout = 20

    def listen(self) -> tuple[PeerFactory, int]:
        factory = PeerFactory()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port

    async def spliced(self) -> tuple[Peer, Peer, HybridWebSocket]:
        """A sender leg and a local server joined by a real forwarder; returns both peers and the sender."""
        local_factory, local_port = self.listen()
        relay_factory, relay_port = self.listen()
        forwarder = Forwarder(f"http://127.0.0.1:{local_port}", reactor=reactor, log_line=lambda line: None)
        context = AcceptContext("c1", Headers(), "/ws", "", None, ())
        self.assertIsInstance(await forwarder.accept(context), Accept)
        options = WebSocketOptions()

        def receiver(protocol: RelayClientProtocol) -> HybridWebSocket:
            return HybridWebSocket(protocol, tracking_id="c1", options=options, context=context)

        sender = cast(
            HybridWebSocket,
            await open_websocket(
                reactor, f"ws://127.0.0.1:{relay_port}/$hc/hyco", options=options, make_receiver=receiver
            ),
        )
        forwarder.connected(sender)
        local_peer = await local_factory.opened
        relay_peer = await relay_factory.opened

        async def close() -> None:
            if forwarder.connections:
                forwarder.drain()
                for task in list(forwarder.connections):
                    await task

        self.addCleanup(lambda: Deferred.fromCoroutine(close()))
        return relay_peer, local_peer, sender

    async def assert_streamed(self, source: Peer, sink: Peer, binary: bool) -> None:
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        arrived = sink.message_arrived
        await Streamer(source, BIG, binary).start()
        message = await arrived
        peak = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
        self.assertEqual(message, (binary, BIG, expected_digest(BIG)))
        self.assertLess(peak, HELD_AT_MOST, f"expose held {peak / MB:.1f} MiB of a {BIG // MB} MiB message")

    async def test_sender_to_local_binary(self) -> None:
        """A 32 MiB binary message from the sender reaches the local server whole, expose holding little of it."""
        relay_peer, local_peer, _ = await self.spliced()
        await self.assert_streamed(relay_peer, local_peer, binary=True)

    async def test_local_to_sender_text(self) -> None:
        """A 32 MiB text message from the local server reaches the sender as text, expose holding little of it."""
        relay_peer, local_peer, _ = await self.spliced()
        await self.assert_streamed(local_peer, relay_peer, binary=False)

    async def test_close_codes_and_reasons_pass_through(self) -> None:
        """A close from either side reaches the other with its code and reason."""
        for closing_side in ("sender", "local"):
            relay_peer, local_peer, _ = await self.spliced()
            source, sink = (relay_peer, local_peer) if closing_side == "sender" else (local_peer, relay_peer)
            source.sendClose(4001, "bye from the " + closing_side)
            self.assertEqual(await sink.closed, (4001, "bye from the " + closing_side))
            await source.closed
