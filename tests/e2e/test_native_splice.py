"""
End to end on loopback: the splice's native thread in a real gateway, with raw Autobahn clients.

The pair goes to the thread once both legs are joined and comes back to Python for what only Python
does: pings (answered by the gateway), closes, a leg that vanishes, the gateway's stop. Every byte must
arrive once and in order across those hand-overs, and the counts must add up.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from relay.hybrid import bridge
from relay.hybrid.bridge import Splice
from relay.hybrid.frames import OP_BINARY, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, FrameRelay
from relay.hybrid.native import REASON_NOMEM

from ..nativeneed import native_module
from ..test_frames import masked
from .gateway import RunningGateway, start_gateway
from .test_gateway_smoke import Client, connect
from .test_hybrid_python import until


class PongClient(Client):
    """A raw client that also records the pongs it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.pongs: list[bytes] = []

    def onPong(self, payload: bytes) -> None:
        self.pongs.append(payload)


class Pair:
    """A listener's control channel, a sender and the listener's rendezvous leg, joined by a gateway."""

    def __init__(
        self, gateway: RunningGateway, control: Client, sender: PongClient, rendezvous: Client
    ) -> None:
        self.gateway = gateway
        self.control = control
        self.sender = sender
        self.rendezvous = rendezvous

    @property
    def splice(self) -> Splice:
        (splice,) = self.gateway.service.hybrid_factory.splices
        return splice

    async def on_thread(self) -> None:
        """Send a first message each way, then wait until the native thread relays the pair."""
        self.sender.sendMessage(b"first", isBinary=True)
        self.rendezvous.sendMessage(b"first", isBinary=True)
        assert await self.rendezvous.next_message() == (b"first", True)
        assert await self.sender.next_message() == (b"first", True)
        await until(lambda: self.splice.native_handle is not None)


async def join(gateway: RunningGateway, control: Client | None = None) -> Pair:
    """Open a listener (unless given its control channel), a sender that can ping, and their rendezvous."""
    auth = {"ServiceBusAuthorization": gateway.token("hyco")}
    if control is None:
        control = await connect(f"{gateway.ws_url}/$hc/hyco?sb-hc-action=listen", auth)
    sender_connecting = Deferred.fromCoroutine(
        connect(f"{gateway.ws_url}/$hc/hyco?sb-hc-action=connect", auth, protocol=PongClient)
    )
    payload, _ = await control.next_message()
    rendezvous = await connect(json.loads(payload)["accept"]["address"])
    sender: Any = await sender_connecting
    return Pair(gateway, control, sender, rendezvous)


class NativeSpliceTests(TestCase):
    """A gateway with the native thread (the default where the extension is built)."""

    timeout = 60

    def setUp(self) -> None:
        native_module()
        # hand pairs over at their first read, so that each test's traffic runs on the thread
        self.patch(bridge, "HAND_OVER_AFTER_READS", 1)

    async def pair(self, **limits: float) -> Pair:
        gateway = await start_gateway(self, limits=limits)
        pair = await join(gateway)
        self.addCleanup(self.close, pair)
        return pair

    async def close(self, pair: Pair) -> None:
        for client in (pair.sender, pair.rendezvous, pair.control):
            if client.state != client.STATE_CLOSED:
                client.sendClose(1000)
                await client.closed

    async def echo(self, pair: Pair, messages: list[bytes]) -> None:
        """Each message goes sender to listener and back, unchanged, text and binary alternating."""
        for i, message in enumerate(messages):
            binary = i % 2 == 0
            pair.sender.sendMessage(message if binary else message.hex().encode(), isBinary=binary)
            got = await pair.rendezvous.next_message()
            self.assertEqual(got, (message if binary else message.hex().encode(), binary))
            pair.rendezvous.sendMessage(*got)
            self.assertEqual(await pair.sender.next_message(), got)

    async def test_the_steady_state_runs_on_the_thread(self) -> None:
        """Once joined, the pair is relayed by the thread; messages of every header size arrive intact."""
        pair = await self.pair()
        await pair.on_thread()
        self.assertEqual(len(pair.gateway.service.hybrid_factory.native), 1)
        self.assertEqual(pair.gateway.service.metrics.value("relay_native_splice_pairs"), 1)
        await self.echo(
            pair, [b"", b"x", os.urandom(125), os.urandom(126), os.urandom(70000), os.urandom(1 << 20)]
        )
        self.assertIsNotNone(pair.splice.native_handle)

    async def test_a_ping_is_answered_and_the_pair_goes_back_to_the_thread(self) -> None:
        """The gateway answers a sender's ping (in Python); then the thread relays again."""
        pair = await self.pair()
        await pair.on_thread()
        pair.sender.sendMessage(b"before", isBinary=True)
        pair.sender.sendPing(b"are you there")
        pair.sender.sendMessage(b"after", isBinary=True)
        self.assertEqual(await pair.rendezvous.next_message(), (b"before", True))
        self.assertEqual(await pair.rendezvous.next_message(), (b"after", True))
        await until(lambda: pair.sender.pongs == [b"are you there"])
        await pair.on_thread()
        await self.echo(pair, [os.urandom(1000)])

    async def test_a_close_is_relayed_with_its_code_and_the_counts_add_up(self) -> None:
        """A sender's close reaches the listener with its code and reason; bytes count once each."""
        pair = await self.pair()
        await pair.on_thread()
        await self.echo(pair, [os.urandom(300)] * 10)
        splice = pair.splice
        pair.sender.sendClose(4000, "done")
        self.assertEqual(await pair.rendezvous.closed, (4000, "done"))
        await pair.sender.closed
        await until(lambda: splice.ended)
        # five 300-byte binary frames and five 600-byte text frames (hex) each way: 4-byte headers
        # unmasked as relayed, 8-byte headers masked as read
        relayed = 5 * 304 + 5 * 604 + 7  # and the first message of on_thread: 5 bytes, 2-byte header
        self.assertEqual(splice.bytes_relayed, {"sender": relayed, "listener": relayed})
        close_frames = (6 + 2 + len("done")) + (6 + 2)  # masked closes read: the sender's, Autobahn's 1000
        metered = pair.gateway.service.instruments.bytes_cell("hyco").value
        self.assertEqual(metered, 2 * (5 * 308 + 5 * 608 + 11) + close_frames)

    async def test_a_leg_that_vanishes_gets_the_other_a_1001(self) -> None:
        """A sender dropped without a close: the thread hands the end to Python, the listener gets 1001."""
        pair = await self.pair()
        await pair.on_thread()
        pair.sender.transport.abortConnection()
        code, _ = await pair.rendezvous.closed
        self.assertEqual(code, 1001)

    async def test_the_sender_holds_its_namespace_place_until_the_pair_ends_on_the_thread(self) -> None:
        """The listener and the sender count against the namespace; the vanished sender's place comes back."""
        pair = await self.pair()
        await pair.on_thread()
        connections = pair.gateway.service.connections
        self.assertEqual(sum(connections.counts().values()), 2)
        pair.sender.transport.abortConnection()
        await pair.rendezvous.closed
        await until(lambda: sum(connections.counts().values()) == 1)
        pair.control.sendClose(1000)
        await pair.control.closed
        await until(lambda: connections.counts() == {})

    async def test_counts_reach_the_metrics_while_the_pair_is_open(self) -> None:
        """The thread's byte counts are copied to the entity's counter every second, not only at the end."""
        pair = await self.pair()
        await pair.on_thread()
        pair.sender.sendMessage(os.urandom(10000), isBinary=True)
        await pair.rendezvous.next_message()
        cell = pair.gateway.service.instruments.bytes_cell("hyco")
        await until(lambda: cell.value == 10000 + 8 + 2 * 11, timeout=5)  # and the two first messages
        self.assertIsNotNone(pair.splice.native_handle)

    async def test_stopping_takes_pairs_back_and_closes_them_with_1001(self) -> None:
        """A gateway that stops ends a pair on the thread like any other: 1001 to both legs."""
        pair = await self.pair()
        await pair.on_thread()
        stopping = pair.gateway.service.stopService()
        self.assertEqual((await pair.sender.closed)[0], 1001)
        self.assertEqual((await pair.rendezvous.closed)[0], 1001)
        await stopping
        self.assertEqual(len(pair.gateway.service.hybrid_factory.native or ()), 0)

    async def test_bytes_the_thread_could_not_keep_end_the_pair(self) -> None:
        """
        The thread could not copy bytes it had to keep (out of memory): both legs are dropped, and logged.

        Relaying on would corrupt the streams. The failed allocation cannot be caused here, so its reason
        is put on a real take-back (a ping's); the rest is the gateway's own.
        """
        pair = await self.pair()
        await pair.on_thread()
        native = pair.gateway.service.hybrid_factory.native
        take = native.take

        def take_lost(handle: int) -> Any:
            _, sender, listener = take(handle)
            return REASON_NOMEM, sender, listener

        self.patch(native, "take", take_lost)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        pair.sender.sendPing(b"now")
        self.assertEqual((await pair.sender.closed)[0], 1006)
        self.assertEqual((await pair.rendezvous.closed)[0], 1006)
        self.assertEqual(pair.sender.pongs, [])
        dropped = [e for e in events if "both legs dropped" in e.get("log_format", "")]
        self.assertEqual([e["log_level"] for e in dropped], [LogLevel.error])
        self.assertIn("want of memory", dropped[0]["why"])

    async def test_a_pair_starts_in_python(self) -> None:
        """A new pair is relayed in Python for its first reads (a short one never leaves it)."""
        self.patch(bridge, "HAND_OVER_AFTER_READS", 16)
        pair = await self.pair()
        await self.echo(pair, [b"x"] * 7)  # 14 reads
        self.assertIsNone(pair.splice.native_handle)
        await self.echo(pair, [b"y"])
        await until(lambda: pair.splice.native_handle is not None)

    async def test_switched_off(self) -> None:
        """With native_splice = 0 the gateway relays in Python, the same way."""
        pair = await self.pair(native_splice=0.0)
        self.assertIsNone(pair.gateway.service.hybrid_factory.native)
        self.assertEqual(pair.gateway.service.metrics.value("relay_native_splice_pairs"), 0)
        await self.echo(pair, [os.urandom(70000)])
        await deferLater(reactor, 0.05, lambda: None)
        self.assertIsNone(pair.splice.native_handle)


class NativeSpliceStressTests(TestCase):
    """Many pairs at once, pinging while they stream: every hand-over and take-back keeps every byte."""

    timeout = 120

    def setUp(self) -> None:
        native_module()
        self.patch(bridge, "HAND_OVER_AFTER_READS", 2)

    async def test_pairs_streaming_and_pinging_lose_nothing(self) -> None:
        """On the native thread (it hands each ping back to Python)."""
        await self.stream()

    async def test_pairs_streaming_and_pinging_lose_nothing_in_python(self) -> None:
        """With the Python splice alone."""
        await self.stream(native_splice=0.0)

    async def stream(self, **limits: float) -> None:
        """
        Ten pairs each send 120 messages of random sizes both ways, with a ping every seventh message.

        Each side receives exactly what the other sent, in order: in particular no pong lands inside a
        frame being relayed to the pinging leg (it did, before the pong waited for the frame's end).
        """
        gateway = await start_gateway(self, limits=limits)
        first = await join(gateway)
        pairs = [first] + [await join(gateway, first.control) for _ in range(9)]

        async def run(pair: Pair, seed: int) -> None:
            rng = random.Random(seed)
            sent_up, sent_down = [], []
            for i in range(120):
                up = rng.randbytes(rng.choice([0, 1, 125, 126, 4000, 70000]))
                down = rng.randbytes(rng.choice([0, 7, 300, 65536]))
                pair.sender.sendMessage(up, isBinary=True)
                pair.rendezvous.sendMessage(down, isBinary=True)
                sent_up.append(up)
                sent_down.append(down)
                if i % 7 == 0:
                    pair.sender.sendPing(b"%d" % i)
            for up, down in zip(sent_up, sent_down, strict=True):
                self.assertEqual(await pair.rendezvous.next_message(), (up, True))
                self.assertEqual(await pair.sender.next_message(), (down, True))
            # The last ping is answered; an earlier one may go unanswered when a later one comes while
            # its pong waits for a frame to end (RFC 6455 5.5.3): the pongs are the pings', in order.
            pings = [b"%d" % i for i in range(0, 120, 7)]
            await until(lambda: pair.sender.pongs[-1:] == pings[-1:])
            self.assertEqual(pair.sender.pongs, [ping for ping in pings if ping in pair.sender.pongs])

        await DeferredList(
            [Deferred.fromCoroutine(run(pair, seed)) for seed, pair in enumerate(pairs)],
            fireOnOneErrback=True,
        )
        native = gateway.service.hybrid_factory.native
        if native is not None:
            self.assertGreater(len(native), 0)  # the pairs went back to the thread after their pings
        for pair in pairs:
            for client in (pair.sender, pair.rendezvous):
                client.sendClose(1000)
                await client.closed
        first.control.sendClose(1000)
        await first.control.closed


class HalfSentFrameTests(TestCase):
    """The gateway's own close never lands inside a frame it has half relayed."""

    timeout = 30

    async def test_stopping_mid_frame_disconnects_without_a_close_frame(self) -> None:
        """
        Stopping while a listener's frame is half relayed to the sender: the sender is disconnected.

        A close frame written then would land inside the frame, and the rest of the frame will not
        come; the sender sees an abnormal closure (1006) at once instead of a corrupt stream. The listener,
        whose incoming stream is between frames, gets its 1001. (A close frame inside the frame would leave
        the sender waiting for the rest until the closing handshake timed out: 30 s here.)
        """
        native_module()
        self.patch(bridge, "HAND_OVER_AFTER_READS", 1)
        gateway = await start_gateway(self, limits={"close_handshake_timeout": 30.0})
        pair = await join(gateway)
        await pair.on_thread()
        frame = masked(OP_BINARY, os.urandom(100000))
        pair.rendezvous.transport.write(frame[:50000])
        # relayed: the first message (7 bytes) and the half frame (a 10-byte header for the 14-byte one)
        await until(lambda: pair.splice.bytes_relayed["listener"] >= 7 + 50000 - 4)
        stopping = gateway.service.stopService()
        code, _ = await pair.sender.closed
        self.assertEqual(code, 1006)
        # The listener got the gateway's 1001. (Its answer lands inside the half frame this test wrote
        # on its behalf, so its closing handshake cannot complete: drop it.)
        await until(lambda: pair.rendezvous.remoteCloseCode == 1001)
        pair.rendezvous.transport.abortConnection()
        await stopping


def generated_stream(rng: random.Random) -> tuple[bytes, list[bytes]]:
    """Masked data messages in one to three fragments each, with pings and pongs between fragments."""
    stream = b""
    pings = []
    for _ in range(rng.randint(1, 6)):
        fragments = rng.randint(1, 3)
        for i in range(fragments):
            opcode = rng.choice([OP_TEXT, OP_BINARY]) if i == 0 else OP_CONTINUATION
            length = rng.choice([0, 1, 125, 126, 127, 1000, 65535, 65536, 70000])
            stream += masked(opcode, rng.randbytes(length), fin=i == fragments - 1, mask=rng.randbytes(4))
            if rng.random() < 0.3:
                control, payload = rng.choice([OP_PING, OP_PONG]), b"%d" % rng.randrange(10**6)
                stream += masked(control, payload, mask=rng.randbytes(4))
                if control == OP_PING:
                    pings.append(payload)
    return stream, pings


class GeneratedStreamTests(TestCase):
    """Raw streams written in pieces of any size through a gateway whose pairs run on the native thread."""

    timeout = 120

    async def test_generated_streams_arrive_as_python_relays_them(self) -> None:
        """
        Fragmented messages with pings and pongs, in pieces from one byte to 200 KB, both directions.

        The receiving leg's bytes are exactly what L{FrameRelay} makes of the stream (pings answered by
        the gateway, pongs dropped), however the reads split it across hand-overs to and from the thread;
        the pinging sender gets the pong of its last ping.
        """
        native_module()
        self.patch(bridge, "HAND_OVER_AFTER_READS", 1)
        await self.streams()

    async def test_generated_streams_in_python(self) -> None:
        """The same streams through the Python splice alone (TLS legs, or native_splice = 0)."""
        await self.streams(native_splice=0.0)

    async def streams(self, **limits: float) -> None:
        gateway = await start_gateway(self, limits=limits)
        first = await join(gateway)
        for seed in range(16):
            pair = first if seed == 0 else await join(gateway, first.control)
            await self.one_stream(pair, random.Random(seed), upstream=seed % 2 == 0)
        first.control.sendClose(1000)
        await first.control.closed

    async def one_stream(self, pair: Pair, rng: random.Random, upstream: bool) -> None:
        """Write one generated stream from the sender (C{upstream}) or the listener, and check its arrival."""
        if pair.gateway.service.hybrid_factory.native is not None:
            await pair.on_thread()
        writer, reader = (pair.sender, pair.rendezvous) if upstream else (pair.rendezvous, pair.sender)
        captured: list[bytes] = []
        reader.dataReceived = captured.append  # type: ignore[method-assign]  # raw frames, unparsed
        stream, pings = generated_stream(rng)
        expected = b"".join(bytes(item) for item in FrameRelay().feed(stream) if type(item) is memoryview)
        pos = 0
        while pos < len(stream):
            size = rng.choice([1, 2, 7, 100, 1000, 65536, 200000])
            writer.transport.write(stream[pos : pos + size])
            pos += size
            if rng.random() < 0.5:
                await deferLater(reactor, 0, lambda: None)
        await until(lambda: sum(map(len, captured)) >= len(expected), timeout=30)
        self.assertEqual(b"".join(captured), expected)
        if upstream and pings:
            await until(lambda: pair.sender.pongs[-1:] == pings[-1:])
        for client in (pair.sender, pair.rendezvous):
            client.transport.abortConnection()
