"""
A WebSocket frame rewriter for relaying between two server-side legs without parsing messages.

Both parties of a rendezvous are WebSocket I{clients} of the relay, so every frame we read is masked and
every frame we write must not be. Instead of decoding whole messages and re-encoding them (which costs a
Python object per frame and buffers whole messages), L{FrameRelay} walks each read buffer in a tight loop:
it checks and rewrites data-frame headers, unmasks payload bytes as they arrive (a frame may span many
reads, and is forwarded piece by piece), and hands control frames (ping, pong, close) to the caller, which
answers them per leg. Memory per leg is bounded by one partial header or control frame (at most 130
bytes: a masked control frame of 125 bytes, all but its last byte; lengths must be in their shortest form).

Text payloads are not UTF-8-checked here: the receiving endpoint validates them and closes with 1007,
which the relay then carries back like any other close.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from relay.wsframes import mask as masked_bytes
from relay.wsframes import xor_move

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_DATA_OPCODES = frozenset({OP_CONTINUATION, OP_TEXT, OP_BINARY})
_CONTROL_OPCODES = frozenset({OP_CLOSE, OP_PING, OP_PONG})
HEADROOM = 256
"""Scratch bytes L{FrameRelay.feed_into} needs in front of new data: more than it ever holds back (130)."""

_LONGEST_HEADER = 14
RewriterState = tuple[int, bytes, int, bool, bytes]
"""L{FrameRelay.saved_state}: payload still to come, its mask, the mask offset, in a message, held bytes."""

_NOT_SHORTEST = "frame length not in its shortest form"
"""RFC 6455 section 5.2 requires the minimal length encoding; Autobahn fails such a frame with 1002 too."""
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class FrameError(Exception):
    """
    The peer broke the framing rules; the leg must be closed with C{code}.

    @ivar code: the close code (1002 protocol error, 1007 invalid payload).
    @ivar reason: a short description for the close frame and the log.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.items: list[memoryview | ControlFrame] = []  # what the read held before the violation


@dataclass(frozen=True, slots=True)
class ControlFrame:
    """A complete, unmasked control frame read from a leg."""

    opcode: int
    payload: bytes


def _rotate(mask: bytes, offset: int) -> bytes:
    shift = offset & 3
    return mask[shift:] + mask[:shift] if shift else mask


def unmask(data: bytes | memoryview, mask: bytes, offset: int = 0) -> bytes:
    """C{data} XOR the 4-byte C{mask}, starting C{offset} bytes into the masked payload."""
    return masked_bytes(data, _rotate(mask, offset))


def data_header(first_byte: int, length: int) -> bytes:
    """An unmasked frame header with the given first byte (FIN, RSV, opcode) and payload length."""
    if length < 126:
        return bytes((first_byte, length))
    if length < 65536:
        return bytes((first_byte, 126)) + _U16.pack(length)
    return bytes((first_byte, 127)) + _U64.pack(length)


def encode_frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """An unmasked (server-to-client) frame."""
    return data_header((0x80 if fin else 0) | opcode, len(payload)) + payload


def encode_close(code: int | None, reason: str = "") -> bytes:
    """An unmasked close frame; C{code=None} sends an empty close payload."""
    if code is None:
        return encode_frame(OP_CLOSE)
    data = reason.encode("utf-8")[:123]
    return encode_frame(OP_CLOSE, _U16.pack(code) + data)


def valid_close_code(code: int) -> bool:
    """Tell whether a close code may appear on the wire (RFC 6455 section 7.4)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or (
        3000 <= code <= 4999
    )


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """
    Read a close frame's code and reason.

    @return: C{(None, "")} for an empty close payload.
    @raise FrameError: for a one-byte payload, a code not allowed on the wire, or a reason that is not UTF-8.
    """
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise FrameError(1002, "close frame with a one-byte payload")
    (code,) = _U16.unpack_from(payload)
    if not valid_close_code(code):
        raise FrameError(1002, f"close code {code} is not allowed on the wire")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(1007, "close reason is not UTF-8") from None
    return code, reason


class FrameRelay:
    """
    Turn a masked client-to-server byte stream into unmasked frames for the other leg.

    L{feed} and L{feed_into} return, in stream order, runs of unmasked frames to write to the other leg
    (memoryviews of the buffer the bytes were read into) and L{ControlFrame}s for the caller to act on.
    Message boundaries, fragmentation and frame sizes are kept exactly as received.

    The rewriting is done in place: an unmasked header is four bytes shorter than the masked one it
    replaces, so the output never overtakes the input, and each payload byte is moved and unmasked in
    the buffer it was read into.
    """

    __slots__ = ("_buffer", "_in_message", "_mask", "_offset", "_remaining")

    def __init__(self) -> None:
        self._buffer = b""
        self._remaining = 0
        self._mask = b""
        self._offset = 0
        self._in_message = False

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a header or control frame."""
        return len(self._buffer)

    def saved_state(self) -> RewriterState | None:
        """
        Where the rewriter is, for another rewriter to go on from (the splice's native thread), or C{None}.

        C{None} when it holds more than the start of a data frame's header: half a control frame, which
        only this rewriter finishes. The state is (payload bytes still to come, their mask, the mask
        offset, whether a fragmented message is open, the held bytes).
        """
        held = self._buffer
        if len(held) >= _LONGEST_HEADER or (held and held[0] & 0x08):
            return None
        return (self._remaining, self._mask, self._offset & 3, self._in_message, held)

    def restore(self, state: RewriterState) -> None:
        """Go on from a state that another rewriter reached (see L{saved_state})."""
        self._remaining, self._mask, self._offset, self._in_message, self._buffer = state

    @property
    def frame_remaining(self) -> int:
        """
        Payload bytes still to come of the data frame being relayed (0 between frames).

        While it is not 0 the other leg has been sent part of a frame, so nothing else may be written to
        that leg until the rest of it: the splice's own pongs and closes wait for it.
        """
        return self._remaining

    def feed(self, data: bytes) -> list[memoryview | ControlFrame]:
        """
        Consume bytes read from the leg (copied once into a buffer of their own).

        @raise FrameError: when the peer violates the framing rules; the leg must then be closed.
        """
        buffer = bytearray(HEADROOM)
        buffer += data
        return self.feed_into(buffer, HEADROOM, len(buffer))

    def feed_into(self, buffer: bytearray, start: int, end: int) -> list[memoryview | ControlFrame]:
        """
        Consume bytes read into C{buffer[start:end]}, rewriting them in place.

        C{buffer[:start]} is scratch space of at least L{HEADROOM} bytes, where the bytes held back from
        the previous read are put back in front of the new ones. The returned views are of C{buffer}: the
        caller must be done with them before it reads into C{buffer} again.

        @raise FrameError: when the peer violates the framing rules; the leg must then be closed.
        """
        held = self._buffer
        if held:
            start -= len(held)
            if start < 0:
                raise ValueError("feed_into needs HEADROOM bytes of scratch space before start")
            buffer[start : start + len(held)] = held
            self._buffer = b""
        return self._rewrite(buffer, start, end)

    def _rewrite(self, buffer: bytearray, start: int, end: int) -> list[memoryview | ControlFrame]:
        items: list[memoryview | ControlFrame] = []
        out = memoryview(buffer)
        written = run_start = pos = start
        try:
            while pos < end:
                remaining = self._remaining
                if remaining:
                    take = remaining if remaining <= end - pos else end - pos
                    xor_move(out, written, pos, take, _rotate(self._mask, self._offset))
                    written += take
                    self._offset += take
                    self._remaining = remaining - take
                    pos += take
                    continue
                if end - pos < 2:
                    break
                b0 = buffer[pos]
                b1 = buffer[pos + 1]
                if not b1 & 0x80:
                    raise FrameError(1002, "client frame is not masked")
                if b0 & 0x70:
                    raise FrameError(1002, "reserved bits set without a negotiated extension")
                length = b1 & 0x7F
                header = 6
                if length == 126:
                    header = 8
                    if end - pos < header:
                        break
                    (length,) = _U16.unpack_from(buffer, pos + 2)
                    if length < 126:
                        raise FrameError(1002, _NOT_SHORTEST)
                elif length == 127:
                    header = 14
                    if end - pos < header:
                        break
                    (length,) = _U64.unpack_from(buffer, pos + 2)
                    if length >> 63:
                        raise FrameError(1002, "frame length has the most significant bit set")
                    if length < 65536:
                        raise FrameError(1002, _NOT_SHORTEST)
                elif end - pos < header:
                    break
                opcode = b0 & 0x0F
                mask = bytes(buffer[pos + header - 4 : pos + header])  # a copy: the header is overwritten
                if opcode in _CONTROL_OPCODES:
                    if not b0 & 0x80:
                        raise FrameError(1002, "fragmented control frame")
                    if length > 125:
                        raise FrameError(1002, "control frame payload longer than 125 bytes")
                    if end - pos < header + length:
                        break
                    payload_at = pos + header
                    payload = unmask(out[payload_at : payload_at + length], mask)
                    pos = payload_at + length
                    if written > run_start:
                        items.append(out[run_start:written])
                    items.append(ControlFrame(opcode, payload))
                    run_start = written
                    continue
                if opcode not in _DATA_OPCODES:
                    raise FrameError(1002, f"reserved opcode {opcode}")
                if opcode == OP_CONTINUATION:
                    if not self._in_message:
                        raise FrameError(1002, "continuation frame outside a fragmented message")
                elif self._in_message:
                    raise FrameError(1002, "new data message before the previous one finished")
                self._in_message = not b0 & 0x80
                if length < 126:
                    buffer[written] = b0
                    buffer[written + 1] = length
                    written += 2
                else:
                    rewritten = data_header(b0, length)
                    out[written : written + len(rewritten)] = rewritten
                    written += len(rewritten)
                pos += header
                if length and length <= end - pos:  # the whole payload is here: unmask it right away
                    xor_move(out, written, pos, length, mask)
                    written += length
                    pos += length
                elif length:
                    self._remaining = length
                    self._mask = mask
                    self._offset = 0
        except FrameError as error:
            # The frames before the broken one are whole and rewritten: they are the peer's, and go on.
            if written > run_start:
                items.append(out[run_start:written])
            error.items = items
            raise
        if pos < end:
            self._buffer = bytes(out[pos:end])
        if written > run_start:
            items.append(out[run_start:written])
        return items
