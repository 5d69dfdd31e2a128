"""
A minimal WebSocket client for load generation: upgrade bytes, masked frames, a frame reader.

Load generators must cost far less than what they measure, so they use neither Twisted nor Autobahn:
frames are built once and written in batches with blocking sockets (throughput, latency) or from an
asyncio protocol (connection establishment). The same client drives the direct, nginx and relayed
runs, so its own cost cancels out in the ratios.
"""

from __future__ import annotations

import base64
import os
import socket
import struct

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

MASK = b"\x37\xfa\x21\x3d"

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class HandshakeError(Exception):
    """The server did not answer the upgrade with 101."""

    def __init__(self, status_line: str) -> None:
        super().__init__(status_line)
        self.status_line = status_line


def upgrade_request(host: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    """An HTTP/1.1 upgrade request for C{path} with a fresh C{Sec-WebSocket-Key}."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def xor(payload: bytes, mask: bytes) -> bytes:
    """XOR C{payload} with a 4-byte mask (one big-integer operation)."""
    n = len(payload)
    if not n:
        return b""
    key = int.from_bytes((mask * ((n >> 2) + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


def frame(opcode: int, payload: bytes, *, masked: bool = True, fin: bool = True) -> bytes:
    """One frame; client frames are masked with a fixed key (benchmarks do not need fresh keys)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    flag = 0x80 if masked else 0
    if n < 126:
        header = bytes((b0, flag | n))
    elif n < 65536:
        header = bytes((b0, flag | 126)) + _U16.pack(n)
    else:
        header = bytes((b0, flag | 127)) + _U64.pack(n)
    if not masked:
        return header + payload
    return header + MASK + xor(payload, MASK)


def close_frame(code: int = 1000, *, masked: bool = True) -> bytes:
    """A close frame with a code and no reason."""
    return frame(OP_CLOSE, _U16.pack(code), masked=masked)


class FrameReader:
    """
    Incremental parser of the frames a server (or the relay) sends: unmasked, possibly fragmented.

    L{feed} returns complete messages as C{(opcode, payload)}; control frames come out as they arrive.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._parts: list[bytes] = []
        self._opcode = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Consume bytes; return the complete messages and control frames they finish."""
        buf = self._buffer
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            header = 2
            if length == 126:
                header = 4
                if size - pos < header:
                    break
                (length,) = _U16.unpack_from(buf, pos + 2)
            elif length == 127:
                header = 10
                if size - pos < header:
                    break
                (length,) = _U64.unpack_from(buf, pos + 2)
            mask = b""
            if b1 & 0x80:
                mask = bytes(buf[pos + header : pos + header + 4])
                header += 4
            if size - pos < header + length:
                break
            payload = bytes(buf[pos + header : pos + header + length])
            if mask:
                payload = xor(payload, mask)
            pos += header + length
            opcode = b0 & 0x0F
            if opcode >= 0x8:
                out.append((opcode, payload))
                continue
            if opcode:
                self._opcode = opcode
            self._parts.append(payload)
            if b0 & 0x80:
                out.append((self._opcode, b"".join(self._parts)))
                self._parts = []
        del buf[:pos]
        return out


def split_response(data: bytes) -> tuple[str, bytes] | None:
    """The status line of a complete response head and the bytes after it, or C{None} if incomplete."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    status_line = data[: data.find(b"\r\n")].decode("latin-1")
    return status_line, data[end + 4 :]


def is_switching(status_line: str) -> bool:
    """Whether a status line is C{HTTP/1.1 101 ...}."""
    parts = status_line.split(" ", 2)
    return len(parts) >= 2 and parts[1] == "101"


def connect(
    host: str, port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> tuple[socket.socket, bytes]:
    """
    Open a blocking WebSocket connection.

    @return: the socket and any bytes that followed the 101 response.
    @raise HandshakeError: when the answer is not 101.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(upgrade_request(f"{host}:{port}", path, headers))
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise HandshakeError("connection closed during the handshake")
        data += chunk
        parsed = split_response(data)
        if parsed is not None:
            break
    status_line, rest = parsed
    if not is_switching(status_line):
        sock.close()
        raise HandshakeError(status_line)
    return sock, rest


def receive_message(
    sock: socket.socket,
    reader: FrameReader,
    pending: list[tuple[int, bytes]],
    skipped: list[int] | None = None,
) -> tuple[int, bytes]:
    """
    Block until the next data message (answering nothing; control frames are skipped).

    @param skipped: where to note the opcode of each control frame skipped on the way (pongs counted).
    """
    while True:
        while pending:
            opcode, payload = pending.pop(0)
            if opcode < 0x8:
                return opcode, payload
            if opcode == OP_CLOSE:
                raise ConnectionError(f"closed by the peer: {payload[:2].hex()} {payload[2:]!r}")
            if skipped is not None:
                skipped.append(opcode)
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("connection closed")
        pending.extend(reader.feed(chunk))
