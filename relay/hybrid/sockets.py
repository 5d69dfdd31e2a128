"""
Socket-level helpers for the splice: the shared read buffer, writes that skip the reactor, queue sizes.

Also the allocator tuning that keeps large per-read buffers in the heap. These work on Twisted's TCP
transports directly (their socket, their write queue); under a TLS layer they fall back to the
transport's own methods.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

from twisted.internet import tcp

from relay.hybrid.frames import HEADROOM

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc refuses larger values on 64-bit


def allocator_thresholds(buffer_size: int) -> tuple[int, int]:
    """The glibc mmap and trim thresholds that keep per-read buffers of C{buffer_size} bytes in the heap."""
    mmap_threshold = min(max(4 * buffer_size, 1024 * 1024), _MMAP_THRESHOLD_MAX)
    return mmap_threshold, 2 * mmap_threshold


def keep_read_buffers(buffer_size: int) -> bool:
    """
    Tune glibc's allocator so the splice's per-read buffers are reused instead of mapped afresh.

    A busy leg allocates buffers of up to C{buffer_size} bytes: on TLS legs, Twisted's read and the
    unmasked copy per read; on plain legs, what the socket did not take. glibc serves allocations above
    its mmap threshold (128 KiB at first) with fresh mappings and hands freed memory above its trim
    threshold back to the kernel, so every read paid page faults: measured, more than half of the
    gateway's CPU time with 1 MB messages. Fixed thresholds above
    the read size keep those buffers in the heap for reuse; what the heap holds stays bounded by what
    back-pressure bounds.

    @return: whether the allocator took the settings (C{False} where there is no glibc C{mallopt}).
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mmap_threshold, trim_threshold = allocator_thresholds(buffer_size)
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )


_read_buffers: dict[int, tuple[bytearray, memoryview]] = {}


def shared_read_buffer(size: int) -> tuple[bytearray, memoryview]:
    """
    The buffer every plain-TCP leg reads into, for reads of up to C{size} bytes, and the view reads go to.

    One per process is enough: the reactor runs one read at a time, and the splice is done with the
    buffer (everything it queues is copied) before the read returns. Reading into it instead of into a
    fresh C{bytes} per read saves an allocation and a copy per read, and keeps what a slow consumer
    costs the gateway to the bytes actually queued for it.
    """
    found = _read_buffers.get(size)
    if found is None:
        buffer = bytearray(HEADROOM + size)
        found = _read_buffers[size] = (buffer, memoryview(buffer)[HEADROOM:])
    return found


def tcp_transport(transport: Any) -> Any:
    """The TCP transport under a TLS wrapper, or the transport itself."""
    inner = getattr(transport, "transport", None)
    if inner is not None and hasattr(transport, "wrappedProtocol"):
        return inner
    return transport


def plain_socket(transport: Any) -> Any:
    """The socket of a plain TCP transport, or C{None} (never write around a TLS layer)."""
    if isinstance(transport, tcp.Connection) and not getattr(transport, "TLS", False):
        return transport.socket
    return None


def write_now(transport: Any, data: bytes | memoryview, sock: Any) -> bool:
    """
    Write C{data} to a plain TCP socket at once when nothing is queued on it; queue what it does not take.

    Twisted's C{write} always queues and sends when the reactor next finds the socket writable: a system
    call to watch for writability, a reactor event and a call to stop watching, for bytes the socket
    usually takes at once. Without a socket (TLS legs: L{plain_socket} gives C{None}) or with bytes
    already queued, everything goes through the transport, which keeps the order, signals back-pressure
    and reports errors. Queued bytes are copied (C{data} may be a view of a buffer that is reused).

    @return: whether the socket was found full: part of C{data} was sent and the rest is now queued.
    """
    if (
        sock is not None
        and transport.connected
        and not transport.disconnecting
        and not pending_write_bytes(transport)
    ):
        try:
            sent = sock.send(data)
        except OSError:  # full (EAGAIN) or broken: the transport finds out on its own write
            sent = 0
        if sent == len(data):
            return False
        transport.write(bytes(data[sent:]))
        return True
    transport.write(bytes(data))
    return False


def pending_write_bytes(transport: Any) -> int:
    """Bytes a transport has accepted but not yet handed to the kernel."""
    inner = tcp_transport(transport)
    buffered = (
        len(getattr(inner, "dataBuffer", b""))
        - getattr(inner, "offset", 0)
        + getattr(inner, "_tempDataLen", 0)
    )
    app = getattr(transport, "_appSendBuffer", None)
    if app:
        buffered += sum(len(chunk) for chunk in app)
    return max(buffered, 0)
