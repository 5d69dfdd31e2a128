"""
Cutting a fuzz input into reads: the sizes come from the input, so the fuzzer chooses the boundaries.

An input is C{n}, then C{n} size bytes, then the stream; the sizes repeat until the stream is used up (a
size byte of 0 means the rest in one read). Incremental parsers must answer the same whatever the cuts.
"""

from __future__ import annotations


def split_input(data: bytes, max_sizes: int = 8) -> tuple[list[int], bytes]:
    """The read sizes and the stream of C{data} (no sizes: the stream in one read)."""
    if not data:
        return [], b""
    count = data[0] % (max_sizes + 1)
    sizes = list(data[1 : 1 + count])
    return sizes, data[1 + count :]


def pieces(stream: bytes, sizes: list[int]) -> list[bytes]:
    """C{stream} cut into reads of the given sizes, in turn (a size of 0: all the rest)."""
    if not sizes:
        return [stream] if stream else []
    out: list[bytes] = []
    pos = k = 0
    while pos < len(stream):
        size = sizes[k % len(sizes)] or len(stream) - pos
        out.append(stream[pos : pos + size])
        pos += size
        k += 1
    return out
