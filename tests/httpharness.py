"""
HTTP senders for the in-memory gateway rig: a raw HTTP/1.1 client and a strict response parser.

The parser reports whether each response is I{complete} by its own framing (Content-Length, chunked, or
no body for HEAD/204/304), so tests can tell a whole response from a cut-off one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure


@dataclass
class Reply:
    """One parsed response."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool
    chunked: bool = False

    def header(self, name: str) -> str | None:
        """The first value of a header (any case), or C{None}."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def all(self, name: str) -> list[str]:
        """Every value of a header, one per line."""
        return [value for key, value in self.headers if key.lower() == name.lower()]


def parse_replies(data: bytes, methods: list[str], closed: bool = False) -> list[Reply]:
    """
    Parse the responses in C{data}, the I{n}th answering a request with C{methods[n]}.

    The last one may be incomplete; a close-delimited body is complete only when C{closed}.
    """
    replies: list[Reply] = []
    rest = data
    for method in methods:
        head_end = rest.find(b"\r\n\r\n")
        if head_end < 0:
            break
        lines = rest[:head_end].decode("latin-1").split("\r\n")
        _, status, reason = [*lines[0].split(" ", 2), ""][:3]
        headers = [tuple(h.split(": ", 1)) for h in lines[1:]]
        reply = Reply(int(status), reason, headers, b"", False)  # type: ignore[arg-type]
        rest = rest[head_end + 4 :]
        length = reply.header("content-length")
        if method == "HEAD" or reply.status in (204, 304) or reply.status < 200:
            reply.complete = True
        elif (reply.header("transfer-encoding") or "").lower() == "chunked":
            reply.chunked = True
            body, rest, reply.complete = _dechunk(rest)
            reply.body = body
        elif length is not None:
            reply.body, rest = rest[: int(length)], rest[int(length) :]
            reply.complete = len(reply.body) == int(length)
        else:
            reply.body, rest = rest, b""
            reply.complete = closed
        replies.append(reply)
        if not reply.complete:
            break
    return replies


def _dechunk(data: bytes) -> tuple[bytes, bytes, bool]:
    body = []
    rest = data
    while True:
        line_end = rest.find(b"\r\n")
        if line_end < 0:
            return b"".join(body), b"", False
        size = int(rest[:line_end].split(b";")[0], 16)
        if size == 0:
            if rest[line_end + 2 : line_end + 4] == b"\r\n":
                return b"".join(body), rest[line_end + 4 :], True
            return b"".join(body), b"", False
        chunk = rest[line_end + 2 : line_end + 2 + size]
        if len(chunk) < size or rest[line_end + 2 + size : line_end + 4 + size] != b"\r\n":
            body.append(chunk)
            return b"".join(body), b"", False
        body.append(chunk)
        rest = rest[line_end + 4 + size :]


@dataclass
class RawHttpClient(Protocol):
    """Writes raw requests and keeps every byte of the answers."""

    data: bytes = b""
    methods: list[str] = field(default_factory=list)
    lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = reason

    def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        *,
        chunked: bool = False,
        host: str = "relay.test",
    ) -> None:
        """Send one request (body with Content-Length, or as one chunk when C{chunked})."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        elif body is not None:
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if body is not None and not chunked:
            raw += body
        self.methods.append(method)
        self.transport.write(raw)  # type: ignore[union-attr]
        if chunked and body:
            self.chunk(body)

    def chunk(self, data: bytes) -> None:
        """Send one chunk of a chunked body; C{b""} ends it."""
        self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))  # type: ignore[union-attr]

    def send(self, raw: bytes) -> None:
        """Send raw bytes."""
        self.transport.write(raw)  # type: ignore[union-attr]

    @property
    def replies(self) -> list[Reply]:
        """The responses so far."""
        return parse_replies(self.data, self.methods, closed=self.lost is not None)

    @property
    def reply(self) -> Reply:
        """The only (or last) response; fails the test if there is none."""
        replies = self.replies
        assert replies, f"no response yet; received {self.data[:300]!r}"
        return replies[-1]
