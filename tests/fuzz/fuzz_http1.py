"""relay.http1 (relay expose's client): a local server's response head and chunked body, read in fuzzer-chosen pieces."""

from __future__ import annotations

from relay.http1 import FRAMING_FIELDS, ChunkedReader, Framing, ResponseError, read_response_head

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _chunked(pieces: list[bytes]) -> tuple[list[bytes] | None, bool, bytes]:
    """The data a chunked body yields fed in C{pieces}: (data or None on ResponseError, done, rest)."""
    reader = ChunkedReader()
    out: list[bytes] = []
    try:
        for index, piece in enumerate(pieces):
            out += reader.feed(piece)
            if reader.done:  # what follows the body is the next response's
                return [b"".join(out)], True, reader.rest + b"".join(pieces[index + 1 :])
    except ResponseError:
        return None, False, b""
    assert all(out), "an empty piece of body"
    return [b"".join(out)], False, b""


def check(data: bytes) -> None:
    if len(data) < 2:
        return
    flags, count = data[0], data[1] % 8
    sizes = [int.from_bytes(data[2 + 2 * i : 4 + 2 * i], "big") for i in range(count)]
    stream = data[2 + 2 * count :]
    method = b"HEAD" if flags & 1 else b"GET"
    try:
        found = read_response_head(stream, method)
    except ResponseError:
        return
    if found is None:
        assert b"\r\n\r\n" not in stream
        return
    head, end = found
    assert end == stream.find(b"\r\n\r\n") + 4
    assert 100 <= head.code <= 999
    for name, value in head.headers:
        assert name and _TOKEN.issuperset(name), name
        assert not any(c in value for c in b"\r\n\0"), value
        assert name.lower() not in FRAMING_FIELDS or (name == b"Content-Length" and value.isdigit()), name
    if head.framing is Framing.LENGTH:
        assert head.length is not None and head.length > 0
    if head.framing is not Framing.CHUNKED:
        return
    body = stream[end:]
    pieces, at = [], 0
    for size in sizes:
        pieces.append(body[at : at + size])
        at += size
    pieces.append(body[at:])
    whole = _chunked([body])
    split = _chunked(pieces)
    assert whole == split, (whole, split)
