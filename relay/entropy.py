"""
Random 16-byte values for ids and keys, drawn from the kernel 4 KiB at a time.

Every relayed HTTP request needs a tracking id and a rendezvous key, and every legacy message an id: each is
16 bytes from the kernel's CSPRNG. Asking the kernel for each one was a C{getrandom} system call per value,
two per relayed request, a third of the gateway's system calls on that path (C{strace -c}); on machines
where a system call is dear that was a measurable share of its CPU. L{random16} hands out slices of one
4 KiB C{os.urandom} draw instead: the values are the same kernel CSPRNG output, each slice is handed out
once, and a forked child starts with an empty pool, so parent and child never share a value.

Whoever can read the process's memory can read the values not yet handed out; such a reader can read the
keys already handed out as well, so that gives nothing away.
"""

from __future__ import annotations

import os

_BLOCK = 4096
_SIZE = 16

_pool: list[bytes] = []


def _refill() -> None:
    """Put one kernel draw into the pool, as 16-byte slices."""
    block = os.urandom(_BLOCK)
    _pool.extend([block[i : i + _SIZE] for i in range(0, _BLOCK, _SIZE)])


def random16() -> bytes:
    """
    Sixteen bytes from the kernel's CSPRNG, never handed out before in this process.

    C{list.pop} is atomic under the GIL, so threads never get the same slice; two threads finding the pool
    empty at once both refill it, which wastes nothing but a draw.
    """
    try:
        return _pool.pop()
    except IndexError:
        _refill()
        return _pool.pop()


def _forget_in_child() -> None:
    """A forked child must not hand out the values its parent will."""
    _pool.clear()


os.register_at_fork(after_in_child=_forget_in_child)
