"""relay expose's local client (relay.localclient) on a local server's bytes in fuzzer-chosen reads: 502 or the reference's answer, never a hang."""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure

from relay.client.httprequest import RequestBody
from relay.http1 import ResponseError
from relay.localclient import LocalClient, LocalConnection, LocalResponse
from tests.fuzz.pieces import pieces, split_input

_METHODS = (b"GET", b"HEAD", b"POST", b"DELETE")


class _Sink:
    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.ended = 0
        self.failures: list[Failure] = []

    def data(self, data: bytes) -> None:
        assert data, "an empty piece of body"
        assert not self.ended and not self.failures, "body after its end"
        self.body.append(data)

    def end(self) -> None:
        self.ended += 1

    def failed(self, reason: Failure) -> None:
        self.failures.append(reason)


class _Endpoint:
    def __init__(self) -> None:
        self.made: list[tuple[LocalConnection, StringTransport]] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.made.append((protocol, transport))
        connected: Deferred[Any] = Deferred()
        connected.callback(protocol)
        return connected


def run(method: bytes, reads: list[bytes], body_ends: int | None = None) -> tuple[Any, ...]:
    """
    What the local client makes of C{reads}, then the server's close: a comparable outcome.

    @param body_ends: when given, the request has a streamed body, which ends after that many reads.
    """
    endpoint = _Endpoint()
    client = LocalClient(MemoryReactor(), "http", "127.0.0.1", 8000, endpoint=endpoint)  # type: ignore[arg-type]
    body = None
    if body_ends is not None:
        body = RequestBody()
        body.feed(b"upload")
    answer = client.request(method, b"/", [], body)
    [(connection, transport)] = endpoint.made
    results: list[Any] = []
    sink = _Sink()

    def got(response: LocalResponse) -> None:
        results.append(response)
        response.deliver(sink)

    answer.addCallbacks(got, results.append)
    for index, data in enumerate(reads):
        if body is not None and index == body_ends:
            body.end()
        if transport.disconnecting:  # dropped or closed: no more reads arrive
            break
        connection.dataReceived(data)
    if body is not None:
        body.end()  # (if it did not yet) before the close is reported
    released = connection in client._idle
    dropped = transport.disconnecting
    assert not (released and dropped), "the pool keeps a connection that was dropped or is closing"
    connection.connectionLost(Failure(ConnectionLost() if transport.disconnected else ConnectionDone()))
    assert len(results) == 1, "no answer (or two) once the local server closed: the sender would hang"
    [result] = results
    if isinstance(result, Failure):
        # Closed before it sent anything: the caller says so (502); anything else is a malformed answer.
        assert result.check(ResponseError) or (result.check(ConnectionDone) and not b"".join(reads)), result
        return ("failed",)
    response: LocalResponse = result
    assert 100 <= response.code <= 599 and response.code >= 200, response.code
    assert sink.ended + len(sink.failures) == 1, (sink.ended, sink.failures)
    if sink.failures:
        assert sink.failures[0].check(ResponseError), sink.failures[0]
        assert not released, "a connection whose body failed went back to the pool"
        return ("cut", response.code)
    body = b"".join(sink.body)
    if response.length is not None:
        assert len(body) == response.length, (len(body), response.length)
    if released:
        assert not dropped
    return ("ok", response.code, body)


# -- the reference: strict, simple, the whole stream at once ----------------------------------------------

_STATUS = re.compile(rb"HTTP/1\.[01] ([1-9][0-9][0-9]) [\t\x20-\x7e\x80-\xff]*")
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\r\n\0]*?)[ \t]*")
_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]{1,16})(?:;[^\r\n]*)?")


def reference(method: bytes, stream: bytes) -> tuple[Any, ...] | None:
    """
    A well-formed answer's outcome (as L{run} gives it), when C{stream} is plainly one and nothing follows.

    C{None} for anything else (malformed, lenient cases, bytes after the answer): no claim is made then.
    """
    pos = 0
    while True:
        end = stream.find(b"\r\n\r\n", pos)
        if end < 0 or end - pos > 60000:
            return None
        lines = stream[pos:end].split(b"\r\n")
        status = _STATUS.fullmatch(lines[0])
        if status is None:
            return None
        code = int(status.group(1))
        fields = []
        for line in lines[1:]:
            field = _FIELD.fullmatch(line)
            if field is None:
                return None
            fields.append((field.group(1).lower(), field.group(2)))
        pos = end + 4
        if code == 101 or code > 599:
            return ("failed",)
        if code >= 200:
            break
    rest = stream[pos:]
    codings = [
        v.strip(b" \t").lower()
        for name, value in fields
        if name == b"transfer-encoding"
        for v in value.split(b",")
    ]
    lengths = {
        v.strip(b" \t") for name, value in fields if name == b"content-length" for v in value.split(b",")
    }
    if code in (204, 304) or method == b"HEAD":
        return ("ok", code, b"") if not rest else None
    if codings:
        if codings != [b"chunked"]:
            return None
        body, after = _unchunk(rest)
        if body is None or after:
            return None
        return ("ok", code, body)
    if lengths:
        if len(lengths) != 1:
            return ("failed",)
        [value] = lengths
        if not value.isdigit() or len(value) > 20:
            return ("failed",)
        length = int(value)
        if len(rest) < length:
            return ("cut", code)
        return ("ok", code, rest) if len(rest) == length else None
    return ("ok", code, rest)  # until the close


def _unchunk(data: bytes) -> tuple[bytes | None, bytes]:
    out = []
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None, b""
        size_line = _CHUNK_SIZE.fullmatch(data, pos, end)
        if size_line is None:
            return None, b""
        size = int(size_line.group(1), 16)
        pos = end + 2
        if size == 0:
            break
        if len(data) < pos + size + 2 or data[pos + size : pos + size + 2] != b"\r\n":
            return None, b""
        out.append(data[pos : pos + size])
        pos += size + 2
    while True:  # trailer fields, then the empty line
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None, b""
        line, pos = data[pos:end], end + 2
        if not line:
            return b"".join(out), data[pos:]
        if _FIELD.fullmatch(line) is None:
            return None, b""


def check(data: bytes) -> None:
    method = _METHODS[data[0] % len(_METHODS)] if data else b"GET"
    sizes, stream = split_input(data[1:])
    if data and data[0] & 0x80:  # a streamed request body, ending after a read the input chooses
        run(method, pieces(stream, sizes), (data[0] >> 2) & 0x1F)
        return
    whole = run(method, [stream] if stream else [])
    split = run(method, pieces(stream, sizes))
    expected = reference(method, stream)
    if expected is not None:
        assert whole == expected, (whole, expected)
        assert split == expected, (split, expected)
    elif whole[0] == "ok" and split[0] == "ok":
        assert whole == split, (whole, split)
