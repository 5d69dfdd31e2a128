"""Tests for L{relay.wsframes} and L{relay.wsfast}: whole frames written and read without Autobahn."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from relay.wsfast import FastMessageReader
from relay.wsframes import (
    FAST_PAYLOAD_LIMIT,
    HAND_OVER,
    INCOMPLETE,
    WAIT_LIMIT,
    FrameCache,
    mask,
    masked_frame,
    read_frame,
    server_frame,
)

KEY = b"\x01\x82\x33\xf4"


def raw_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    """Any frame, built independently of the code under test (the mask by a plain byte loop)."""
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    length = len(payload)
    bit = 0x80 if masked else 0
    if length <= 125:
        head = bytes((first, bit | length))
    elif length <= 0xFFFF:
        head = bytes((first, bit | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((first, bit | 127)) + length.to_bytes(8, "big")
    if not masked:
        return head + payload
    return head + KEY + bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))


def parse_one(data: bytes, masked: bool) -> tuple[int, int, bool, bytes]:
    """A reference parser: opcode, FIN, payload and end of the first (complete) frame."""
    first, second = data[0], data[1]
    length, start = second & 0x7F, 2
    if length == 126:
        length, start = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        length, start = int.from_bytes(data[2:10], "big"), 10
    if second & 0x80:
        key, start = data[start : start + 4], start + 4
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(data[start : start + length]))
    else:
        payload = data[start : start + length]
    return start + length, first & 0x0F, bool(first & 0x80), payload


def frame_complete(data: bytes) -> bool:
    """Whether C{data} starts with a whole frame (the reference parser unmasks, so it is not asked early)."""
    if len(data) < 2:
        return False
    length, start = data[1] & 0x7F, 2
    if length == 126:
        if len(data) < 4:
            return False
        length, start = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        if len(data) < 10:
            return False
        length, start = int.from_bytes(data[2:10], "big"), 10
    if data[1] & 0x80:
        start += 4
    return len(data) >= start + length


class FrameWritingTests(SynchronousTestCase):
    """Whole text frames as the gateway and the client library write them."""

    def test_lengths(self) -> None:
        """Every length encoding (7-bit, 16-bit, 64-bit) round-trips, masked and unmasked."""
        for size in (0, 1, 125, 126, 127, 65535, 65536, 70000):
            payload = bytes(i % 251 for i in range(size))
            self.assertEqual(server_frame(payload), raw_frame(1, payload, masked=False))
            self.assertEqual(masked_frame(payload, KEY), raw_frame(1, payload, masked=True))
            _end, opcode, fin, read = parse_one(masked_frame(payload), masked=True)
            self.assertEqual((opcode, fin, read), (1, True, payload))

    def test_binary_frames(self) -> None:
        for size in (0, 125, 126, 65536):
            payload = bytes(i % 7 for i in range(size))
            self.assertEqual(server_frame(payload, binary=True), raw_frame(2, payload, masked=False))
            self.assertEqual(masked_frame(payload, KEY, binary=True), raw_frame(2, payload, masked=True))

    @given(payload=st.binary(max_size=300), key=st.binary(min_size=4, max_size=4))
    def test_mask_is_xor(self, payload: bytes, key: bytes) -> None:
        """Masking is the XOR with the repeated key; masking twice gives the payload back."""
        self.assertEqual(mask(payload, key), bytes(b ^ key[i % 4] for i, b in enumerate(payload)))
        self.assertEqual(mask(mask(payload, key), key), payload)


class ReadFrameTests(SynchronousTestCase):
    """L{read_frame} takes simple text frames and leaves everything else to the general parser."""

    read_frame = staticmethod(read_frame)  # C where built; test_wscodec runs these with Python

    def test_simple_text(self) -> None:
        """A masked final text frame with UTF-8 gives its unmasked payload."""
        frame = raw_frame(1, "héllo".encode())
        self.assertEqual(self.read_frame(frame + b"rest", 0, True, 1000), (len(frame), "héllo".encode()))

    def test_left_to_the_general_parser(self) -> None:
        """Control, binary, fragmented, wrongly masked, RSV and invalid UTF-8 frames: whole, no payload."""
        for frame in (
            raw_frame(9, b"ping"),
            raw_frame(8, b"\x03\xe8"),
            raw_frame(2, b"binary"),
            raw_frame(1, b"part", fin=False),
            raw_frame(0, b"continuation"),
            raw_frame(1, b"unmasked", masked=False),
            raw_frame(1, b"rsv", rsv=4),
            raw_frame(1, b"\xff\xfe"),
        ):
            self.assertEqual(self.read_frame(frame, 0, True, 1000), (len(frame), None), frame)
        self.assertEqual(self.read_frame(raw_frame(1, b"masked"), 0, False, 1000)[1], None)

    def test_incomplete(self) -> None:
        """Any proper prefix of a frame is incomplete."""
        frame = raw_frame(1, b"x" * 300)
        for cut in range(len(frame)):
            self.assertEqual(self.read_frame(frame[:cut], 0, True, 1000), (INCOMPLETE, None))

    def test_large_frames_are_not_waited_for(self) -> None:
        """
        The rest of a frame over the wait limit is not waited for: Autobahn streams it instead.

        Whole, such a frame is still read (when within the other limits).
        """
        frame = raw_frame(2, bytes(WAIT_LIMIT + 1))
        self.assertEqual(self.read_frame(frame[:-1], 0, True, 1 << 30, binary=True), (HAND_OVER, None))
        self.assertEqual(
            self.read_frame(frame, 0, True, 1 << 30, binary=True), (len(frame), bytes(WAIT_LIMIT + 1))
        )
        small = raw_frame(2, bytes(WAIT_LIMIT))
        self.assertEqual(self.read_frame(small[:-1], 0, True, 1 << 30, binary=True), (INCOMPLETE, None))

    def test_over_the_limits(self) -> None:
        """A frame over the connection's limit, or the fast path's, is handed over from its header on."""
        self.assertEqual(self.read_frame(raw_frame(1, b"x" * 200)[:4], 0, True, 100), (HAND_OVER, None))
        head = bytes((0x81, 0x80 | 127)) + (FAST_PAYLOAD_LIMIT + 1).to_bytes(8, "big")
        self.assertEqual(self.read_frame(head, 0, True, 1 << 40), (HAND_OVER, None))


class FakeAutobahn:
    """
    What L{FastMessageReader} needs of an Autobahn protocol, with Autobahn's buffering and message assembly.

    Frames given to C{_dataReceived} are buffered and parsed with the reference parser; every frame is
    recorded as C{("autobahn", opcode, fin, payload)}, messages read by the fast path as C{("fast", ...)}.
    """

    STATE_OPEN = 1
    STATE_CLOSED = 3

    def __init__(self, masked: bool, max_payload: int = 1 << 20) -> None:
        self.state = self.STATE_OPEN
        self.data = b""
        self.inside_message = False
        self.current_frame: Any = None
        self.maxMessagePayloadSize = max_payload
        self.masked = masked
        self.events: list[tuple[str, int, bool, bytes]] = []
        self.autoPingTimeoutCall: object | None = None
        self.autoPingRestartOnAnyTraffic = True

    def _cancelAutoPingTimeoutCall(self) -> None:
        self.autoPingTimeoutCall = None

    def _dataReceived(self, data: bytes) -> None:
        self.data += data
        while len(self.data) >= 2:
            if not frame_complete(self.data):
                return
            end, opcode, fin, payload = parse_one(self.data, self.masked)
            self.data = self.data[end:]
            self.events.append(("autobahn", opcode, fin, payload))
            if opcode in (0, 1, 2):
                self.inside_message = not fin

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.events.append(("fast", 2 if isBinary else 1, True, payload))


STREAM = [
    raw_frame(1, b"<a>first</a>"),
    raw_frame(9, b"ping"),
    raw_frame(1, "second \u00e9".encode() * 20),
    raw_frame(1, b"frag-1 ", fin=False),
    raw_frame(10, b"pong in the middle of a message"),
    raw_frame(1, b"a text frame inside a fragmented message goes to Autobahn"),
    raw_frame(0, b"frag-2", fin=True),
    raw_frame(2, b"binary"),
    raw_frame(1, b"x" * 70000),
    raw_frame(1, b"\xc3"),
    raw_frame(1, b"last"),
]


def stream_frames() -> list[tuple[int, bool, bytes]]:
    """The frames of L{STREAM}: opcode, fin, payload."""
    data = b"".join(STREAM)
    frames = []
    while data:
        end, opcode, fin, payload = parse_one(data, True)
        frames.append((opcode, fin, payload))
        data = data[end:]
    return frames


class FastMessageReaderTests(SynchronousTestCase):
    """The reader keeps every frame, in order, whoever parses it, however the bytes are split."""

    def expected(self) -> list[tuple[int, bool, bytes]]:
        return stream_frames()

    def feed(self, *chunks: bytes) -> FakeAutobahn:
        protocol = FakeAutobahn(masked=True)
        reader = FastMessageReader(protocol, masked=True)
        for chunk in chunks:
            reader.data_received(chunk)
        return protocol

    def test_one_read(self) -> None:
        """
        Simple text frames are fast until Autobahn is assembling a fragmented message.

        From then on the rest of that read is Autobahn's, and the next read is fast again.
        """
        protocol = FakeAutobahn(masked=True)
        reader = FastMessageReader(protocol, masked=True)
        reader.data_received(b"".join(STREAM))
        self.assertEqual([e[1:] for e in protocol.events], self.expected())
        fast = [e[3] for e in protocol.events if e[0] == "fast"]
        self.assertEqual(fast, [b"<a>first</a>", "second \u00e9".encode() * 20])
        reader.data_received(raw_frame(1, b"next read"))
        self.assertEqual(protocol.events[-1], ("fast", 1, True, b"next read"))

    def test_split_at_every_byte(self) -> None:
        """Two reads split at every byte boundary deliver the same frames in the same order."""
        data = b"".join(STREAM[:8])  # the 70 KB frame is covered by test_byte_by_byte
        expected = self.expected()[:8]
        for cut in range(len(data) + 1):
            protocol = self.feed(data[:cut], data[cut:])
            self.assertEqual([e[1:] for e in protocol.events], expected, cut)

    def test_byte_by_byte(self) -> None:
        """One byte per read: still every frame once, in order."""
        data = b"".join(STREAM)
        protocol = self.feed(*(data[i : i + 1] for i in range(len(data))))
        self.assertEqual([e[1:] for e in protocol.events], self.expected())

    def test_autobahn_busy(self) -> None:
        """While Autobahn holds bytes or is not open, everything goes to it."""
        protocol = FakeAutobahn(masked=True)
        reader = FastMessageReader(protocol, masked=True)
        protocol.state = 0
        reader.data_received(raw_frame(1, b"before open"))
        self.assertEqual(protocol.events, [("autobahn", 1, True, b"before open")])

    def test_data_restarts_the_ping_timeout(self) -> None:
        """A data frame read on the fast path cancels a pending ping timeout, as Autobahn's parser does."""
        protocol = FakeAutobahn(masked=True)
        reader = FastMessageReader(protocol, masked=True)
        protocol.autoPingTimeoutCall = object()
        reader.data_received(raw_frame(1, b"busy peer"))
        self.assertIsNone(protocol.autoPingTimeoutCall)

    def test_unmasked_direction(self) -> None:
        """A client reads unmasked frames; a masked one from the server goes to Autobahn (its error)."""
        protocol = FakeAutobahn(masked=False)
        reader = FastMessageReader(protocol, masked=False)
        reader.data_received(raw_frame(1, b"ok", masked=False) + raw_frame(1, b"bad", masked=True))
        self.assertEqual(
            [e[0] for e in protocol.events],
            ["fast", "autobahn"],
        )


class HoldingAutobahn(FakeAutobahn):
    """A protocol that is held (takes no more messages) after each message read on the fast path."""

    def __init__(self) -> None:
        super().__init__(masked=True)
        self.held = False
        self.handed_while_held = 0

    def _dataReceived(self, data: bytes) -> None:
        self.handed_while_held += self.held
        super()._dataReceived(data)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.handed_while_held += self.held
        super().onMessage(payload, isBinary)
        self.held = True


class HeldProtocolTests(SynchronousTestCase):
    """A protocol held by a message gets nothing more until it is resumed; then every frame, in order."""

    def test_split_at_every_byte(self) -> None:
        """Two reads split anywhere: nothing is handed over while held, and resuming hands over the rest."""
        data = b"".join(STREAM[:8])
        expected = stream_frames()[:8]
        for cut in range(len(data) + 1):
            protocol = HoldingAutobahn()
            reader = FastMessageReader(protocol, masked=True, held=lambda p=protocol: p.held)
            reader.data_received(data[:cut])
            reader.data_received(data[cut:])
            self.assertEqual(protocol.events[-1][0], "fast", cut)  # the first fast message held the rest
            for _ in range(len(expected)):
                protocol.held = False
                reader.resume()
            self.assertEqual(protocol.handed_while_held, 0, cut)
            self.assertEqual([e[1:] for e in protocol.events], expected, cut)

    def test_closed_meanwhile(self) -> None:
        """What was kept for a protocol that closed meanwhile is dropped."""
        protocol = HoldingAutobahn()
        reader = FastMessageReader(protocol, masked=True, held=lambda: protocol.held)
        reader.data_received(raw_frame(1, b"one") + raw_frame(1, b"two"))
        self.assertTrue(reader.keeping)
        protocol.held, protocol.state = False, protocol.STATE_CLOSED
        reader.resume()
        self.assertFalse(reader.keeping)
        self.assertEqual(protocol.events, [("fast", 1, True, b"one")])


class BinaryFrameTests(SynchronousTestCase):
    """With C{binary}, whole binary frames are read fast too (Hybrid Connections control channels)."""

    read_frame = staticmethod(read_frame)  # C where built; test_wscodec runs these with Python

    def test_read_frame(self) -> None:
        """A whole masked binary frame is read with C{binary}, and left to Autobahn without it."""
        frame = raw_frame(2, b"\x00\xffbody")
        self.assertEqual(self.read_frame(frame, 0, True, 1000, binary=True), (len(frame), b"\x00\xffbody"))
        self.assertEqual(self.read_frame(frame, 0, True, 1000), (len(frame), None))
        self.assertEqual(self.read_frame(raw_frame(2, b"x", fin=False), 0, True, 1000, binary=True)[1], None)
        self.assertEqual(
            self.read_frame(raw_frame(2, b"x", masked=False), 0, True, 1000, binary=True)[1], None
        )

    def test_reader_tells_binary_from_text(self) -> None:
        """The reader delivers binary messages as binary, and every frame of the stream in order."""
        big = raw_frame(2, bytes(range(256)) * 40)
        stream = [big, *STREAM[:3], raw_frame(2, b"binary-2"), *STREAM[3:8], raw_frame(1, b"after")]
        data = b"".join(stream)
        expected = []
        rest = data
        while rest:
            end, opcode, fin, payload = parse_one(rest, True)
            expected.append((opcode, fin, payload))
            rest = rest[end:]
        for cut in (1, 7, 100, 4096, len(data)):
            protocol = FakeAutobahn(masked=True)
            reader = FastMessageReader(protocol, masked=True, binary=True)
            for start in range(0, len(data), cut):
                reader.data_received(data[start : start + cut])
            self.assertEqual([e[1:] for e in protocol.events], expected, cut)
            fast = [(e[1], len(e[3])) for e in protocol.events if e[0] == "fast"]
            self.assertEqual(fast[:4], [(2, 10240), (1, 12), (1, 180), (2, 8)], cut)


class FrameCacheTests(SynchronousTestCase):
    """The gateway builds the frame of a multicast payload once for all its subscribers."""

    def test_same_payload_same_frame(self) -> None:
        """Consecutive writes of one payload object share one frame; another payload gets its own."""
        from twisted.internet.task import Clock

        from bindings.wcf import WcfFactory

        class Gateway:
            clock = Clock()
            limits: dict[str, float] = {}

        factory = WcfFactory(Gateway())  # type: ignore[arg-type]
        payload = b"<s:Envelope/>" * 20
        first = factory.frame_for(payload)
        self.assertIs(factory.frame_for(payload), first)
        self.assertEqual(first, server_frame(payload))
        other = factory.frame_for(b"<other/>")
        self.assertEqual(other, server_frame(b"<other/>"))

    def test_large_payload_let_go_after_its_turn(self) -> None:
        """A payload over 64 KiB shares its frame within its turn; after it, neither is held any more."""
        import sys

        from twisted.internet.task import Clock

        clock = Clock()
        cache = FrameCache(clock)
        payload = b"x" * (WAIT_LIMIT + 1)
        first = cache.frame_for(payload)
        self.assertIs(cache.frame_for(payload), first)
        held = sys.getrefcount(payload), sys.getrefcount(first)
        clock.advance(0)
        self.assertEqual((sys.getrefcount(payload), sys.getrefcount(first)), (held[0] - 1, held[1] - 1))
        small = b"<s:Envelope/>"
        self.assertIs(cache.frame_for(small), cache.frame_for(small))
        kept = cache.frame_for(small)
        clock.advance(0)
        self.assertIs(cache.frame_for(small), kept)


class StrictnessTests(SynchronousTestCase):
    """What Autobahn refuses from a frame's header is refused the same with the fast path in front."""

    read_frame = staticmethod(read_frame)  # C where built; test_wscodec runs these with Python

    def test_non_minimal_lengths_go_to_autobahn(self) -> None:
        """A length in 2 or 8 bytes that fits in fewer is handed over (RFC 6455 5.2 requires the shortest)."""
        short_in_16 = bytes((0x81, 0x80 | 126)) + (5).to_bytes(2, "big") + KEY + mask(b"hello", KEY)
        short_in_64 = bytes((0x82, 0x80 | 127)) + (300).to_bytes(8, "big") + KEY + mask(b"x" * 300, KEY)
        self.assertEqual(self.read_frame(short_in_16, 0, True, 1000), (HAND_OVER, None))
        self.assertEqual(self.read_frame(short_in_64, 0, True, 1000, binary=True), (HAND_OVER, None))
        shortest_in_16 = bytes((0x81, 0x80 | 126)) + (126).to_bytes(2, "big") + KEY + mask(b"y" * 126, KEY)
        self.assertEqual(self.read_frame(shortest_in_16, 0, True, 1000), (len(shortest_in_16), b"y" * 126))

    def test_autobahn_fails_a_non_minimal_length(self) -> None:
        """A real client protocol (fast path in front) delivers nothing and drops the connection."""
        from .test_writes import open_client

        class Receiver:  # takes whole messages: the protocol reads through the fast path
            def __init__(self) -> None:
                self.messages: list[bytes] = []

            def message_received(self, payload: bytes, is_binary: bool) -> None:
                self.messages.append(payload)

        protocol, _transport, _server, _reactor = open_client(self)
        protocol.receiver = receiver = Receiver()
        protocol.dataReceived(bytes((0x81, 1)) + b"a")
        self.assertEqual(receiver.messages, [b"a"])
        protocol.dataReceived(bytes((0x81, 126)) + (5).to_bytes(2, "big") + b"hello")
        self.assertEqual(receiver.messages, [b"a"])
        self.assertEqual(protocol.state, protocol.STATE_CLOSED)

    def test_partial_frames_autobahn_refuses_are_not_waited_for(self) -> None:
        """The start of a control, fragmented or wrongly masked frame goes to Autobahn at once."""
        for frame in (
            raw_frame(9, b"p" * 100),
            raw_frame(1, b"part" * 50, fin=False),
            raw_frame(1, b"unmasked" * 30, masked=False),
            raw_frame(1, b"rsv" * 50, rsv=4),
        ):
            self.assertEqual(self.read_frame(frame[:-1], 0, True, 1000), (HAND_OVER, None), frame[:2])


class TrickleTests(SynchronousTestCase):
    """A frame that arrives a few bytes per read is put together once, not once per read."""

    def test_frame_one_byte_per_read(self) -> None:
        """Sixty thousand reads of one byte: a handful of parses, and the message once."""
        import relay.wsfast

        calls = [0]
        real = relay.wsfast.read_frame

        def counting(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            return real(*args, **kwargs)

        self.patch(relay.wsfast, "read_frame", counting)
        protocol = FakeAutobahn(masked=True)
        reader = FastMessageReader(protocol, masked=True)
        payload = b"t" * 60_000
        data = raw_frame(1, payload) + raw_frame(1, b"next")
        for index in range(len(data)):
            reader.data_received(data[index : index + 1])
        self.assertEqual(protocol.events, [("fast", 1, True, payload), ("fast", 1, True, b"next")])
        self.assertLess(calls[0], 20)
