"""
Where C{relay expose} forwards to, and with which headers.

The local base URL, the paths below the hybrid connection, and the headers of a WebSocket sender's local
handshake.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from relay.client.accepting import AcceptContext
from relay.client.sender import HANDSHAKE_HEADERS
from relay.httphead import connection_options
from relay.hybrid.headers import HOP_BY_HOP

# Headers of the sender's upgrade that the local WebSocket handshake makes anew, and hyco-ws's junk "0".
_HANDSHAKE = HANDSHAKE_HEADERS | {"0"}


# A WebSocket sender's own forwarding headers say nothing the relay vouches for: expose writes them anew.
# Its hop-by-hop fields are about its connection to the relay, and a body length would make the local
# server wait for a body before it answers the upgrade.
_WEBSOCKET_DROPPED = _HANDSHAKE | HOP_BY_HOP | {"content-length", "x-forwarded-host", "x-forwarded-proto"}


def websocket_forward_headers(context: AcceptContext) -> dict[str, str]:
    """
    The headers of a WebSocket sender's upgrade for the local handshake, with this hop's forwarding ones.

    The relay passes the sender's upgrade headers as sent (C{connectHeaders}), so for HTTP requests it
    adds C{Via} and C{X-Forwarded-For}/C{-Proto} itself and for WebSocket senders it cannot: here C{Via}
    and C{X-Forwarded-For} (the address the relay saw) are appended, C{X-Forwarded-Host} is the host the
    sender used, and a sender's own C{X-Forwarded-Host} and C{X-Forwarded-Proto} are dropped (the scheme
    the sender used is not known here), as are its hop-by-hop fields (and those its C{Connection}
    names) and any C{Content-Length}.
    """
    headers: dict[str, str] = {}
    names: dict[str, str] = {}
    dropped = _WEBSOCKET_DROPPED | connection_options(
        value for name, value in context.request_headers.items() if name.lower() == "connection"
    )
    for name, value in context.request_headers.items():
        key = name.lower()
        if key not in dropped:
            headers[name] = value
            names[key] = name
    host = context.request_headers.get("Host")
    _extend(headers, names, "Via", f"1.1 {host or 'relay'}")
    if context.remote_endpoint is not None and context.remote_endpoint.address:
        _extend(headers, names, "X-Forwarded-For", context.remote_endpoint.address)
    if host:
        headers["X-Forwarded-Host"] = host
    return headers


def _extend(headers: dict[str, str], names: Mapping[str, str], name: str, item: str) -> None:
    """Append C{item} to a list-valued header, under the spelling the sender used for it."""
    spelling = names.get(name.lower(), name)
    previous = headers.get(spelling)
    headers[spelling] = f"{previous}, {item}" if previous else item


class ExposeError(Exception):
    """C{relay expose} cannot go on (bad target URL, refused credentials)."""


DOTS_ABOVE = "the path climbs above the hybrid connection ('..')"


def resolve_dots(suffix: str) -> str | None:
    """
    A path below the hybrid connection with its C{.} and C{..} segments resolved (RFC 3986 5.2.4).

    The local path it goes to starts with the exposed URL's path, so a C{..} (C{%2e%2e} too) that would
    climb above the hybrid connection gives C{None}: it would reach what was not exposed.
    """
    if "/." not in suffix and "/%2e" not in suffix and "/%2E" not in suffix:
        return suffix  # a dot segment starts right after a slash: "/file.txt" has none
    kept: list[str] = []
    segments = suffix.split("/")[1:]
    for segment in segments:
        name = unquote(segment)
        if name == "..":
            if not kept:
                return None
            kept.pop()
        elif name != ".":
            kept.append(segment)
    ends_in_dots = bool(segments) and unquote(segments[-1]) in (".", "..")  # "/a/b/.." is "/a/"
    if not kept:
        return "/" if ends_in_dots else ""
    return "/" + "/".join(kept) + ("/" if ends_in_dots else "")


def local_base(url: str) -> str:
    """
    Check the local URL and return it without a trailing slash.

    @raise ExposeError: unless it is an absolute C{http://} or C{https://} URL without user information,
        query or fragment.
    """
    usage = f"the local URL must be http://HOST[:PORT][/PATH] or https://..., not {url!r}"
    try:
        parts = urlsplit(url)
        if "@" in parts.netloc:  # said before anything quotes the URL, and its password, back
            raise ExposeError(
                "the local URL must not carry a user name or password: relay expose sends no "
                "credentials to the local server, and its answers to senders name the URL"
            )
        parts.port  # noqa: B018 - a port that is not a number from 0 to 65535 raises here
    except ValueError:  # a bad port, an unclosed IPv6 bracket
        raise ExposeError(usage) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ExposeError(usage)
    if parts.query or parts.fragment:
        raise ExposeError("the local URL must not have a query or fragment")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
