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
from collections.abc import Iterable
from typing import NamedTuple

# One plain head, and nothing after it: a GET request line in HTTP/1.1 with a printable ASCII target, then
# header fields whose names are tokens and whose values hold no NUL, CR or LF (no folded lines, no field
# without a colon), then the empty line.
_HEAD = re.compile(
    rb"GET (?P<target>[\x21-\x7e]+) HTTP/1\.1\r\n"
    rb"(?P<fields>(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00\r\n]*\r\n)*)\r\n"
)
_REFUSED_FIELDS = frozenset({b"content-length", b"transfer-encoding", b"expect"})
# A Host field value (RFC 9112 section 3.2, RFC 3986 section 3.2.2): an IP literal in brackets, or a
# registered name or IPv4 address in the characters a URI allows there, then an optional port; or empty.
_HOST = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+(?:%25[0-9A-Za-z._~-]+)?\]|[0-9A-Za-z._~!$&'()*+,;=%-]*)(?::[0-9]*)?"
)


class RequestHead(NamedTuple):
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

    A plain head has one C{Host} field: without it (or with two) twisted.web's channel answers 400.

    @param data: the first bytes read from a connection; the head must end exactly where they end.
    @param max_request_line: longest request line (without its CRLF) the site accepts.
    @param max_header_bytes: most bytes of header fields (each with its CRLF) the site accepts.
    @param max_headers: most header fields the site accepts.
    """
    match = _HEAD.fullmatch(data)
    if match is None:
        return None  # incomplete, more than one head, or anything unusual: twisted.web decides
    target = match.group("target")
    if not target.startswith(target_prefix) or match.start("fields") - 2 > max_request_line:
        return None
    fields = match.group("fields")
    if len(fields) > max_header_bytes:  # each field with its CRLF, as the site counts them
        return None
    lines = fields.split(b"\r\n")
    lines.pop()  # what follows the last CRLF
    if len(lines) > max_headers:
        return None
    headers: dict[bytes, list[bytes]] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name in headers:
            return None
        headers[name] = [value.strip(b" \t")]
    host = headers.get(b"host")
    if not _REFUSED_FIELDS.isdisjoint(headers) or host is None or not valid_host(host[0]):
        return None  # no Host, or an invalid one: the site's channel refuses it (400, RFC 9112 section 3.2)
    return RequestHead(b"GET", target, b"HTTP/1.1", list(headers.items()))


def valid_host(value: bytes) -> bool:
    """Whether a C{Host} field value is a URI authority without user information (it may be empty)."""
    return _HOST.fullmatch(value) is not None


def connection_options(values: Iterable[str]) -> frozenset[str]:
    """The header names a C{Connection} header lists (they are hop-by-hop too)."""
    names = set()
    for value in values:
        for item in value.split(","):
            item = item.strip().lower()
            if item:
                names.add(item)
    return frozenset(names)


def host_name(host: str) -> str:
    """
    A C{Host} value as namespaces and token audiences name hosts: lower case, no port, no IPv6 brackets.

    Every entry point reads the host this way (plain HTTP, the C{$hc} and C{$wcf} upgrades, whether
    Autobahn answers them or not): C{[::1]:9080} is C{::1}, as C{urlsplit} reads a token's C{sr}, whichever
    path a client's request takes. A value whose port was removed already (Autobahn's) reads the same.
    """
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.rsplit(":", 1)[0]
    return host
