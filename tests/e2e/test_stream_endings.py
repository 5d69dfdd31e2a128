"""
End to end on loopback: how a relayed stream ends, with and without the splice's native thread.

Each ending (a close, a broken frame, the end of the writer's stream) comes after generated traffic
written in pieces of any size, so that it falls anywhere in a read, and on the thread in the middle of a
read it hands back to Python.
"""

from __future__ import annotations

import random
import struct

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from relay.hybrid import bridge
from relay.hybrid.frames import OP_BINARY, OP_CLOSE, OP_PING, FrameRelay, encode_close

from ..nativeneed import native_module
from ..test_frames import masked
from .gateway import start_gateway
from .test_hybrid_python import until
from .test_native_splice import Pair, generated_stream, join

# How a generated stream ends: what the writer sends last (or does), and the close frames that follow.
# (writer's last frame, the reader's close (code, reason), the writer's close or None); "NAME" is the
# writer's leg name.
ENDINGS: dict[str, tuple[bytes, tuple[int, str], tuple[int, str] | None]] = {
    "close": (masked(OP_CLOSE, struct.pack("!H", 4000) + b"bye"), (4000, "bye"), None),
    "empty close": (masked(OP_CLOSE, b""), (1000, ""), None),
    "reserved close code": (
        masked(OP_CLOSE, struct.pack("!H", 1005)),
        (1001, "NAME failed: close code 1005 is not allowed on the wire"),
        (1002, "close code 1005 is not allowed on the wire"),
    ),
    "close reason not UTF-8": (
        masked(OP_CLOSE, struct.pack("!H", 1000) + b"\xff"),
        (1001, "NAME failed: close reason is not UTF-8"),
        (1007, "close reason is not UTF-8"),
    ),
    "reserved bits": (
        masked(OP_BINARY, b"x", rsv=0x40),
        (1001, "NAME failed: reserved bits set without a negotiated extension"),
        (1002, "reserved bits set without a negotiated extension"),
    ),
    "unmasked frame": (
        bytes((0x82, 1)) + b"x",
        (1001, "NAME failed: client frame is not masked"),
        (1002, "client frame is not masked"),
    ),
    "ping of 126 bytes": (
        masked(OP_PING, bytes(126)),
        (1001, "NAME failed: control frame payload longer than 125 bytes"),
        (1002, "control frame payload longer than 125 bytes"),
    ),
    "length not in its shortest form": (
        bytes((0x82, 0xFE)) + struct.pack("!H", 3) + b"mask" + b"abc",
        (1001, "NAME failed: frame length not in its shortest form"),
        (1002, "frame length not in its shortest form"),
    ),
    "end of stream": (b"", (1001, "NAME went away"), None),
}


class StreamEndingTests(TestCase):
    """
    Generated streams that end in a close, a broken frame or the end of the writer's stream.

    The other leg gets every data frame before the end, then the close that the end calls for (the
    writer's own, or 1001 naming what the writer did); a writer that broke the rules gets its close code.
    The same bytes with the native thread relaying (it hands each ending back to Python mid-read) and
    without it.
    """

    timeout = 120

    async def test_on_the_native_thread(self) -> None:
        native_module()
        self.patch(bridge, "HAND_OVER_AFTER_READS", 1)
        await self.endings()

    async def test_in_python(self) -> None:
        await self.endings(native_splice=0.0)

    async def endings(self, **limits: float) -> None:
        gateway = await start_gateway(self, limits=limits)
        first = await join(gateway)
        for seed, ending in enumerate(ENDINGS):
            pair = first if seed == 0 else await join(gateway, first.control)
            await self.one_ending(pair, random.Random(seed), ending, upstream=seed % 2 == 0)
        first.control.sendClose(1000)
        await first.control.closed

    async def one_ending(self, pair: Pair, rng: random.Random, ending: str, upstream: bool) -> None:
        if pair.gateway.service.hybrid_factory.native is not None:
            await pair.on_thread()
        writer, reader = (pair.sender, pair.rendezvous) if upstream else (pair.rendezvous, pair.sender)
        name = "sender" if upstream else "listener"
        to_reader: list[bytes] = []
        to_writer: list[bytes] = []
        reader.dataReceived = to_reader.append  # type: ignore[method-assign]  # raw frames, unparsed
        writer.dataReceived = to_writer.append  # type: ignore[method-assign]
        stream, _ = generated_stream(rng)
        last, (code, reason), writer_close = ENDINGS[ending]
        expected = b"".join(bytes(item) for item in FrameRelay().feed(stream) if type(item) is memoryview)
        expected += encode_close(code, reason.replace("NAME", name))
        data = stream + last
        pos = 0
        while pos < len(data):
            size = rng.choice([1, 7, 1000, 65536, 200000])
            writer.transport.write(data[pos : pos + size])
            pos += size
            if rng.random() < 0.5:
                await deferLater(reactor, 0, lambda: None)
        if not last:
            writer.transport.loseWriteConnection()
        await until(lambda: sum(map(len, to_reader)) >= len(expected), timeout=30)
        self.assertEqual(b"".join(to_reader), expected, ending)
        if writer_close is not None:
            answer = encode_close(*writer_close)
            await until(lambda: b"".join(to_writer).endswith(answer), timeout=10)
        for client in (pair.sender, pair.rendezvous):
            client.transport.abortConnection()
