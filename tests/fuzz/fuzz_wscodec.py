"""The C frame codec (relay._splice.read_frame, xor_move, build_frame) against the Python reference in relay.wsframes: the same answer for any bytes, offset and setting."""

from __future__ import annotations

from relay.wsframes import py_build_frame, py_read_frame, py_xor_move

try:
    from relay import _splice  # type: ignore[attr-defined]
except ImportError:  # not built here: the target has nothing to compare (test_corpus replays it anyway)
    _splice = None

_LIMITS = (0, 1, 125, 126, 200, 0xFFFF, 1 << 20, 1 << 62)


def check(data: bytes) -> None:
    if len(data) < 2 or _splice is None:
        return
    flags, offset = data[0], data[1]
    buffer = data[2:]
    masked, binary, limit = bool(flags & 1), bool(flags & 2), _LIMITS[flags >> 2 & 7]
    for at in {offset, 0, max(len(buffer) - 1, 0), len(buffer)}:
        expected = py_read_frame(buffer, at, masked, limit, binary)
        answer = _splice.read_frame(buffer, at, masked, limit, binary)
        assert answer == expected, (at, answer, expected)
    if len(buffer) >= 4:
        key, rest = buffer[:4], buffer[4:]
        to = offset % (len(rest) + 1)
        at = min(to + (flags >> 5), len(rest))  # at most 7 bytes further on: the ranges overlap
        n = len(rest) - at
        ours, theirs = bytearray(rest), bytearray(rest)
        _splice.xor_move(memoryview(ours), to, at, n, key)
        py_xor_move(memoryview(theirs), to, at, n, key)
        assert ours == theirs, (to, at, n)
        masking = None if flags & 0x10 else key
        assert _splice.build_frame(rest, offset, masking) == py_build_frame(rest, offset, masking)
