"""
Whole, simple WebSocket frames (RFC 6455 section 5.2), written and read without Autobahn's frame machinery.

Autobahn stays in charge of handshakes, pings, closing and anything unusual; but its per-message paths
(a frame object, a masker object per frame, a debug message formatted on every write, four callbacks per
read) cost more than everything else the gateway does for a multicast copy or a relayed HTTP request's
control messages. Most messages are one complete, uncompressed frame (permessage-deflate is never
negotiated on the gateway), so the C{$wcf} bindings build their text frames here once and write them
straight to the transport, and L{read_frame} picks such frames out of a read.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final, Protocol

_FIN_TEXT: Final = 0x81
FIN_BINARY: Final = 0x82
"""The first byte of a whole, unfragmented binary frame without extension bits."""
_MASKED: Final = 0x80
_NVX_THRESHOLD: Final = 1024

try:  # Autobahn ships a C XOR masker (CFFI) in its wheels; use it for large payloads when present.
    from _nvx_xormasker import ffi as _ffi
    from _nvx_xormasker import lib as _lib
except ImportError:  # pragma: no cover - depends on how autobahn was built
    _ffi = _lib = None


def _header(opcode_byte: int, length: int, mask_bit: int) -> bytes:
    if length <= 125:
        return bytes((opcode_byte, mask_bit | length))
    if length <= 0xFFFF:
        return bytes((opcode_byte, mask_bit | 126)) + length.to_bytes(2, "big")
    return bytes((opcode_byte, mask_bit | 127)) + length.to_bytes(8, "big")


def py_xor_move(view: memoryview, to: int, at: int, n: int, key: bytes) -> None:
    """
    XOR the C{n} bytes at C{view[at:]} with the 4-byte C{key} repeated and put them at C{view[to:]}.

    C{to <= at}; the ranges may overlap (the gateway's splice rewrites frames in place). Moves go through
    the memoryview, whose slice assignment is a C{memmove}; large payloads are then XORed in place by
    Autobahn's C masker when it is available, small ones with one big-integer XOR (no per-byte loop).
    """
    if not n:
        return
    if _lib is not None and n >= _NVX_THRESHOLD:
        if to != at:
            view[to : to + n] = view[at : at + n]
        masker = _lib.nvx_xormask_new(key)
        try:
            with _ffi.from_buffer("uint8_t[]", view) as buf:
                _lib.nvx_xormask_process(masker, buf + to, n)
        finally:
            _lib.nvx_xormask_free(masker)
        return
    repeated = int.from_bytes((key * ((n >> 2) + 1))[:n], "little")
    view[to : to + n] = (int.from_bytes(view[at : at + n], "little") ^ repeated).to_bytes(n, "little")


def mask(payload: bytes | memoryview, key: bytes) -> bytes:
    """C{payload} XOR the 4-byte masking C{key} repeated (RFC 6455 section 5.3); the same undoes it."""
    buffer = bytearray(payload)
    xor_move(memoryview(buffer), 0, 0, len(buffer), key)
    return bytes(buffer)


def masked_frame(payload: bytes, key: bytes | None = None, *, binary: bool = False) -> bytes:
    """
    One unfragmented text or binary frame from a client: masked, with a fresh random key unless one is given.

    The key need not be cryptographically random (RFC 6455 asks for unpredictability against proxies
    that a browser script could steer; Autobahn uses the same generator).
    """
    if key is None:
        key = random.getrandbits(32).to_bytes(4, "big")
    return build_frame(payload, FIN_BINARY if binary else _FIN_TEXT, key)


def server_frame(payload: bytes, *, binary: bool = False) -> bytes:
    """One unfragmented, unmasked text or binary frame (server to client)."""
    return build_frame(payload, FIN_BINARY if binary else _FIN_TEXT, None)


def py_build_frame(payload: bytes | memoryview, first: int, key: bytes | None) -> bytes:
    """One whole frame with C{first} as its first byte: masked with C{key} when given, else plain."""
    if key is None:
        return _header(first, len(payload), 0) + payload
    frame = bytearray(_header(first, len(payload), _MASKED))
    frame += key
    start = len(frame)
    frame += payload
    xor_move(memoryview(frame), start, start, len(payload), key)  # masked in place, not in a copy of its own
    return bytes(frame)


FAST_PAYLOAD_LIMIT: Final = 1024 * 1024
"""Largest frame read by L{read_frame}; larger ones are left to the general parser, which streams them."""
WAIT_LIMIT: Final = 64 * 1024
"""Largest frame whose rest L{read_frame} waits for; a larger frame that is not complete is handed over."""
INCOMPLETE: Final = 0
"""L{read_frame}: the frame at the offset is not complete yet; wait for more bytes."""
HAND_OVER: Final = -1
"""L{read_frame}: leave everything from the offset on to the general parser (large or over the limit)."""


class Later(Protocol):
    """What L{FrameCache} needs of a reactor (C{IReactorTime.callLater})."""

    def callLater(self, delay: float, callable: Callable[[], None]) -> object:  # noqa: N802 - Twisted's name
        """Call C{callable} after C{delay} seconds."""
        ...


class FrameCache:
    """
    The text frame of the payload written last, for further writes of the same bytes object.

    A multicast publish hands one payload to every subscriber in one go, so each copy after the first costs
    a transport write and nothing else (and the subscribers' transports share one frame). A payload over
    C{keep} bytes and its frame are let go at the end of the reactor turn they were built in: kept until
    the next write, they held up to twice the largest message (128 MiB) for as long as nothing else came.
    """

    def __init__(self, clock: Later, keep: int = WAIT_LIMIT) -> None:
        self._clock = clock
        self._keep = keep
        self._payload = b""
        self._frame = server_frame(b"")
        self._forget: object | None = None

    def frame_for(self, payload: bytes) -> bytes:
        """The frame carrying C{payload}: the last one built if C{payload} is the same object."""
        if payload is not self._payload:
            self._frame = server_frame(payload)
            self._payload = payload
            if len(payload) > self._keep and self._forget is None:
                self._forget = self._clock.callLater(0, self._forget_large)
        return self._frame

    def _forget_large(self) -> None:
        self._forget = None
        if len(self._payload) > self._keep:
            self._payload = b""
            self._frame = server_frame(b"")


def _extent(buffer: bytes, offset: int) -> tuple[int, int] | None:
    """
    Where the frame at C{offset} has its masking key (or payload), and its payload length.

    C{None} while its header (the length's extension included) is not all there.
    """
    available = len(buffer) - offset
    if available < 2:
        return None
    length = buffer[offset + 1] & 0x7F
    if length < 126:
        return offset + 2, length
    header = 4 if length == 126 else 10
    if available < header:
        return None
    return offset + header, int.from_bytes(buffer[offset + 2 : offset + header], "big")


def frame_size(buffer: bytes, offset: int) -> int:
    """The bytes the frame at C{offset} takes in all (header, key, payload); 0 while its header is not all there."""
    extent = _extent(buffer, offset)
    if extent is None:
        return 0
    start, length = extent
    return start - offset + (4 if buffer[offset + 1] & _MASKED else 0) + length


def py_read_frame(
    buffer: bytes, offset: int, masked: bool, max_payload: int, binary: bool = False
) -> tuple[int, bytes | None]:
    """
    Look at the frame starting at C{offset}: is it a whole, simple message?

    A fast path reads the frames almost every message consists of: one final text frame (FIN set, no
    extension bits) whose mask bit is what the direction requires, at most C{max_payload} bytes and
    L{FAST_PAYLOAD_LIMIT} (and whole in the buffer if over L{WAIT_LIMIT}), carrying valid UTF-8; with C{binary}, also such a binary frame (first byte
    L{FIN_BINARY}). Anything else (control frames, fragments, binary frames unless asked for, a wrong mask
    bit, invalid UTF-8) is left to the general parser (Autobahn), which answers it as it always did.

    @param masked: whether frames in this direction must be masked (client to server).
    @return: C{(end, payload)}: C{end} is the offset after the frame, or L{INCOMPLETE} or L{HAND_OVER};
        C{payload} is the unmasked payload of a simple frame (its first byte tells text from binary), or
        C{None} when the frame C{buffer[offset:end]} must go to the general parser.
    """
    extent = _extent(buffer, offset)
    if extent is None:
        return INCOMPLETE, None
    start, length = extent
    # a length not in its shortest encoding, which RFC 6455 requires: Autobahn fails the connection
    if (start - offset == 4 and length < 126) or (start - offset == 10 and length <= 0xFFFF):
        return HAND_OVER, None
    first, second = buffer[offset], buffer[offset + 1]
    if length > FAST_PAYLOAD_LIMIT or length > max_payload:
        return HAND_OVER, None
    has_mask = bool(second & _MASKED)
    key_end = start + 4 if has_mask else start
    end = key_end + length
    is_binary = first == FIN_BINARY and binary
    simple = (first == _FIN_TEXT or is_binary) and has_mask is masked
    if end > len(buffer):
        # Waiting for the rest of a large frame would copy what came so far on every read; Autobahn's
        # parser takes such a frame piece by piece, and answers at once what it refuses from the header.
        return (HAND_OVER if length > WAIT_LIMIT or not simple else INCOMPLETE), None
    if not simple:
        return end, None
    payload = buffer[key_end:end]
    if has_mask:
        payload = mask(payload, buffer[start:key_end])
    if is_binary:
        return end, payload
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return end, None
    return end, payload


xor_move: Callable[[memoryview, int, int, int, bytes], None] = py_xor_move
"""L{py_xor_move}, in C where the extension C{relay._splice} is built (C{_splice_codec.c})."""
read_frame: Callable[..., tuple[int, bytes | None]] = py_read_frame
"""L{py_read_frame}, in C where the extension C{relay._splice} is built (C{_splice_codec.c})."""
build_frame: Callable[[bytes | memoryview, int, bytes | None], bytes] = py_build_frame
"""L{py_build_frame}, in C where the extension C{relay._splice} is built (C{_splice_codec.c})."""
NATIVE_CODEC = False
"""Whether L{read_frame}, L{xor_move} and L{build_frame} are the C ones."""

try:  # the Python functions above are the reference: tests hold the C ones to their answers
    from relay import _splice  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - not built (no compiler, not Linux): the Python functions serve
    pass
else:
    xor_move, read_frame, build_frame = _splice.xor_move, _splice.read_frame, _splice.build_frame
    NATIVE_CODEC = True
