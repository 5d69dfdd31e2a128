"""
A strict reader for one plain HTTP/1.1 request head, for requests the gateway answers without twisted.web.

twisted.web builds a C{Request} (header objects, a content buffer, default response headers, a timeout
dance) for every request; for a WebSocket upgrade that the gateway answers itself and whose socket is then
handed to a splice, that was a fifth of the gateway's CPU per established pair. L{read_head} reads the
head of such a request straight from the first bytes of a connection.

It only accepts heads that twisted.web would parse the same way without a word: the whole head in the
bytes given and nothing after it, a C{GET} request line in HTTP/1.1 with a plain ASCII target, header
fields that are tokens with values free of control line breaks, no folded lines, no field twice, no body
(C{Content-Length}, C{Transfer-Encoding}) and no C{Expect}, all within the site's limits. For anything
else it returns C{None} and the caller hands the bytes to twisted.web, which answers (or refuses) them
exactly as before: every refusal keeps its status, reason and body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_END = b"\r\n\r\n"
_REFUSED_FIELDS = frozenset({b"content-length", b"transfer-encoding", b"expect"})


@dataclass(frozen=True, slots=True)
class RequestHead:
    """
    A plain request head.

    @ivar method: the method (always C{GET}).
    @ivar target: the request target as sent.
    @ivar version: the HTTP version (always C{HTTP/1.1}).
    @ivar headers: C{(name, [value])} pairs in the order sent, names in lower case, values without the
        spaces and tabs around them, as twisted.web's C{Headers.getAllRawHeaders} gives them (one value
        each: a repeated field makes the head not plain).
    """

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, list[bytes]]]


def read_head(
    data: bytes,
    *,
    max_request_line: int,
    max_header_bytes: int,
    max_headers: int,
    target_prefix: bytes = b"/",
) -> RequestHead | None:
    """
    The head in C{data} if it is a plain C{GET} whose target starts with C{target_prefix}, else C{None}.

    @param data: the first bytes read from a connection; the head must end exactly where they end.
    @param max_request_line: longest request line (without its CRLF) the site accepts.
    @param max_header_bytes: most bytes of header fields (each with its CRLF) the site accepts.
    @param max_headers: most header fields the site accepts.
    """
    end = data.find(_END)
    if end < 0 or end + 4 != len(data):
        return None  # incomplete, or more than one head (pipelined bytes): twisted.web decides
    lines = data[:end].split(b"\r\n")
    request_line = lines[0]
    if len(request_line) > max_request_line:
        return None
    parts = request_line.split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if method != b"GET" or version != b"HTTP/1.1" or not target.startswith(target_prefix):
        return None
    if _TARGET.fullmatch(target) is None:
        return None
    if len(lines) - 1 > max_headers:
        return None
    if end - len(request_line) > max_header_bytes:  # each field with its CRLF
        return None
    headers: list[tuple[bytes, list[bytes]]] = []
    seen: set[bytes] = set()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            return None  # also a folded line (leading space or tab)
        name = name.lower()
        if name in seen or name in _REFUSED_FIELDS:
            return None
        seen.add(name)
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value) is not None:
            return None
        headers.append((name, [value]))
    return RequestHead(method, target, version, headers)
