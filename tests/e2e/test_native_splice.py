"""
End to end on loopback: the splice's native thread in a real gateway, with raw Autobahn clients.

The pair goes to the thread once both legs are joined and comes back to Python for what only Python
does: pings (answered by the gateway), closes, a leg that vanishes, the gateway's stop. Every byte must
arrive once and in order across those hand-overs, and the counts must add up.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from relay.hybrid import bridge
from relay.hybrid.bridge import Splice

from ..nativeneed import native_module
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


async def join(gateway: RunningGateway) -> Pair:
    """Open a listener, a sender (that can ping) and the rendezvous that joins them."""
    auth = {"ServiceBusAuthorization": gateway.token("hyco")}
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
        await self.echo(pair, [os.urandom(70000)])
        await deferLater(reactor, 0.05, lambda: None)
        self.assertIsNone(pair.splice.native_handle)
