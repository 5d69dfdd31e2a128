"""
Fuzzer bytes read as a sequence of choices, for targets that build structured inputs.

Like atheris' C{FuzzedDataProvider}, but plain Python: the committed inputs are replayed in the unit tests
(C{tests/fuzz/test_corpus.py}), where atheris need not be installed. Choices are read from the front;
once the bytes run out every choice is its smallest value, so any input decodes to something.
"""

from __future__ import annotations


class Choices:
    """Read bounded integers, flags, bytes and text from fuzzer input."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def remaining(self) -> int:
        """How many bytes are left."""
        return len(self.data) - self.offset

    def int(self, low: int, high: int) -> int:
        """An integer in C{[low, high]}, from as many bytes as the range needs."""
        span = high - low
        if span <= 0:
            return low
        size = (span.bit_length() + 7) // 8
        raw = self.data[self.offset : self.offset + size]
        self.offset += len(raw)
        return low + int.from_bytes(raw, "big") % (span + 1)

    def flag(self) -> bool:
        """A boolean."""
        return bool(self.int(0, 1))

    def pick(self, options: tuple[str, ...]) -> str:
        """One of C{options}."""
        return options[self.int(0, len(options) - 1)]

    def bytes(self, most: int) -> bytes:
        """Up to C{most} bytes (their count is a choice too)."""
        count = self.int(0, most)
        raw = self.data[self.offset : self.offset + count]
        self.offset += len(raw)
        return raw

    def fixed(self, count: int) -> bytes:
        """Exactly C{count} bytes, zero-padded when the input runs out."""
        raw = self.data[self.offset : self.offset + count]
        self.offset += len(raw)
        return raw.ljust(count, b"\0")

    def rest(self) -> bytes:
        """All the bytes left."""
        raw = self.data[self.offset :]
        self.offset = len(self.data)
        return raw

    def text(self, most: int) -> str:
        """Up to C{most} bytes as UTF-8 text (invalid sequences replaced)."""
        return self.bytes(most).decode("utf-8", errors="replace")
