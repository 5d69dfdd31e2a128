"""
The server side of the RFC 6455 opening handshake, for the upgrades the gateway answers without Autobahn.

Senders and listeners' rendezvous upgrades are spliced right after their 101 and never use Autobahn
afterwards, yet Autobahn's handshake (rebuilding the request twisted.web had parsed, parsing it again,
setting up a protocol object) was a third of the gateway's CPU per established pair. For those upgrades
the gateway reads the request twisted.web already parsed (L{read_upgrade}) and answers it itself
(L{switching_protocols}, L{refusal}).

Only plainly valid version-13 handshakes are answered here: anything Autobahn would refuse or treat
specially (other versions, a malformed key, an C{Origin} to check, repeated or duplicate values, a fragment
in the target) makes L{read_upgrade} return C{None}, and Autobahn answers that request exactly as before.
Extensions are declined (none is named in the answer, RFC 6455 section 9.1), as the gateway's Autobahn
factory declines them. The answers are byte for byte what Autobahn sends.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from relay.httphead import connection_options, host_name, valid_host

WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KEY = re.compile(r"[A-Za-z0-9+/]{22}==")


@dataclass(frozen=True, slots=True)
class Upgrade:
    """
    A valid WebSocket upgrade request.

    @ivar key: the C{Sec-WebSocket-Key}.
    @ivar host: the C{Host} header's host name as every entry point reads it (L{host_name}): lower case,
        no port, no IPv6 brackets.
    @ivar headers: every header field, names in lower case, repeated fields joined with C{","} (what
        Autobahn's handshake saw after twisted.web, so listeners get the same C{connectHeaders}).
    @ivar protocols: the offered subprotocols, in order.
    """

    key: str
    host: str
    headers: dict[str, str]
    protocols: tuple[str, ...]


def read_upgrade(
    method: bytes, version: bytes, uri: bytes, raw_headers: Iterable[tuple[bytes, Sequence[bytes]]]
) -> Upgrade | None:
    """
    The upgrade in a request twisted.web parsed, or C{None} when it is not one this module answers.

    @param raw_headers: C{(name, values)} pairs as C{Headers.getAllRawHeaders} gives them.
    """
    if method != b"GET" or version != b"HTTP/1.1" or b"#" in uri:
        return None
    try:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1").strip() for name, (value,) in raw_headers
        }
    except ValueError:  # a field given twice: Autobahn would see the values joined and judge them; let it
        return None
    if "origin" in headers or "sec-websocket-origin" in headers:
        return None  # Autobahn checks origins
    if "websocket" not in connection_options((headers.get("upgrade", ""),)):
        return None
    if "upgrade" not in connection_options((headers.get("connection", ""),)):
        return None
    if headers.get("sec-websocket-version") != "13":
        return None
    key = headers.get("sec-websocket-key", "")
    if _KEY.fullmatch(key) is None:
        return None
    host = headers.get("host", "")
    if not host or not valid_host(host.encode("latin-1")):  # the channel's own rule (RFC 9112 section 3.2)
        return None
    protocols: tuple[str, ...] = ()
    if "sec-websocket-protocol" in headers:
        protocols = tuple(p.strip() for p in headers["sec-websocket-protocol"].split(","))
        if len(set(protocols)) != len(protocols):
            return None
    return Upgrade(key=key, host=host_name(host), headers=headers, protocols=protocols)


def accept_value(key: str) -> str:
    """The C{Sec-WebSocket-Accept} value for a C{Sec-WebSocket-Key} (RFC 6455 section 4.2.2)."""
    digest = hashlib.sha1(key.encode("ascii") + WEBSOCKET_GUID).digest()  # noqa: S324 - the RFC's hash
    return base64.b64encode(digest).decode("ascii")


def switching_protocols(key: str, subprotocol: str | None, server: str | None) -> bytes:
    """The 101 answer accepting an upgrade, with the chosen subprotocol (if any) and no extension."""
    lines = ["HTTP/1.1 101 Switching Protocols"]
    if server:
        lines.append(f"Server: {server}")
    lines += ["Upgrade: WebSocket", "Connection: Upgrade"]
    if subprotocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    lines.append(f"Sec-WebSocket-Accept: {accept_value(key)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def refusal(status: int, reason: str) -> bytes:
    """A refused upgrade: status line only, as Autobahn answers (the connection is closed after it)."""
    return f"HTTP/1.1 {status} {reason}\r\n\r\n".encode()
