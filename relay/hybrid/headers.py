"""
HTTP header rules for relayed requests and responses, as a reverse proxy applies them.

A request's headers reach the listener as one JSON object: token carriers and hop-by-hop/framing headers are
removed, repeated headers are joined, and C{Via}, C{X-Forwarded-For} and C{X-Forwarded-Proto} are added. A
response's headers come back as a JSON object whose values may be strings or arrays; they are checked (a
header that could break the sender's response is refused, so the relay answers 502 instead), framing
headers are dropped (the relay frames the body itself) and C{Via} is extended.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from relay.httphead import connection_options

TOKEN_HEADER = "servicebusauthorization"  # noqa: S105 - a header name
AUTHORIZATION = "authorization"
TYPE_HINT = "__type"
"""
A header name never forwarded: the .NET listener's JSON reader takes an object's first C{"__type"} member
for a type name no type answers to, and drops the whole control message (for a request with a body, its
pump then read the body, which the sender wrote, as a control message).
"""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers that describe one connection, not the message (RFC 9110 section 7.6.1), plus legacy spellings."""

_REQUEST_DROPPED = HOP_BY_HOP | {"content-length", "expect", TOKEN_HEADER, "x-forwarded-proto", TYPE_HINT}
_RESPONSE_DROPPED = HOP_BY_HOP | {"content-length"}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # fullmatch: "$" would let a final "\n" through
_TOKENS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*")
"""Names joined by line feeds, all of them tokens (one pass for a whole head)."""
_FORBIDDEN_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
"""
Control characters but the tab (RFC 9110 section 5.5): CR, LF and NUL would break the head, and Node's
HTTP client refuses a head with any of the others; a lone surrogate (a JSON escape) has no UTF-8 form.
"""
_MAX_REASON = 120


class HeaderError(ValueError):
    """A listener's response header cannot be forwarded safely."""


def is_token(name: str) -> bool:
    """
    Whether C{name} is an HTTP token (RFC 9110 section 5.6.2), as a response header name must be.

    The client library checks its response headers with this too, so what it accepts is forwarded.
    """
    return _TOKEN.fullmatch(name) is not None


def forwardable_value(value: str) -> bool:
    """Whether a header value can be forwarded: no control character but the tab, no lone surrogate."""
    return _FORBIDDEN_IN_VALUE.search(value) is None


def forward_request_headers(
    pairs: Sequence[tuple[str, str]],
    *,
    strip_authorization: bool,
    via: str,
    client_address: str,
    scheme: str,
) -> dict[str, str]:
    """
    The C{requestHeaders} object for a sender's request.

    Repeated headers are joined with C{", "} (C{Cookie} with C{"; "}, as RFC 6265 requires); the first
    spelling of a name is kept.

    @param pairs: the sender's headers as received, in order.
    @param strip_authorization: whether C{Authorization} carried the relay token (then it is removed).
    @param via: this hop's C{Via} entry, e.g. C{"1.1 relay.example.org"}.
    @param client_address: the sender's IP address, appended to C{X-Forwarded-For}.
    @param scheme: C{http} or C{https}, as the sender reached the relay.
    """
    dropped = set(_REQUEST_DROPPED)
    dropped |= connection_options(value for name, value in pairs if name.lower() == "connection")
    if strip_authorization:
        dropped.add(AUTHORIZATION)
    names: dict[str, str] = {}
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        key = name.lower()
        if key in dropped:
            continue
        names.setdefault(key, name)
        values.setdefault(key, []).append(value)
    headers = {names[key]: ("; " if key == "cookie" else ", ").join(parts) for key, parts in values.items()}
    _append(headers, names, "via", "Via", via)
    _append(headers, names, "x-forwarded-for", "X-Forwarded-For", client_address)
    headers["X-Forwarded-Proto"] = scheme
    return headers


def _append(headers: dict[str, str], names: Mapping[str, str], key: str, spelling: str, item: str) -> None:
    name = names.get(key, spelling)
    current = headers.get(name)
    headers[name] = f"{current}, {item}" if current else item


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """
    A listener's response headers, ready for the sender.

    @ivar headers: name/value pairs in order, one pair per header line, C{Via} included.
    @ivar content_length: the listener's C{Content-Length}, when it gave a valid one.
    """

    headers: tuple[tuple[str, str], ...]
    content_length: int | None


def response_head(fields: Any, *, via: str) -> ResponseHead:
    """
    Check and convert a C{responseHeaders} object.

    Values may be strings, numbers or arrays of them (one header line per element, so C{Set-Cookie} arrays
    survive). Names must be HTTP tokens and values must not contain a control character (the tab aside)
    or a lone surrogate.

    @raise HeaderError: for a malformed object, name or value, or a C{Content-Length} that is not a number.
    """
    if fields is None:
        fields = {}
    if not isinstance(fields, dict):
        raise HeaderError("responseHeaders must be a JSON object")
    values = list(fields.values())
    names = "\n".join(fields)
    if (
        set(map(type, values)) <= {str}
        and names.count("\n") == len(values) - 1  # no name holds a line feed of its own
        and _TOKENS.fullmatch(names)
        and not _FORBIDDEN_IN_VALUE.search("".join(values))
    ):  # the usual answer, checked in a few passes over all of it
        lines = [(name.lower(), name, value.strip(" \t")) for name, value in fields.items()]
    else:
        lines = _checked_lines(fields)
    dropped = _RESPONSE_DROPPED | connection_options(v for k, _, v in lines if k == "connection")
    content_length: int | None = None
    kept: list[tuple[str, str]] = []
    via_values: list[str] = []
    via_name = "Via"
    for key, name, value in lines:
        if key == "content-length":
            content_length = _content_length(value, content_length)
        elif key == "via":
            via_name = name
            via_values.append(value)
        elif key not in dropped:
            kept.append((name, value))
    kept.append((via_name, ", ".join([*via_values, via])))
    return ResponseHead(headers=tuple(kept), content_length=content_length)


def _checked_lines(fields: dict[str, Any]) -> list[tuple[str, str, str]]:
    """C{(lower-case name, name, value)} per header line, each name and value checked on its own."""
    lines: list[tuple[str, str, str]] = []
    for name, raw in fields.items():
        if not is_token(name):
            raise HeaderError(f"response header name {name[:40]!r} is not a valid HTTP token")
        key = name.lower()
        for value in (raw,) if type(raw) is str else _values(name, raw):
            if not forwardable_value(value):
                raise HeaderError(
                    f"response header {name[:40]!r} contains a control character or a lone surrogate"
                )
            lines.append((key, name, value.strip(" \t")))
    return lines


def _values(name: str, raw: Any) -> list[str]:
    items = raw if isinstance(raw, list) else [raw]
    values = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise HeaderError(f"response header {name[:40]!r} must be a string or an array of strings")
        values.append(item if isinstance(item, str) else str(item))
    return values


def _content_length(value: str, previous: int | None) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 18:  # isdigit alone takes "²"
        raise HeaderError(f"Content-Length {value[:20]!r} is not a number")
    length = int(value)
    if previous is not None and previous != length:
        raise HeaderError("conflicting Content-Length values")
    return length


MAX_SENDER_HEAD = 64 * 1024
"""
Largest response head the gateway writes to a sender: status line and header lines (bytes).

A listener may send a far larger one (its C{response} message may be up to 1 MiB on a rendezvous, 16 MiB on
the control channel), but HTTP clients refuse much smaller heads (Node.js: 16 KiB), so the sender would see a
broken answer instead of the relay's 502; 64 KiB is also the default limit of request heads
(C{http_max_header_bytes}) and what relay expose accepts from its local server.
"""


def oversized_head(reason: str, fields: Sequence[tuple[str, str]]) -> int | None:
    """
    The size in bytes of a response head with C{reason} and C{fields} when it exceeds L{MAX_SENDER_HEAD}.

    Counts the status line, one C{name: value} line per field (values in UTF-8) and the empty line that ends
    the head; the few fields twisted.web adds itself (C{Connection}, C{Content-Length},
    C{Transfer-Encoding}) are not counted. Only a large head is encoded to be measured.

    @return: the size, or C{None} for a head within the bound.
    """
    size = len("HTTP/1.1 000 \r\n\r\n") + len(reason)
    chars = size + sum([len(name) + len(value) + 4 for name, value in fields])
    if chars * 4 <= MAX_SENDER_HEAD:  # at most 4 bytes a character
        return None
    size += sum([len(name) + len(value.encode("utf-8")) + 4 for name, value in fields])
    return size if size > MAX_SENDER_HEAD else None


def reason_phrase(status: int, description: Any) -> str:
    """
    The reason phrase for the sender.

    The listener's description if it is printable text, else the standard phrase for the status.
    """
    if isinstance(description, str):
        cleaned = " ".join(description.split())[:_MAX_REASON]
        if cleaned and all(32 <= ord(c) < 127 for c in cleaned):
            return cleaned
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def body_forbidden(method: str, status: int) -> bool:
    """Whether a response must not carry a body: HEAD requests and 1xx, 204 and 304 responses."""
    return method == "HEAD" or status < 200 or status in (204, 304)
