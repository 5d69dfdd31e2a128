"""
The C frame codec (C{relay._splice.read_frame}, C{xor_move}, C{build_frame}) against the Python reference in L{relay.wsframes}.

Where the extension is built, L{relay.wsframes.read_frame} and C{xor_move} are the C ones, so the tests of
L{relay.wsframes} test those; here the Python functions run the same tests, and Hypothesis holds the two to
the same answer for any buffer, offset and setting, frames of every kind included.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from relay import wsframes
from relay.wsframes import FAST_PAYLOAD_LIMIT, WAIT_LIMIT, py_build_frame, py_read_frame, py_xor_move

from . import test_wsframes as base  # a module: its classes would be collected again here
from .nativeneed import native_module

_splice = native_module()


class PythonReadFrameTests(base.ReadFrameTests):
    """L{base.ReadFrameTests} for the Python reference."""

    read_frame = staticmethod(py_read_frame)


class PythonBinaryFrameTests(base.BinaryFrameTests):
    """L{base.BinaryFrameTests} for the Python reference."""

    read_frame = staticmethod(py_read_frame)


class PythonStrictnessTests(base.StrictnessTests):
    """L{base.StrictnessTests} for the Python reference."""

    read_frame = staticmethod(py_read_frame)


def _length_field(length: int, form: int) -> bytes:
    """The 7-bit length and its extension: in the shortest form (0), or forced into 16 (1) or 64 bits (2)."""
    if form == 0:
        form = 0 if length < 126 else 1 if length <= 0xFFFF else 2
    if form == 0:
        return bytes((length,))
    if form == 1:
        return bytes((126,)) + (length & 0xFFFF).to_bytes(2, "big")
    return bytes((127,)) + length.to_bytes(8, "big")


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """A frame of any kind: text, binary, control or reserved; masked or not; whole or cut; odd lengths."""
    first = draw(st.sampled_from([0x81, 0x82, 0x01, 0x02, 0x00, 0x80, 0x88, 0x89, 0x8A, 0x91, 0xC1, 0x83]))
    payload = draw(
        st.one_of(
            st.binary(max_size=300),
            st.text(max_size=100).map(str.encode),
            st.sampled_from([b"\xff\xfe", b"\xed\xa0\x80", b"\xc0\xaf", "h\u00e9llo".encode()[:-1]]),
            st.sampled_from([125, 126, 127, 0xFFFF, 0x10000, WAIT_LIMIT + 1]).map(bytes),
        )
    )
    masked = draw(st.booleans())
    form = draw(st.integers(min_value=0, max_value=2))
    length = len(payload)
    if draw(st.integers(min_value=0, max_value=9)) == 0:  # a declared length the payload does not have
        length = draw(st.sampled_from([FAST_PAYLOAD_LIMIT, FAST_PAYLOAD_LIMIT + 1, WAIT_LIMIT + 1, 1 << 62]))
    head = bytes((first,)) + bytes(((0x80 if masked else 0) | _length_field(length, form)[0],))
    head += _length_field(length, form)[1:]
    if masked:
        key = draw(st.binary(min_size=4, max_size=4))
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    frame = head + payload
    cut = draw(st.integers(min_value=0, max_value=len(frame)))
    return frame[:cut] if draw(st.booleans()) else frame


class EquivalenceTests(SynchronousTestCase):
    """The C codec answers as the Python reference does."""

    @settings(max_examples=3000, deadline=None)
    @given(
        prefix=st.binary(max_size=12),
        frame_list=st.lists(frames(), min_size=1, max_size=3),
        masked=st.booleans(),
        max_payload=st.sampled_from([0, 1, 125, 126, 1000, WAIT_LIMIT, 1 << 20, 1 << 62]),
        binary=st.booleans(),
        extra=st.integers(min_value=0, max_value=3),
    )
    def test_read_frame(
        self, prefix: bytes, frame_list: list[bytes], masked: bool, max_payload: int, binary: bool, extra: int
    ) -> None:
        """Offsets into any mix of frames (each frame's start and the bytes around it): the same answer."""
        buffer = prefix + b"".join(frame_list)
        offsets = set(range(min(len(buffer), 40))) | {len(buffer) + extra}
        start = len(prefix)
        for frame in frame_list:
            offsets |= {start - 1, start, start + 1, start + 2, start + len(frame) - 1}
            start += len(frame)
        for offset in sorted(o for o in offsets if o >= 0):
            expected = py_read_frame(buffer, offset, masked, max_payload, binary)
            self.assertEqual(
                _splice.read_frame(buffer, offset, masked, max_payload, binary), expected, offset
            )

    def test_read_frame_keywords_and_default(self) -> None:
        """C{binary} defaults to false and may be given by name, as in Python."""
        frame = b"\x82\x03abc"
        self.assertEqual(_splice.read_frame(frame, 0, False, 100), (5, None))
        self.assertEqual(_splice.read_frame(frame, 0, False, 100, binary=True), (5, b"abc"))
        self.assertEqual(_splice.read_frame(memoryview(frame), 0, False, 100, True), (5, b"abc"))

    def test_read_frame_refuses_a_negative_offset(self) -> None:
        """A negative offset is a caller's mistake (Python's would index from the end): refused."""
        self.assertRaises(ValueError, _splice.read_frame, b"\x81\x00", -1, False, 100)

    @settings(max_examples=500, deadline=None)
    @given(
        data=st.binary(max_size=200),
        key=st.binary(min_size=4, max_size=4),
        cuts=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
    )
    def test_xor_move(self, data: bytes, key: bytes, cuts: tuple[float, float, float]) -> None:
        """Moves down an overlapping range with the XOR: the same bytes as the Python reference."""
        at = int(cuts[0] * len(data))
        to = int(cuts[1] * at)  # 0 <= to <= at
        n = int(cuts[2] * (len(data) - at))  # within the buffer
        c_buffer, py_buffer = bytearray(data), bytearray(data)
        _splice.xor_move(memoryview(c_buffer), to, at, n, key)
        py_xor_move(memoryview(py_buffer), to, at, n, key)
        self.assertEqual(c_buffer, py_buffer)

    def test_xor_move_refuses_what_it_cannot_do(self) -> None:
        """A key that is not 4 bytes, a move upward, a range past the end, a read-only buffer: refused."""
        buffer = bytearray(16)
        self.assertRaises(ValueError, _splice.xor_move, buffer, 0, 0, 4, b"abc")
        self.assertRaises(ValueError, _splice.xor_move, buffer, 2, 1, 4, b"abcd")
        self.assertRaises(ValueError, _splice.xor_move, buffer, 0, 10, 7, b"abcd")
        self.assertRaises(TypeError, _splice.xor_move, b"read-only", 0, 0, 4, b"abcd")

    @settings(max_examples=500, deadline=None)
    @given(
        payload=st.one_of(
            st.binary(max_size=300),
            st.sampled_from([125, 126, 127, 0xFFFF, 0x10000, 0x10001]).map(bytes),
        ),
        first=st.integers(min_value=0, max_value=255),
        key=st.one_of(st.none(), st.binary(min_size=4, max_size=4)),
    )
    def test_build_frame(self, payload: bytes, first: int, key: bytes | None) -> None:
        """Any payload, first byte and key (or none): the same frame as the Python reference, and readable."""
        frame = _splice.build_frame(payload, first, key)
        self.assertEqual(frame, py_build_frame(payload, first, key))
        self.assertEqual(_splice.build_frame(memoryview(payload), first, key), frame)
        if first in (0x81, 0x82):
            end, read = py_read_frame(frame, 0, key is not None, 1 << 30, binary=True)
            self.assertEqual(end, len(frame))
            if read is not None:
                self.assertEqual(read, payload)

    def test_build_frame_refuses_what_it_cannot_do(self) -> None:
        """A key that is not 4 bytes (or None), a first byte out of range: refused."""
        self.assertRaises(ValueError, _splice.build_frame, b"x", 0x81, b"abc")
        self.assertRaises(ValueError, _splice.build_frame, b"x", 0x81, bytearray(b"abcd"))
        self.assertRaises(ValueError, _splice.build_frame, b"x", 256, None)
        self.assertRaises(ValueError, _splice.build_frame, b"x", -1, None)

    def test_in_use(self) -> None:
        """The extension is built here, so L{relay.wsframes} uses its functions."""
        self.assertTrue(wsframes.NATIVE_CODEC)
        self.assertIs(wsframes.read_frame, _splice.read_frame)
        self.assertIs(wsframes.xor_move, _splice.xor_move)
        self.assertIs(wsframes.build_frame, _splice.build_frame)
