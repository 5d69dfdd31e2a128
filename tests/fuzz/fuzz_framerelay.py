"""relay.hybrid.frames.FrameRelay fed a stream in fuzzer-chosen pieces: the same frames as a whole-stream reference."""

from __future__ import annotations

from relay.hybrid.frames import OP_CLOSE, ControlFrame, FrameError, FrameRelay, parse_close, valid_close_code

_MOST_HELD = 14 + 125  # a control frame whose length takes the 8-byte form, all but its last byte


def _header(b0: int, length: int) -> bytes:
    if length < 126:
        return bytes((b0, length))
    if length < 1 << 16:
        return bytes((b0, 126)) + length.to_bytes(2, "big")
    return bytes((b0, 127)) + length.to_bytes(8, "big")


def _unmask(payload: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def reference(stream: bytes) -> tuple[list[bytes | ControlFrame], int | None]:
    """
    The frames of a whole client stream, read the simple way.

    @return: data bytes (runs joined) and control frames in order, and the close code of the violation
        that ends the stream (or C{None}).
    """
    out: list[bytes | ControlFrame] = []
    data = bytearray()
    in_message = False
    pos, end = 0, len(stream)

    def flush() -> None:
        if data:
            out.append(bytes(data))
            data.clear()

    code: int | None = None
    while end - pos >= 2:
        b0, b1 = stream[pos], stream[pos + 1]
        if not b1 & 0x80 or b0 & 0x70:
            code = 1002
            break
        length, header = b1 & 0x7F, 6
        if length == 126:
            header = 8
        elif length == 127:
            header = 14
        if end - pos < header:
            break
        if header > 6:
            length = int.from_bytes(stream[pos + 2 : pos + header - 4], "big")
            if length >> 63 or length < (126 if header == 8 else 65536):  # top bit, or not the shortest form
                code = 1002
                break
        key = stream[pos + header - 4 : pos + header]
        opcode = b0 & 0x0F
        if opcode in (8, 9, 10):
            if not b0 & 0x80 or length > 125:
                code = 1002
                break
            if end - pos < header + length:
                break
            flush()
            out.append(ControlFrame(opcode, _unmask(stream[pos + header : pos + header + length], key)))
            pos += header + length
            continue
        if opcode not in (0, 1, 2) or (opcode == 0) != in_message:
            code = 1002
            break
        in_message = not b0 & 0x80
        data += _header(b0, length)
        payload = stream[pos + header : pos + header + length]
        data += _unmask(payload, key)
        pos += header + len(payload)
    flush()
    return out, code


def _joined(items: list[bytes | ControlFrame]) -> list[bytes | ControlFrame]:
    joined: list[bytes | ControlFrame] = []
    for item in items:
        if isinstance(item, bytes) and joined and isinstance(joined[-1], bytes):
            joined[-1] += item
        elif not isinstance(item, bytes) or item:
            joined.append(item)
    return joined


def check(data: bytes) -> None:
    if len(data) < 2:
        return
    flags, count = data[0], data[1] % 8
    sizes, stream = data[2 : 2 + count], data[2 + count :]
    pieces, at = [], 0
    for size in sizes:
        pieces.append(stream[at : at + size])
        at += size
    pieces.append(stream[at:])
    relay = FrameRelay()
    got: list[bytes | ControlFrame] = []
    code = None
    for index, piece in enumerate(pieces):
        try:
            items = relay.feed(piece)
        except FrameError as error:
            got += [i if isinstance(i, ControlFrame) else bytes(i) for i in error.items]
            code = error.code
            break
        got += [i if isinstance(i, ControlFrame) else bytes(i) for i in items]
        assert relay.buffered <= _MOST_HELD, relay.buffered
        if flags >> (index % 8) & 1:  # go on in another rewriter, as the splice's native thread does
            state = relay.saved_state()
            if state is not None:
                relay = FrameRelay()
                relay.restore(state)
    expected, expected_code = reference(stream)
    assert code == expected_code, (code, expected_code)
    assert _joined(got) == _joined(expected), (got, expected)
    for item in got:
        if isinstance(item, ControlFrame) and item.opcode == OP_CLOSE:
            try:
                close_code, reason = parse_close(item.payload)
            except FrameError as error:
                assert error.code in (1002, 1007)
                continue
            assert close_code is None or valid_close_code(close_code)
            assert reason.encode() == item.payload[2:]
