"""
Whole WebSocket text frames (RFC 6455 section 5.2) for messages the bindings write themselves.

Autobahn stays in charge of handshakes, reading, pings and closing; but its per-message send path (frame
object, a masker object per frame, a debug message formatted on every write) costs more than everything
else the gateway does for a multicast copy. A C{$wcf} message is always one complete, uncompressed text
frame (permessage-deflate is never negotiated on C{$wcf}), so its bytes can be built here once and written
straight to the transport, and for multicast the same bytes go to every subscriber.
"""

from __future__ import annotations

import random
from typing import Final

_FIN_TEXT: Final = 0x81
_MASKED: Final = 0x80


def _header(opcode_byte: int, length: int, mask_bit: int) -> bytes:
    if length <= 125:
        return bytes((opcode_byte, mask_bit | length))
    if length <= 0xFFFF:
        return bytes((opcode_byte, mask_bit | 126)) + length.to_bytes(2, "big")
    return bytes((opcode_byte, mask_bit | 127)) + length.to_bytes(8, "big")


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame (server to client) carrying C{payload}."""
    return _header(_FIN_TEXT, len(payload), 0) + payload


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR C{payload} with the 4-byte masking C{key} repeated (RFC 6455 section 5.3), as one big integer."""
    length = len(payload)
    if not length:
        return b""
    repeated = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(length, "little")


def masked_text_frame(payload: bytes, key: bytes | None = None) -> bytes:
    """
    One unfragmented text frame from a client: masked, with a fresh random key unless one is given.

    The key need not be cryptographically random (RFC 6455 asks for unpredictability against proxies
    that a browser script could steer; Autobahn uses the same generator).
    """
    if key is None:
        key = random.getrandbits(32).to_bytes(4, "big")
    return _header(_FIN_TEXT, len(payload), _MASKED) + key + mask(payload, key)
