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

from twisted.trial.unittest import SynchronousTestCase

from relay.hybrid.frames import OP_BINARY, OP_CONTINUATION, OP_PING, OP_TEXT, FrameRelay, encode_frame
from relay.hybrid.native import NativeSplices, which

from .nativeneed import native_module
from .test_frames import FrameRelayTests, Items, masked

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
        """Unmasked, reserved bits, reserved opcode, stray continuation, 64-bit length with the top bit."""
        cases = [
            encode_frame(OP_TEXT, b"x"),
            masked(OP_TEXT, b"x", rsv=0x40),
            masked(0x3, b"x"),
            masked(OP_CONTINUATION, b"x"),
            bytes((0x82, 0xFF)) + struct.pack("!Q", 1 << 63) + b"mask",
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
