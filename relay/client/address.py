"""
Where a hybrid connection lives and the URLs the client dials: listen, connect, reject.

Users name a hybrid connection the way the official clients let them: a connection string
(C{Endpoint=sb://ns/;SharedAccessKeyName=...}), an C{sb://ns/hyco} URI, or a plain C{wss://}/C{ws://}
(or C{https://}/C{http://}) endpoint. Everything is reduced to an L{HybridConnectionAddress}. Plain
C{ws://} is used for C{UseDevelopmentEmulator=true} connection strings and C{ws}/C{http} endpoints,
TLS otherwise. Reserved C{sb-hc-*} parameters are always appended by this module, never accepted from
callers, so an application query cannot change the action or smuggle a token into logs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, quote_plus, unquote, urlencode, urlsplit

from relay.connstr import ConnectionString, parse_connection_string
from relay.hybrid.addressing import (
    ACTION_CONNECT,
    ACTION_LISTEN,
    HC_SEGMENT,
    RESERVED_PREFIX,
    AddressError,
    hc_path,
    is_reserved,
    split_target,
)

_SCHEMES = {"sb": "wss", "wss": "wss", "https": "wss", "ws": "ws", "http": "ws"}
# Characters left alone when quoting path segments: RFC 3986 pchar plus "/" and "%" (so callers may
# pass already-encoded text without having it encoded twice).
_PATH_SAFE = "/%!$&'()*+,;=:@-._~"

# A connection string starts with a key and "=" (relay.connstr allows white space around it); a URI starts
# with a scheme and ":", so the two cannot be confused whatever key comes first.
_CONNECTION_STRING = re.compile(r"[;\s]*[A-Za-z]+\s*=")

Query = str | Mapping[str, str] | Sequence[tuple[str, str]]
"""An application query: raw text (passed on byte for byte), or name/value pairs to encode."""


@dataclass(frozen=True, slots=True)
class HybridConnectionAddress:
    """
    A hybrid connection on a relay endpoint.

    @ivar scheme: C{wss} or C{ws}.
    @ivar netloc: host and optional port, as given (C{ns.servicebus.windows.net}, C{localhost:9080}).
    @ivar path: the hybrid connection path without surrounding slashes, percent-encoded
        (C{hyco}, C{team/app}).
    """

    scheme: str
    netloc: str
    path: str

    @property
    def host(self) -> str:
        """The host name without port or IPv6 brackets."""
        return urlsplit(f"{self.scheme}://{self.netloc}").hostname or ""

    @property
    def secure(self) -> bool:
        """Whether connections use TLS."""
        return self.scheme == "wss"

    @property
    def base(self) -> str:
        """The WebSocket base URL, C{wss://host[:port]}."""
        return f"{self.scheme}://{self.netloc}"

    @property
    def audience(self) -> str:
        """
        The resource URI tokens are requested for: C{http://host/path/}, as the .NET client forms it.

        Scheme and port do not matter to the relay's scope check, and Azure accepts this form.
        """
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}/{self.path}/"

    def listen_url(self, listener_id: str) -> str:
        """The control channel URL, C{wss://host/$hc/path?sb-hc-action=listen&sb-hc-id=..}."""
        return (
            f"{self.base}/{HC_SEGMENT}/{self.path}"
            f"?{RESERVED_PREFIX}action={ACTION_LISTEN}&{RESERVED_PREFIX}id={quote(listener_id, safe='')}"
        )

    def connect_url(self, connection_id: str, suffix: str = "", query: Query | None = None) -> str:
        """
        The sender URL: C{wss://host/$hc/path[/suffix]?[query&]sb-hc-action=connect&sb-hc-id=..}.

        @param suffix: an application path below the hybrid connection; a leading C{/} is added.
        @param query: application parameters, shown to the listener.
        @raise ValueError: when the query uses a reserved C{sb-hc-} parameter.
        """
        parts = []
        encoded = encode_query(query)
        if encoded:
            parts.append(encoded)
        parts.append(f"{RESERVED_PREFIX}action={ACTION_CONNECT}")
        parts.append(f"{RESERVED_PREFIX}id={quote(connection_id, safe='')}")
        return f"{self.base}/{HC_SEGMENT}/{self.path}{normalize_suffix(suffix)}?{'&'.join(parts)}"


def normalize_suffix(suffix: str) -> str:
    """An application path suffix, C{""} or starting with C{/}, with unsafe characters quoted."""
    if not suffix:
        return ""
    if "?" in suffix or "#" in suffix:
        raise ValueError("the path suffix must not contain '?' or '#'; pass query parameters separately")
    if not suffix.startswith("/"):
        suffix = "/" + suffix
    return quote(suffix, safe=_PATH_SAFE)


def encode_query(query: Query | None) -> str:
    """
    Render an application query and refuse reserved parameters.

    @raise ValueError: for a C{sb-hc-*=} pair, which the relay would take for its own.
    """
    if not query:
        return ""
    if isinstance(query, str):
        text = query.lstrip("?")
    else:
        pairs = list(query.items()) if isinstance(query, Mapping) else list(query)
        text = urlencode(pairs, quote_via=quote)
    for pair in text.split("&"):
        if is_reserved(pair):
            raise ValueError(f"query parameter {pair.partition('=')[0]!r} is reserved for the relay")
    return text


def reject_url(address: str, status_code: int, description: str) -> str:
    """
    The URL that rejects a sender: the accept address plus the reserved status parameters.

    C{sb-hc-statusCode} and C{sb-hc-statusDescription} are encoded as .NET does (C{+} for spaces).
    """
    separator = "&" if "?" in address else "?"
    return (
        f"{address}{separator}{RESERVED_PREFIX}statusCode={status_code}"
        f"&{RESERVED_PREFIX}statusDescription={quote_plus(description, safe='')}"
    )


def split_accept_address(address: str, path: str) -> tuple[str, str]:
    """
    What the sender asked for, read from an accept address: path suffix and application query.

    The suffix is the path below the hybrid connection; the query lacks reserved parameters. The relay
    matches hybrid connection names case-insensitively and may spell them differently from the listener,
    so the name is stripped segment by segment ignoring case and percent-encoding.

    @param path: the listener's hybrid connection path (as in L{HybridConnectionAddress.path}).
    @return: C{(suffix, query)}, e.g. C{("/chat", "room=1")}; C{("", "")} when there is neither, or when
        the address cannot be read as a URL (the relay sent it; dialling it then fails, and is logged).
    """
    try:
        parts = urlsplit(address)
    except ValueError:  # an unclosed "[" in the host, or one NFKC normalisation changes
        return "", ""
    raw_target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        target = split_target(raw_target or "/")
    except AddressError:
        return "", ""
    below = hc_path(target.path)
    if below is None:
        return target.path, target.query
    return _below(below, path), target.query


def split_request_target(request_target: str, path: str) -> tuple[str, str]:
    """
    What an HTTP sender asked for, read from a relayed C{requestTarget} (C{/hyco/api?x=1}).

    @param path: the listener's hybrid connection path.
    @return: C{(suffix, query)}: the path below the hybrid connection (C{"/api"}, or C{""}) and the query.
    """
    try:
        target = split_target(request_target or "/")
    except AddressError:
        return "", ""
    return _below(target.path, path), target.query


def _below(raw_path: str, path: str) -> str:
    """The part of C{raw_path} (starting with C{/}) below the hybrid connection C{path}."""
    segments = raw_path.split("/")[1:]
    own = _own_segments(path)
    if tuple([unquote(s).lower() for s in segments[: len(own)]]) == own:
        segments = segments[len(own) :]
    return "/" + "/".join(segments) if segments else ""


@lru_cache(maxsize=64)
def _own_segments(path: str) -> tuple[str, ...]:
    """A hybrid connection path's segments as L{_below} compares them (a listener's, for its every request)."""
    return tuple([unquote(s).lower() for s in path.split("/") if s])


def _normalize_path(path: str) -> str:
    path = path.strip("/")
    if path.split("/", 1)[0].lower() in (HC_SEGMENT, "%24hc"):
        path = path.split("/", 1)[1] if "/" in path else ""
    return quote(path, safe=_PATH_SAFE)


def _quoted(uri: str) -> str:
    """
    C{uri} as an error may quote it: cut at its first white space or C{;}.

    The text may be a mistyped connection string, whose key must reach no message or log.
    """
    head = re.split(r"[\s;]", uri, maxsplit=1)[0]
    return repr(head) + ("..." if head != uri else "")


def parse_address(
    endpoint_or_connection_string: str, path: str | None = None
) -> tuple[HybridConnectionAddress, ConnectionString | None]:
    """
    Turn what a user gave into an address, plus the parsed connection string if it was one.

    @param endpoint_or_connection_string: C{Endpoint=sb://ns/;...}, C{sb://ns[/hyco]},
        C{wss://host[:port][/hyco]}, C{ws://...}, C{https://...} or C{http://...}.
    @param path: the hybrid connection path, unless the first argument already names it (C{EntityPath}
        or a URI path); giving it twice is an error, as in the .NET client.
    @raise ValueError: for unknown schemes, a missing or doubled path, or a URI with a query; the message
        never quotes a key.
    """
    text = endpoint_or_connection_string.strip()
    cs: ConnectionString | None = None
    if _CONNECTION_STRING.match(text):
        cs = parse_connection_string(text)
        uri = cs.endpoint
        embedded = cs.entity_path or ""
    else:
        uri = text
        embedded = ""
    parts = urlsplit(uri)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        shown = f"endpoint {_quoted(uri)}" if "://" in uri else "the endpoint"  # else it may be a bare key
        raise ValueError(f"{shown} must be an absolute sb://, wss://, ws://, https:// or http:// URI")
    if parts.query or parts.fragment:
        raise ValueError("the endpoint must not carry a query or fragment")
    try:
        _ = parts.port  # checked now: a bad port would fail every connection attempt, later
    except ValueError as e:
        raise ValueError(f"endpoint {_quoted(uri)}: {e}") from None
    if cs is not None and cs.plain:
        scheme = "ws"
    if cs is None:
        embedded = parts.path
    elif parts.path.strip("/"):
        raise ValueError("the connection string Endpoint must not have a path; use EntityPath")
    embedded = _normalize_path(embedded)
    given = _normalize_path(path or "")
    if embedded and given and embedded != given:
        raise ValueError("the hybrid connection path is given twice (argument and endpoint/EntityPath)")
    resolved = given or embedded
    if not resolved:
        raise ValueError("no hybrid connection path: pass path= or use EntityPath / an sb://ns/path URI")
    return HybridConnectionAddress(scheme=scheme, netloc=parts.netloc, path=resolved), cs
