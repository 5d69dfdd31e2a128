"""
HTTP/1.1 client codec for C{relay expose}: request heads out, response heads and bodies in.

Only what a keep-alive client of one local server needs: the request head with its body framing, the
response head (status line, fields, how the body is framed, whether the connection can be reused) and a
chunked-body reader. No sockets, no twisted: L{relay.localclient} drives it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

MAX_HEAD_BYTES = 64 * 1024
"""The largest response head accepted (status line, fields and the empty line)."""

MAX_CHUNK_LINE = 4096
"""The longest chunk-size line (with extensions) or trailer field accepted in a chunked body."""

_NO_BODY_STATUSES = frozenset({204, 304})
# Fields that frame the body or manage the connection: read here, never passed on as the response's own.
FRAMING_FIELDS = frozenset(
    {b"connection", b"content-length", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
     b"upgrade"}
)  # fmt: skip
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
"""What a reason phrase may not hold: control characters other than tab."""
_PLAIN_FIELDS = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\0]*\r\n)*")
"""Header fields, each with its CRLF, whose names are tokens, values without NUL, none a folded line."""


class ResponseError(Exception):
    """The local server's response cannot be read: the request fails with 502 or the body is cut."""


class Framing(Enum):
    """How a response body ends."""

    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    CLOSE = "close"


@dataclass
class ResponseHead:
    """
    A final (non-1xx) response head, or an interim one (L{interim}).

    @ivar headers: the fields in the order received, names as sent, without the framing fields and
        those C{Connection} names (but with a valid C{Content-Length} of a HEAD or 304 answer, which
        frames no body).
    @ivar length: the body's length when C{Content-Length} frames it, else C{None}.
    @ivar reusable: whether the connection can carry another request once this body has been read.
    """

    code: int
    phrase: bytes
    headers: list[tuple[bytes, bytes]]
    framing: Framing
    length: int | None
    reusable: bool

    @property
    def interim(self) -> bool:
        """A 1xx head: another head follows on the same connection."""
        return self.code < 200


_TARGET_FORBIDDEN = re.compile(rb"[\x00-\x20\x7f]")
"""Bytes a request target may not hold: controls, space and DEL."""


def valid_request(
    target: bytes, headers: list[tuple[bytes, bytes]], method: bytes | None = None
) -> str | None:
    """
    Why a request cannot be written as given (a method, target or field that would break the head), or C{None}.

    Relayed requests come as JSON; a line break in a value would otherwise start a header of its own.

    @param method: checked to be a token when given.
    """
    if method is not None and (not method or not _TOKEN.issuperset(method)):
        return f"invalid method {method[:80]!r}"
    if not target.startswith(b"/") or _TARGET_FORBIDDEN.search(target):
        return f"invalid request target {target[:80]!r}"
    for name, value in headers:
        if not name or not _TOKEN.issuperset(name):
            return f"invalid header name {name[:80]!r}"
        if b"\r" in value or b"\n" in value or b"\0" in value:
            return f"invalid value of header {name[:80]!r}"
    return None


def request_head(
    method: bytes, target: bytes, host: bytes, headers: list[tuple[bytes, bytes]], length: int | None
) -> bytes:
    """
    A request head: C{Host} first, then C{headers}, then the body's framing.

    @param length: the body's length, or C{None} to send it chunked (L{chunk}, L{LAST_CHUNK}). A request
        without a body has length 0; the field is left out for methods that do not expect a body.
    """
    lines = [b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, target, host)]
    lines.extend(b"%s: %s\r\n" % (name, value) for name, value in headers)
    if length is None:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    elif length or method in (b"POST", b"PUT", b"PATCH"):
        lines.append(b"Content-Length: %d\r\n" % length)
    lines.append(b"\r\n")
    return b"".join(lines)


def chunk(data: bytes) -> bytes:
    """One piece of a chunked request body (not empty)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def read_response_head(buffer: bytes | bytearray, method: bytes) -> tuple[ResponseHead, int] | None:
    """
    The response head at the start of C{buffer} and where it ends, or C{None} until all of it arrived.

    @param method: the request's method (a C{HEAD} response has no body whatever its fields say).
    @raise ResponseError: the head is malformed or longer than L{MAX_HEAD_BYTES}.
    """
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES)
    if end < 0:
        if len(buffer) >= MAX_HEAD_BYTES:
            raise ResponseError(f"the response head is longer than {MAX_HEAD_BYTES} bytes")
        return None
    raw_head = bytes(buffer[: end + 2])
    lines = raw_head.split(b"\r\n")
    lines.pop()  # what follows the last field's CRLF
    version, code, phrase = _status_line(lines[0])
    # One regex pass shows the usual head plain (token names, no folded lines); then no line needs
    # checking on its own, which cost a local server's every response a byte-by-byte look at each name.
    plain = _PLAIN_FIELDS.fullmatch(raw_head, len(lines[0]) + 2) is not None
    headers: list[tuple[bytes, bytes]] = []
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    connection: list[bytes] = []
    for line in lines[1:]:
        if not plain:
            if b"\r" in line or b"\n" in line or b"\0" in line:  # a lone one: no value may carry it on
                raise ResponseError(f"malformed response header line {line[:80]!r}")
            if line[:1] in (b" ", b"\t"):
                if not headers:
                    raise ResponseError("the response head starts with a folded line")
                name, value = headers.pop()  # obsolete line folding: one space instead (RFC 9112, 5.2)
                headers.append((name, value + b" " + line.strip(b" \t")))
                continue
            name, colon, value = line.partition(b":")
            if not colon or not name or not _TOKEN.issuperset(name):
                raise ResponseError(f"malformed response header line {line[:80]!r}")
        else:
            name, _, value = line.partition(b":")
        value = value.strip(b" \t")
        lower = name.lower()
        if lower in FRAMING_FIELDS:
            if lower == b"content-length":
                lengths.update(v.strip(b" \t") for v in value.split(b","))
            elif lower == b"transfer-encoding":
                codings.extend(c.strip(b" \t").lower() for c in value.split(b",") if c.strip(b" \t"))
            elif lower == b"connection":
                connection.extend(c.strip(b" \t").lower() for c in value.split(b","))
            continue
        headers.append((name, value))
    keep_alive = b"keep-alive" in connection if version == b"HTTP/1.0" else b"close" not in connection
    named = set(connection) - {b"close", b"keep-alive", b""}
    if named:  # the fields Connection names belong to this connection (RFC 9110, 7.6.1)
        headers = [(name, value) for name, value in headers if name.lower() not in named]
    framing, length = _framing(code, method, lengths, codings)
    if framing is Framing.NONE and length is None and len(lengths) == 1 and code >= 200 and code != 204:
        # A HEAD or 304 answer's length frames nothing: it tells the size a GET gets, and is passed on.
        [value] = lengths
        if value.isdigit() and len(value) <= 20:
            headers.append((b"Content-Length", value))
    head = ResponseHead(code, phrase, headers, framing, length, keep_alive and framing is not Framing.CLOSE)
    return head, end + 4


def _status_line(line: bytes) -> tuple[bytes, int, bytes]:
    version, _, rest = line.partition(b" ")
    digits, _, phrase = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(digits) != 3 or not digits.isdigit():
        raise ResponseError(f"malformed status line {line[:80]!r}")
    if _CONTROL.search(phrase) is not None:  # a reason phrase is tabs, spaces and visible bytes (RFC 9112)
        raise ResponseError(f"control character in the status line {line[:80]!r}")
    code = int(digits)
    if code < 100:
        raise ResponseError(f"status code {code} out of range")
    return version, code, phrase


def _framing(
    code: int, method: bytes, lengths: set[bytes], codings: list[bytes]
) -> tuple[Framing, int | None]:
    if code < 200 or code in _NO_BODY_STATUSES or method == b"HEAD":
        return Framing.NONE, None
    if codings:
        # A length beside a transfer coding is ignored (RFC 9112, 6.3); only chunked last ends by itself.
        return (Framing.CHUNKED if codings[-1] == b"chunked" else Framing.CLOSE), None
    if lengths:
        # At most 20 digits (as chunk sizes): int() refuses more than 4300 with ValueError.
        if len(lengths) > 1 or not all(v.isdigit() and len(v) <= 20 for v in lengths):
            raise ResponseError(f"invalid Content-Length {b', '.join(sorted(lengths))[:80]!r}")
        length = int(lengths.pop())
        return (Framing.LENGTH if length else Framing.NONE), length
    return Framing.CLOSE, None


class ChunkedReader:
    """
    Reads a chunked body as it arrives: L{feed} returns the data bytes found, in order.

    @ivar done: the last chunk and the trailer section have been read; bytes after them are in L{rest}.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._remaining = 0  # data bytes of the current chunk still to come
        self._state = "size"  # size, data, data-end, trailer
        self.done = False
        self.rest = b""

    def feed(self, data: bytes) -> list[bytes]:
        """
        Take the next bytes of the body.

        @raise ResponseError: malformed chunk framing.
        """
        out: list[bytes] = []
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        pos = 0
        while pos < len(buffer) and not self.done:
            if self._state == "data":
                take = min(self._remaining, len(buffer) - pos)
                out.append(buffer[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = "data-end"
                continue
            end = buffer.find(b"\r\n", pos, pos + MAX_CHUNK_LINE + 2)
            if end < 0:
                # A line of the longest length may have come without its LF yet: its CR is held too.
                if len(buffer) - pos > MAX_CHUNK_LINE + buffer.endswith(b"\r"):
                    raise ResponseError("a chunk-size line or trailer field is too long")
                self._buffer = buffer[pos:]
                break
            line = buffer[pos:end]
            pos = end + 2
            if self._state == "size":
                size = line.partition(b";")[0].strip(b" \t")
                if not size or len(size) > 16 or not all(c in b"0123456789abcdefABCDEF" for c in size):
                    raise ResponseError(f"malformed chunk size {line[:40]!r}")
                self._remaining = int(size, 16)
                self._state = "data" if self._remaining else "trailer"
            elif self._state == "data-end":
                if line:
                    raise ResponseError("a chunk's data is longer than its size")
                self._state = "size"
            elif not line:  # trailer: fields are read past and dropped, the empty line ends the body
                self.done = True
        if self.done:
            self.rest = buffer[pos:]
        return [piece for piece in out if piece]
