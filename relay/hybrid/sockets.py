"""
Read-side helpers for the splice: the shared read buffer and the allocator tuning for per-read buffers.

The write side (writes that skip the reactor's queue, queue sizes) is L{relay.writes}, which the control
channels and the client library use too.
"""

from __future__ import annotations

import ctypes
import ctypes.util

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
