"""Tests for L{relay.hybrid.frames}: the masked-to-unmasked frame rewriter."""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Callable, Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from relay.hybrid.frames import (
    HEADROOM,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ControlFrame,
    FrameError,
    FrameRelay,
    encode_close,
    encode_frame,
    parse_close,
    unmask,
)
from relay.wsframes import xor_move


def masked(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None, rsv: int = 0) -> bytes:
    """A client-to-server frame as a browser would send it."""
    mask = mask if mask is not None else os.urandom(4)
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        header = bytes((b0, 0x80 | n))
    elif n < 65536:
        header = bytes((b0, 0x80 | 126)) + struct.pack("!H", n)
    else:
        header = bytes((b0, 0x80 | 127)) + struct.pack("!Q", n)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


Items = list[memoryview | ControlFrame]


def in_pieces(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    """C{data} in consecutive pieces of the given sizes, cycled: the reads (or writes) of a stream."""
    pos = 0
    for size in itertools.cycle(sizes):
        if pos >= len(data):
            return
        yield data[pos : pos + size]
        pos += size


def run(
    relay: FrameRelay, data: bytes, cut: int, feed: Callable[[FrameRelay, bytes], Items] = FrameRelay.feed
) -> tuple[bytes, list[ControlFrame]]:
    """Feed C{data} in pieces of C{cut} bytes; return the data bytes and control frames produced."""
    out: list[bytes] = []
    controls: list[ControlFrame] = []
    for i in range(0, len(data), cut):
        for item in feed(relay, data[i : i + cut]):
            if isinstance(item, ControlFrame):
                controls.append(item)
            else:
                out.append(bytes(item))
    return b"".join(out), controls


class UnmaskTests(SynchronousTestCase):
    """Both unmasking paths agree with the definition."""

    @given(st.binary(max_size=5000), st.binary(min_size=4, max_size=4), st.integers(0, 7))
    @settings(max_examples=200)
    def test_matches_definition(self, data: bytes, mask: bytes, offset: int) -> None:
        """Byte i of the output is data[i] XOR mask[(offset + i) % 4], small or large."""
        expected = bytes(b ^ mask[(offset + i) % 4] for i, b in enumerate(data))
        self.assertEqual(unmask(data, mask, offset), expected)

    @given(
        st.binary(max_size=3000),
        st.binary(min_size=4, max_size=4),
        st.integers(0, 7),
        st.integers(0, 40),
        st.integers(0, 40),
        st.integers(0, 40),
    )
    @settings(max_examples=200)
    def test_xor_move_writes_only_its_slice(
        self, data: bytes, mask: bytes, offset: int, before: int, shift: int, after: int
    ) -> None:
        """
        Unmasking bytes to an index at or before them writes exactly C{len(data)} bytes there, small or large.

        The ranges overlap whenever the shift is shorter than the data (the in-place rewriter's case); a
        payload continued from an earlier read starts its key C{offset} bytes in.
        """
        out = bytearray(b"\xee" * before + b"\xdd" * shift + data + b"\xee" * after)
        key = (mask * 2)[offset % 4 : offset % 4 + 4]
        xor_move(memoryview(out), before, before + shift, len(data), key)
        expected = bytes(b ^ mask[(offset + i) % 4] for i, b in enumerate(data))
        self.assertEqual(bytes(out[:before]), b"\xee" * before)
        self.assertEqual(bytes(out[before : before + len(data)]), expected)
        self.assertEqual(bytes(out[before + shift + len(data) :]), b"\xee" * after)


class FrameRelayTests(SynchronousTestCase):
    """Framing is kept exactly, at every read boundary."""

    def feed(self, relay: FrameRelay, data: bytes) -> Items:
        """Give C{relay} one read's bytes (here: as a C{bytes} object, the way TLS legs deliver them)."""
        return relay.feed(data)

    def stream(self) -> tuple[bytes, bytes]:
        """A masked input with every kind of frame, and the unmasked output it must become."""
        big = os.urandom(70000)
        mid = os.urandom(300)
        frames = [
            (OP_TEXT, "héllo".encode(), True),
            (OP_BINARY, big, True),
            (OP_TEXT, b"frag-1", False),
            (OP_PING, b"p1", True),
            (OP_CONTINUATION, mid, False),
            (OP_PONG, b"", True),
            (OP_CONTINUATION, b"", True),
            (OP_BINARY, b"", True),
        ]
        source = b"".join(masked(op, p, fin) for op, p, fin in frames)
        expected = b"".join(encode_frame(op, p, fin) for op, p, fin in frames if op not in (OP_PING, OP_PONG))
        return source, expected

    def test_every_split_point_small(self) -> None:
        """Split into pieces of every size from 1 to 20 bytes, output and control frames are identical."""
        source, expected = self.stream()
        for cut in [*range(1, 21), 127, 4096, 65536, len(source)]:
            data, controls = run(FrameRelay(), source, cut, self.feed)
            self.assertEqual(data, expected, f"cut={cut}")
            self.assertEqual(controls, [ControlFrame(OP_PING, b"p1"), ControlFrame(OP_PONG, b"")])

    def test_every_byte_boundary_of_a_short_stream(self) -> None:
        """A stream split in two at every byte boundary produces the same output."""
        source = masked(OP_TEXT, b"abc", fin=False) + masked(OP_PING, b"x") + masked(OP_CONTINUATION, b"def")
        source += masked(OP_CLOSE, struct.pack("!H", 1000) + b"bye")
        expected = encode_frame(OP_TEXT, b"abc", fin=False) + encode_frame(OP_CONTINUATION, b"def")
        for split in range(len(source) + 1):
            relay = FrameRelay()
            items = self.feed(relay, source[:split]) + self.feed(relay, source[split:])
            data = b"".join(bytes(i) for i in items if not isinstance(i, ControlFrame))
            controls = [i for i in items if isinstance(i, ControlFrame)]
            self.assertEqual(data, expected, f"split={split}")
            self.assertEqual([c.opcode for c in controls], [OP_PING, OP_CLOSE])
            self.assertEqual(relay.buffered, 0)

    def test_every_byte_boundary_across_header_forms_and_masker_paths(self) -> None:
        """
        Split in two anywhere, a stream of every header form and both masker paths relays the same.

        The stream has 7- and 16-bit lengths, payloads on both sides of the C masker threshold, a
        fragmented message with a ping inside it, and a close.
        """
        frames = [
            (OP_BINARY, b"", True),
            (OP_TEXT, b"a", True),
            (OP_BINARY, os.urandom(125), True),
            (OP_BINARY, os.urandom(126), True),
            (OP_TEXT, os.urandom(1023), False),
            (OP_PING, b"in-between", True),
            (OP_CONTINUATION, os.urandom(1024), False),
            (OP_CONTINUATION, os.urandom(1025), True),
            (OP_CLOSE, struct.pack("!H", 1000), True),
        ]
        source = b"".join(masked(op, p, fin) for op, p, fin in frames)
        expected = b"".join(encode_frame(op, p, fin) for op, p, fin in frames if op < OP_CLOSE)
        for split in range(len(source) + 1):
            relay = FrameRelay()
            items = self.feed(relay, source[:split]) + self.feed(relay, source[split:])
            data = b"".join(bytes(i) for i in items if not isinstance(i, ControlFrame))
            controls = [i for i in items if isinstance(i, ControlFrame)]
            self.assertEqual(data, expected, f"split={split}")
            self.assertEqual(
                controls, [ControlFrame(OP_PING, b"in-between"), ControlFrame(OP_CLOSE, b"\x03\xe8")]
            )
            self.assertEqual(relay.buffered, 0)

    def test_runs_are_split_around_control_frames(self) -> None:
        """Data before and after a control frame in one read come out as two runs around it."""
        items = self.feed(
            FrameRelay(), masked(OP_BINARY, b"12") + masked(OP_PING, b"p") + masked(OP_BINARY, b"34")
        )
        self.assertEqual(
            [bytes(i) if isinstance(i, memoryview) else i for i in items],
            [encode_frame(OP_BINARY, b"12"), ControlFrame(OP_PING, b"p"), encode_frame(OP_BINARY, b"34")],
        )

    def test_order_of_control_relative_to_data(self) -> None:
        """A close after data comes after that data in the item list."""
        items = self.feed(FrameRelay(), masked(OP_BINARY, b"1234") + masked(OP_CLOSE, b"\x03\xe8"))
        self.assertEqual(items, [encode_frame(OP_BINARY, b"1234"), ControlFrame(OP_CLOSE, b"\x03\xe8")])

    def test_bounded_buffer(self) -> None:
        """A huge frame is forwarded as it arrives; only partial headers are held back."""
        relay = FrameRelay()
        frame = masked(OP_BINARY, bytes(1_000_000))
        out, _ = run(relay, frame[:500_000], 65536, self.feed)
        self.assertEqual(len(out), 500_000 - 4)  # 14-byte masked header became a 10-byte one
        self.assertLessEqual(relay.buffered, 14)

    def test_protocol_errors(self) -> None:
        """Frames that break RFC 6455 raise L{FrameError} with close code 1002."""
        cases = {
            "unmasked": encode_frame(OP_TEXT, b"x"),
            "rsv": masked(OP_TEXT, b"x", rsv=0x40),
            "opcode": masked(0x3, b"x"),
            "fragmented control": masked(OP_PING, b"x", fin=False),
            "long control": masked(OP_PING, bytes(126)),
            "stray continuation": masked(OP_CONTINUATION, b"x"),
            "interleaved message": masked(OP_TEXT, b"a", fin=False) + masked(OP_BINARY, b"b"),
            "huge length": bytes((0x82, 0xFF)) + struct.pack("!Q", 1 << 63) + b"mask",
            "16-bit length under 126": bytes((0x82, 0xFE)) + struct.pack("!H", 125) + b"mask" + bytes(125),
            "64-bit length under 65536": bytes((0x82, 0xFF)) + struct.pack("!Q", 65535) + b"mask",
            "control frame in the 16-bit form": bytes((0x89, 0xFE)) + struct.pack("!H", 1) + b"maskp",
        }
        for name, data in cases.items():
            with self.subTest(case=name):
                with self.assertRaises(FrameError) as ctx:
                    self.feed(FrameRelay(), data)
                self.assertEqual(ctx.exception.code, 1002)

    @given(
        st.lists(st.tuples(st.sampled_from([OP_TEXT, OP_BINARY]), st.binary(max_size=300)), max_size=10),
        st.integers(1, 64),
    )
    @settings(max_examples=100, suppress_health_check=[HealthCheck.differing_executors])  # two feeding modes
    def test_property_round_trip(self, messages: list[tuple[int, bytes]], cut: int) -> None:
        """Property: any sequence of messages, read in any chunk size, comes out unmasked and unchanged."""
        source = b"".join(masked(op, p) for op, p in messages)
        expected = b"".join(encode_frame(op, p) for op, p in messages)
        data, controls = run(FrameRelay(), source, cut, self.feed)
        self.assertEqual(data, expected)
        self.assertEqual(controls, [])

    @given(
        st.lists(
            st.tuples(
                st.sampled_from([OP_TEXT, OP_BINARY, OP_PING]), st.binary(max_size=2500), st.integers(1, 3)
            ),
            max_size=6,
        ),
        st.lists(st.integers(1, 3000), min_size=1, max_size=8),
    )
    @settings(max_examples=100, suppress_health_check=[HealthCheck.differing_executors])  # two feeding modes
    def test_property_fragments_and_pings_in_any_reads(
        self, messages: list[tuple[int, bytes, int]], cuts: list[int]
    ) -> None:
        """
        Property: fragmented messages with pings between them, read in pieces of any sizes, relay unchanged.

        The fragments come out as they went in, and the pings in order.
        """
        source = b""
        expected = b""
        pings = []
        for opcode, payload, parts in messages:
            if opcode == OP_PING:
                source += masked(OP_PING, payload[:125])
                pings.append(ControlFrame(OP_PING, payload[:125]))
                continue
            step = max(1, -(-len(payload) // parts))
            pieces = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
            for i, piece in enumerate(pieces):
                op = opcode if i == 0 else OP_CONTINUATION
                fin = i == len(pieces) - 1
                source += masked(op, piece, fin)
                expected += encode_frame(op, piece, fin)
        relay = FrameRelay()
        out: list[bytes] = []
        controls: list[ControlFrame] = []
        for piece in in_pieces(source, cuts):
            for item in self.feed(relay, piece):
                if isinstance(item, ControlFrame):
                    controls.append(item)
                else:
                    out.append(bytes(item))
        self.assertEqual(b"".join(out), expected)
        self.assertEqual(controls, pings)
        self.assertEqual(relay.buffered, 0)


class InPlaceFrameRelayTests(FrameRelayTests):
    """
    The same cases, each read put into one reused buffer and rewritten there (L{FrameRelay.feed_into}).

    That is how the splice reads plain TCP legs. The buffer is scribbled over before every read, so
    nothing may depend on what an earlier read left in it.
    """

    def setUp(self) -> None:
        self.buffer = bytearray(HEADROOM + 1_000_000)

    def feed(self, relay: FrameRelay, data: bytes) -> Items:
        """Copy C{data} into the shared buffer after the headroom, rewrite it there, and copy the runs out."""
        scribbled = HEADROOM + len(data) + 64
        self.buffer[:scribbled] = os.urandom(16) * (scribbled // 16) + bytes(scribbled % 16)
        self.buffer[HEADROOM : HEADROOM + len(data)] = data
        items = relay.feed_into(self.buffer, HEADROOM, HEADROOM + len(data))
        for item in items:
            if isinstance(item, memoryview):
                self.assertIs(item.obj, self.buffer)  # rewritten in place, not copied
        # The next read overwrites the buffer: keep what the caller would have sent by then.
        return [memoryview(bytes(i)) if isinstance(i, memoryview) else i for i in items]

    def test_held_bytes_go_into_the_headroom(self) -> None:
        """A header split over two reads is put back in front of the second read, inside the headroom."""
        relay = FrameRelay()
        frame = masked(OP_PING, bytes(125))
        self.assertEqual(self.feed(relay, frame[:130]), [])
        self.assertEqual(relay.buffered, 130)
        self.assertEqual(self.feed(relay, frame[130:]), [ControlFrame(OP_PING, bytes(125))])
        self.assertEqual(relay.buffered, 0)

    def test_headroom_too_small(self) -> None:
        """Without room for the held bytes in front of the read, feed_into refuses instead of corrupting."""
        relay = FrameRelay()
        relay.feed(masked(OP_BINARY, b"abc")[:3])
        buffer = bytearray(b"\0\0" + masked(OP_BINARY, b"abc")[3:])
        self.assertRaises(ValueError, relay.feed_into, buffer, 2, len(buffer))


class CloseFrameTests(SynchronousTestCase):
    """Close payloads."""

    def test_parse(self) -> None:
        """Code and reason are read; empty means no code."""
        self.assertEqual(parse_close(b""), (None, ""))
        self.assertEqual(parse_close(struct.pack("!H", 4000) + "ok ✓".encode()), (4000, "ok ✓"))

    def test_invalid(self) -> None:
        """One-byte payloads, reserved codes and non-UTF-8 reasons are errors."""
        self.assertEqual(self._code(b"\x03"), 1002)
        for code in (999, 1004, 1005, 1006, 1015, 2999, 5000):
            self.assertEqual(self._code(struct.pack("!H", code)), 1002, code)
        self.assertEqual(self._code(struct.pack("!H", 1000) + b"\xff"), 1007)

    def _code(self, payload: bytes) -> int:
        with self.assertRaises(FrameError) as ctx:
            parse_close(payload)
        return ctx.exception.code

    def test_encode_close_clips_reason(self) -> None:
        """A long reason is clipped so the frame stays a valid control frame (125 bytes)."""
        frame = encode_close(1000, "x" * 500)
        self.assertEqual(len(frame), 2 + 125)
        self.assertEqual(encode_close(None), bytes((0x88, 0)))
