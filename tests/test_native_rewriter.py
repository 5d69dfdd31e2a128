"""
The native thread's frame rewriter (C{relay._splice.rewrite}) against L{FrameRelay}, at every read boundary.

Every test of L{FrameRelayTests} runs again with each read going first to the C rewriter, as the thread
does it, and from the first frame it leaves for Python on to L{FrameRelay}, with the state handed back and
forth by L{FrameRelay.saved_state} and L{FrameRelay.restore}: the output, the control frames and the errors must be
exactly those of the Python rewriter alone.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from relay.hybrid.frames import (
    OP_BINARY,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ControlFrame,
    FrameError,
    FrameRelay,
    encode_frame,
)
from relay.hybrid.native import NativeSplices, which
from relay.wsframes import mask as xor_mask

from .nativeneed import native_module
from .test_frames import FrameRelayTests, Items, in_pieces, masked

_splice = native_module()


def native_feed(relay: FrameRelay, data: bytes) -> Items:
    """One read as the splice does it with the thread: C while it can, then Python from where C stopped."""
    state = relay.saved_state()
    if state is None:  # Python holds half a control frame: it finishes it
        return relay.feed(data)
    output, stop, after = _splice.rewrite(state, data)
    relay.restore(after)
    items: Items = [memoryview(output)] if output else []
    if stop >= 0:
        items += relay.feed((state[4] + data)[stop:])
    return items


class NativeRewriterTests(FrameRelayTests):
    """L{FrameRelayTests} with each read rewritten by the C rewriter first."""

    def feed(self, relay: FrameRelay, data: bytes) -> Items:
        return native_feed(relay, data)


class NativeRewriterDetailTests(SynchronousTestCase):
    """What only the C rewriter does: where it stops, what it keeps, what it hands back."""

    def test_stops_at_the_first_control_frame(self) -> None:
        """Data before a ping is rewritten; the ping and everything after it are left, unread."""
        before = masked(OP_BINARY, b"abc")
        rest = masked(OP_PING, b"p") + masked(OP_BINARY, b"def")
        output, stop, state = _splice.rewrite((0, b"", 0, False, b""), before + rest)
        self.assertEqual(output, encode_frame(OP_BINARY, b"abc"))
        self.assertEqual(stop, len(before))
        self.assertEqual(state, (0, b"", 0, False, b""))

    def test_stops_at_every_kind_of_broken_frame_without_judging_it(self) -> None:
        """Unmasked, reserved bits, reserved opcode, stray continuation, a length with the top bit or too long a form."""
        cases = [
            encode_frame(OP_TEXT, b"x"),
            masked(OP_TEXT, b"x", rsv=0x40),
            masked(0x3, b"x"),
            masked(OP_CONTINUATION, b"x"),
            bytes((0x82, 0xFF)) + struct.pack("!Q", 1 << 63) + b"mask",
            bytes((0x82, 0xFE)) + struct.pack("!H", 125) + b"mask",  # lengths not in their shortest form
            bytes((0x82, 0xFF)) + struct.pack("!Q", 65535) + b"mask",
        ]
        for data in cases:
            with self.subTest(data=data[:4]):
                output, stop, _ = _splice.rewrite((0, b"", 0, False, b""), data)
                self.assertEqual((output, stop), (b"", 0))

    def test_a_frame_in_flight_carries_over(self) -> None:
        """Remaining length, mask and its offset survive the hand-back, byte for byte."""
        payload = os.urandom(1000)
        frame = masked(OP_BINARY, payload, fin=False)
        output, stop, state = _splice.rewrite((0, b"", 0, False, b""), frame[:501])
        self.assertEqual(stop, -1)
        remaining, mask, offset, in_message, held = state
        self.assertEqual(
            (remaining, offset, in_message, held), (1000 - 493, 493 % 4, True, b"")
        )  # 8-byte header
        self.assertEqual(mask, frame[4:8])
        relay = FrameRelay()
        relay.restore(state)
        rest = b"".join(bytes(i) for i in relay.feed(frame[501:]))  # type: ignore[arg-type]
        self.assertEqual(output + rest, encode_frame(OP_BINARY, payload, fin=False))

    def test_partial_header_is_held(self) -> None:
        """The start of a header waits in the state for the rest of it."""
        frame = masked(OP_BINARY, bytes(70000))
        output, stop, state = _splice.rewrite((0, b"", 0, False, b""), frame[:9])
        self.assertEqual((output, stop, state[4]), (b"", -1, frame[:9]))

    def test_invalid_states_are_refused(self) -> None:
        """A mask that is not four bytes, an offset past the mask, too many held bytes: ValueError."""
        for state in [(5, b"abc", 0, False, b""), (0, b"", 4, False, b""), (0, b"", 0, False, bytes(14))]:
            with self.subTest(state=state):
                self.assertRaises(ValueError, _splice.rewrite, state, b"")

    def test_saved_state_refuses_half_a_control_frame(self) -> None:
        """Python keeps a rewriter that holds the start of a control frame, or more than a header."""
        relay = FrameRelay()
        relay.feed(masked(OP_PING, bytes(100))[:50])
        self.assertIsNone(relay.saved_state())
        relay = FrameRelay()
        relay.feed(masked(OP_BINARY, bytes(70000))[:9])
        self.assertEqual(relay.saved_state(), (0, b"", 0, False, masked(OP_BINARY, bytes(70000))[:9]))


def _raw_frame(opcode: int, fin: bool, rsv: int, length: int, key: bytes | None) -> bytes:
    """A frame with any header bits (valid or not), masked with C{key} unless it is C{None}."""
    header = bytes(((0x80 if fin else 0) | rsv | opcode,))
    flag = 0x80 if key is not None else 0
    if length < 126:
        header += bytes((flag | length,))
    elif length < 65536:
        header += bytes((flag | 126,)) + struct.pack("!H", length)
    else:
        header += bytes((flag | 127,)) + struct.pack("!Q", length)
    payload = bytes((i * 7) & 0xFF for i in range(min(length, 300))) + b"\xab" * max(0, length - 300)
    return header + (key + xor_mask(payload, key) if key is not None else payload)


def _longer_form(opcode: int, length: int, key: bytes) -> bytes:
    """A masked frame whose length is written in a longer form than the shortest (64-bit if over 125)."""
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", length)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + struct.pack("!Q", length)
    payload = bytes(length)
    return head + key + xor_mask(payload, key)


_lengths = st.one_of(st.integers(0, 200), st.sampled_from([125, 126, 127, 65535, 65536, 70000]))
_keys = st.binary(min_size=4, max_size=4)


@st.composite
def _message(draw: st.DrawFn) -> bytes:
    """One data message, fragmented or not, with pings and pongs between its fragments (all valid)."""
    out = b""
    fragments = draw(st.lists(_lengths, min_size=1, max_size=3))
    for i, length in enumerate(fragments):
        opcode = draw(st.sampled_from([OP_TEXT, OP_BINARY])) if i == 0 else OP_CONTINUATION
        out += _raw_frame(opcode, i == len(fragments) - 1, 0, length, draw(_keys))
        if draw(st.integers(0, 3)) == 0:
            control = draw(st.sampled_from([OP_PING, OP_PONG]))
            out += _raw_frame(control, True, 0, draw(st.integers(0, 125)), draw(_keys))
    return out


# Frames that break RFC 6455 in one way each, and bytes that are no frame at all.
_broken = st.one_of(
    st.builds(_raw_frame, st.just(OP_BINARY), st.just(True), st.just(0), _lengths, st.none()),  # unmasked
    st.builds(
        _raw_frame, st.just(OP_TEXT), st.just(True), st.sampled_from([0x40, 0x20, 0x10]), _lengths, _keys
    ),
    st.builds(_raw_frame, st.sampled_from([0x3, 0x7, 0xB, 0xF]), st.booleans(), st.just(0), _lengths, _keys),
    st.builds(_raw_frame, st.just(OP_CONTINUATION), st.booleans(), st.just(0), _lengths, _keys),
    st.builds(
        _raw_frame, st.sampled_from([OP_PING, 0x8]), st.just(False), st.just(0), st.integers(0, 9), _keys
    ),
    st.builds(_raw_frame, st.just(OP_PING), st.just(True), st.just(0), st.sampled_from([126, 65536]), _keys),
    st.just(bytes((0x82, 0xFF)) + struct.pack("!Q", 1 << 63) + b"mask"),
    st.builds(
        _longer_form, st.sampled_from([OP_BINARY, OP_CONTINUATION, OP_PING]), st.integers(0, 200), _keys
    ),
    st.binary(min_size=1, max_size=40),
)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Valid messages, then (half the time) one broken frame or garbage somewhere, maybe cut short."""
    messages = draw(st.lists(_message(), max_size=6))
    if draw(st.booleans()):
        messages.insert(draw(st.integers(0, len(messages))), draw(_broken))
    stream = b"".join(messages)
    if stream and draw(st.integers(0, 4)) == 0:
        stream = stream[: draw(st.integers(0, len(stream) - 1))]  # the sender stops in the middle
    return stream


def _outcome(
    feed: Callable[[FrameRelay, bytes], Items], stream: bytes, cuts: list[int]
) -> tuple[bytes, list[ControlFrame], tuple[int, str] | None, int]:
    """Feed C{stream} in reads of the given sizes (cycled): data out, control frames, the error, bytes held."""
    relay = FrameRelay()
    data: list[bytes] = []
    controls: list[ControlFrame] = []
    try:
        for piece in in_pieces(stream, cuts):
            for item in feed(relay, piece):
                if isinstance(item, ControlFrame):
                    controls.append(item)
                else:
                    data.append(bytes(item))
    except FrameError as e:
        return b"".join(data), controls, (e.code, e.reason), relay.buffered
    return b"".join(data), controls, None, relay.buffered


class ArbitraryInputTests(SynchronousTestCase):
    """
    Whatever a sender writes, the C rewriter and L{FrameRelay} agree on it.

    The streams are fragmented messages with pings and pongs, every length form; half of them carry one
    frame that breaks RFC 6455 (unmasked, reserved bits or opcodes, a stray continuation, a fragmented or
    oversized control frame, an impossible length) or bytes that are no frame at all, and some stop in
    the middle. They are read in pieces of any size. The C code must never read or write outside its
    buffers on any of them; CI also runs these tests against a build with AddressSanitizer and
    UndefinedBehaviorSanitizer (C{scripts/test-native-sanitized}).
    """

    @given(stream=streams(), cuts=st.lists(st.integers(1, 80000), min_size=1, max_size=6))
    @settings(max_examples=300, deadline=None)
    def test_any_stream_gives_what_python_gives(self, stream: bytes, cuts: list[int]) -> None:
        """The same data, control frames, error (close code and reason) and held bytes, read by read."""
        self.assertEqual(_outcome(native_feed, stream, cuts), _outcome(FrameRelay.feed, stream, cuts))

    @given(
        state=st.tuples(
            st.one_of(st.integers(0, 300), st.integers(0, 2**64 - 1)),
            st.binary(max_size=5),
            st.integers(0, 6),
            st.booleans(),
            st.binary(max_size=16),
        ),
        data=st.one_of(streams(), st.binary(max_size=300)),
    )
    @settings(max_examples=300, deadline=None)
    def test_any_state_is_refused_or_continued_within_bounds(
        self, state: tuple[int, bytes, int, bool, bytes], data: bytes
    ) -> None:
        """
        A state Python would never hand over (a full header held, a control frame's start) is still safe.

        It is refused with ValueError, or the rewrite stays within what it was given and leaves a state
        that C{rewrite} accepts again.
        """
        try:
            output, stop, after = _splice.rewrite(state, data)
        except ValueError:
            return
        given_bytes = len(state[4]) + len(data)
        self.assertLessEqual(len(output), given_bytes)
        self.assertTrue(stop == -1 or 0 <= stop <= given_bytes, stop)
        _splice.rewrite(after, b"")


class SwitchTests(SynchronousTestCase):
    """Whether the gateway uses the thread, and what it says at start."""

    def test_switched_off(self) -> None:
        """native_splice = 0 gives no thread, and the start-up line says so."""
        from twisted.internet import reactor

        self.assertIsNone(NativeSplices.create(reactor, 65536, enabled=False))
        self.assertEqual(which(False), "in Python (native_splice = 0)")

    def test_switched_on(self) -> None:
        """Where the extension is built, the default is the thread on plain TCP legs."""
        from twisted.internet import reactor

        self.assertIsNotNone(NativeSplices.create(reactor, 65536))
        self.assertIn("by the native thread", which(True))

    def test_not_built(self) -> None:
        """Without the extension there is no thread, and the start-up line says why."""
        from twisted.internet import reactor

        from relay.hybrid import native

        self.patch(native, "_splice", None)
        self.patch(native, "_missing", "No module named 'relay._splice'")
        self.assertIsNone(NativeSplices.create(reactor, 65536))
        self.assertEqual(
            which(True),
            "in Python (the extension relay._splice is not built here: No module named 'relay._splice')",
        )
