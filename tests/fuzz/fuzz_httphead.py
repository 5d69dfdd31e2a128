"""The strict request-head reader (relay.httphead.read_head): what it accepts is a plain, well-formed GET."""

from __future__ import annotations

from relay.httphead import read_head

_LIMITS = {"max_request_line": 1024, "max_header_bytes": 4096, "max_headers": 16}
_FORBIDDEN = (b"\x00", b"\r", b"\n")


def check(data: bytes) -> None:
    head = read_head(data, **_LIMITS)
    if head is None:
        return
    assert head.method == b"GET" and head.version == b"HTTP/1.1"
    assert head.target.startswith(b"/") and len(head.target) < _LIMITS["max_request_line"]
    names = [name for name, _ in head.headers]
    assert len(names) == len(set(names)) <= _LIMITS["max_headers"], names
    assert b"host" in names, "without Host, twisted.web's channel refuses it"
    for name, values in head.headers:
        assert name == name.lower() and len(values) == 1
        assert name not in (b"content-length", b"transfer-encoding", b"expect")
        assert not any(c in values[0] for c in _FORBIDDEN)
        assert values[0] == values[0].strip(b" \t")
    assert data.endswith(b"\r\n\r\n"), "a plain head is the whole of the bytes"
