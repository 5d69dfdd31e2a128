"""relay.httphead.read_head against twisted.web: a head it accepts, the site's channel parses the same way."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource

from relay.httphead import read_head
from relay.web import RelaySite

_LIMITS = {"max_request_line": 64, "max_header_bytes": 256, "max_headers": 6}


class _Recorder(Resource):
    """Records what twisted.web parsed of each request and answers 200."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bytes, bytes, bytes, list[tuple[bytes, list[bytes]]]]] = []

    def render(self, request: Any) -> bytes:
        headers = [(name.lower(), list(values)) for name, values in request.requestHeaders.getAllRawHeaders()]
        self.seen.append((request.method, request.uri, request.clientproto, headers))
        return b""


def _twisted(data: bytes) -> tuple[list[Any], bytes]:
    """What twisted.web's channel (as the site builds it) made of C{data}, and what it answered."""
    recorder = _Recorder()
    site = RelaySite(recorder, reactor=Clock(), **_LIMITS)
    channel = site.build_channel(IPv4Address("TCP", "10.0.0.9", 5000))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    return recorder.seen, transport.value()


def _head(data: bytes) -> bytes:
    """
    The bytes to read: C{data} itself, or (first byte 0) a head built from it, so that most pass the regex.

    Built: the first line of C{data[1:]} is the target after C{/}, each further line a field.
    """
    if data[:1] != b"\0":
        return data
    target, *fields = data[1:].split(b"\n")
    return b"GET /" + target + b" HTTP/1.1\r\n" + b"".join(field + b"\r\n" for field in fields) + b"\r\n"


def check(data: bytes) -> None:
    data = _head(data)
    head = read_head(data, **_LIMITS)
    if head is None:
        return
    seen, answer = _twisted(data)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert len(seen) == 1, seen
    method, uri, version, headers = seen[0]
    assert (method, uri, version) == (head.method, head.target, head.version), (seen[0], head)
    assert sorted(headers) == sorted(head.headers), (headers, head.headers)
