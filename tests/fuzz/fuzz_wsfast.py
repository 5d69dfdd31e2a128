"""relay.wsfast over relay.wsframes.read_frame, a stream in fuzzer-chosen reads, the protocol held after messages or not: every byte reaches Autobahn or onMessage once, in order."""

from __future__ import annotations

from relay.wsfast import FastMessageReader
from relay.wsframes import FAST_PAYLOAD_LIMIT


def _frame(stream: bytes, at: int) -> tuple[int, int, bool, int, bytes]:
    """The frame at C{at}, read the simple way: first byte, second byte, masked, its size in all, payload."""
    b0, b1 = stream[at], stream[at + 1]
    length, header = b1 & 0x7F, 2
    if length == 126:
        length, header = int.from_bytes(stream[at + 2 : at + 4], "big"), 4
    elif length == 127:
        length, header = int.from_bytes(stream[at + 2 : at + 10], "big"), 10
    masked = bool(b1 & 0x80)
    key = stream[at + header : at + header + 4] if masked else b"\0\0\0\0"
    start = at + header + (4 if masked else 0)
    payload = bytes(b ^ key[i % 4] for i, b in enumerate(stream[start : start + length]))
    return b0, b1, masked, start + length - at, payload


class _Protocol:
    """What FastMessageReader needs of an Autobahn protocol; Autobahn here takes whole what it is given."""

    STATE_OPEN = 1
    STATE_CLOSED = 3

    def __init__(self, stream: bytes, masked: bool, binary: bool, limit: int, holds: bool) -> None:
        self.state = self.STATE_OPEN
        self.data = b""
        self.inside_message = False
        self.current_frame = None
        self.autoPingTimeoutCall = None
        self.maxMessagePayloadSize = limit
        self.stream, self.masked, self.binary, self.cursor = stream, masked, binary, 0
        self.holds, self.held = holds, False  # holds: each message holds the protocol (a full queue)

    def _dataReceived(self, data: bytes) -> None:
        assert not self.held, "bytes reached Autobahn while the protocol was held"
        assert self.stream[self.cursor : self.cursor + len(data)] == data, "bytes lost or reordered"
        self.cursor += len(data)

    def onMessage(self, payload: bytes, is_binary: bool) -> None:
        assert not self.held, "a message while the protocol was held"
        self.held = self.holds
        b0, b1, masked, size, expected = _frame(self.stream, self.cursor)
        assert self.cursor + size <= len(self.stream), "a message from bytes not read yet"
        assert masked is self.masked and b0 in ((0x81, 0x82) if self.binary else (0x81,)), (b0, b1)
        assert is_binary is (b0 == 0x82) and payload == expected
        assert len(payload) <= min(FAST_PAYLOAD_LIMIT, self.maxMessagePayloadSize or len(payload))
        if not is_binary:
            payload.decode("utf-8")
        self.cursor += size

    def resume(self, reader: FastMessageReader) -> None:
        self.held = False
        reader.resume()


def check(data: bytes) -> None:
    if len(data) < 2:
        return
    flags, count = data[0], data[1] % 8
    sizes, stream = data[2 : 2 + count], data[2 + count :]
    masked, binary = bool(flags & 1), bool(flags & 2)
    limit = (0, 10, 200, 70_000)[flags >> 2 & 3]
    protocol = _Protocol(stream, masked, binary, limit, holds=bool(flags & 0x10))
    reader = FastMessageReader(protocol, masked=masked, binary=binary, held=lambda: protocol.held)
    at = 0
    for size in [*sizes, len(stream)]:
        if flags & 0x20:  # the queue drains before each read
            protocol.resume(reader)
        reader.data_received(stream[at : at + size])
        at += size
        if at >= len(stream):
            break
    for _ in range(len(stream) + 1):  # each resume reads at least one frame, or hands the rest over
        protocol.resume(reader)
    assert not reader.keeping
    unread = reader._unread + b"".join(reader._more)
    assert stream[protocol.cursor :] == unread, (protocol.cursor, len(stream), unread)
