"""
Hybrid connection URLs: the C{$hc} path, the reserved C{sb-hc-*} query parameters, rendezvous addresses.

Every query parameter whose name starts with C{sb-hc-} (any case) and has an C{=} belongs to the relay and
is removed before anything is shown to the other party; everything else is passed on byte for byte, in its
original order and encoding (a bare C{sb-hc-x} without C{=} is not reserved).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote, unquote, unquote_plus, urlsplit

from relay.config import public_url_problem

RESERVED_PREFIX = "sb-hc-"
WCF_PREFIX = "sb-wcf-"
"""The SOAP relay bindings' parameters (C{bindings.wcf}; named here because relay.* may not import bindings)."""
LOGGED_PREFIXES = (RESERVED_PREFIX, WCF_PREFIX)
"""Every relay-reserved parameter prefix: their values carry tokens or keys and stay out of logs."""
SHOWN_NAMES = frozenset(prefix + "action" for prefix in LOGGED_PREFIXES)
HC_SEGMENT = "$hc"

ACTION_LISTEN = "listen"
ACTION_CONNECT = "connect"
ACTION_ACCEPT = "accept"
ACTION_REQUEST = "request"
ACTIONS = frozenset({ACTION_LISTEN, ACTION_CONNECT, ACTION_ACCEPT, ACTION_REQUEST})


class AddressError(ValueError):
    """A request target is malformed (the relay answers 400)."""


@dataclass(frozen=True, slots=True)
class RequestTarget:
    """
    A request target split into what the relay reads and what it passes on.

    @ivar path: the raw path (percent-encoding kept), without the query.
    @ivar relay_params: reserved parameters, names lower-cased, values decoded (first occurrence wins).
    @ivar query: the raw query without reserved pairs, or C{""}.
    """

    path: str
    relay_params: dict[str, str] = field(default_factory=dict)
    query: str = ""

    def param(self, name: str) -> str | None:
        """A reserved parameter's value by its short name (C{action} for C{sb-hc-action})."""
        return self.relay_params.get(RESERVED_PREFIX + name)

    @property
    def target(self) -> str:
        """The path and the passed-on query, as forwarded to a listener."""
        return f"{self.path}?{self.query}" if self.query else self.path


def reserved_name(pair: str, prefixes: tuple[str, ...] = (RESERVED_PREFIX,)) -> str | None:
    """
    The name of a raw C{name=value} pair reserved for the relay (percent-decoded, lower case), else C{None}.

    @param prefixes: the reserved prefixes: C{sb-hc-} alone for hybrid connection URLs.
    """
    raw_name, eq, _ = pair.partition("=")
    name = unquote(raw_name).lower() if eq else ""
    return name if name.startswith(prefixes) else None


def is_reserved(pair: str) -> bool:
    """Tell whether a raw C{name=value} pair is reserved for the relay."""
    return reserved_name(pair) is not None


def split_target(raw_target: str, *, repeatable: frozenset[str] = frozenset()) -> RequestTarget:
    """
    Split a raw request target (C{/path?query}) into path, reserved parameters and passed-on query.

    @raise AddressError: when the target is not origin-form, or C{sb-hc-action} is given twice.
    """
    if not raw_target.startswith("/"):
        raise AddressError("request target must start with '/'")
    if "#" in raw_target:
        raise AddressError("request target must not contain a fragment")
    path, _, query = raw_target.partition("?")
    kept: list[str] = []
    params: dict[str, str] = {}
    if query:
        for pair in query.split("&"):
            name = reserved_name(pair)
            if name is not None:
                if name in params:
                    if name == RESERVED_PREFIX + "action":
                        raise AddressError("sb-hc-action is given more than once")
                    continue
                params[name] = unquote_plus(pair.partition("=")[2])
            else:
                kept.append(pair)
    passed = "&".join(kept)
    return RequestTarget(path=path, relay_params=params, query=passed if kept else "")


def hide_reserved_values(raw_target: bytes) -> bytes:
    """
    C{raw_target} as a log line may show it: the values of reserved parameters hidden, the actions kept.

    Reserved parameters carry tokens (C{sb-hc-token}, C{sb-wcf-token}) and one-time rendezvous keys
    (C{sb-hc-id}); twisted.web's access log writes a request's target as it came, for C{$hc} and C{$wcf}
    URLs and the bindings' SOAP POSTs alike. Names are matched as L{split_target} reads them
    (percent-decoded, any case), under both prefixes (L{LOGGED_PREFIXES}).
    """
    path, question, query = raw_target.partition(b"?")
    if not question or b"=" not in query:
        return raw_target
    pairs = query.split(b"&")
    hidden = False
    for index, pair in enumerate(pairs):
        name = reserved_name(pair.decode("latin-1"), LOGGED_PREFIXES)
        if name is not None and name not in SHOWN_NAMES:
            pairs[index] = pair.partition(b"=")[0] + b"=(hidden)"
            hidden = True
    return path + b"?" + b"&".join(pairs) if hidden else raw_target


def hc_path(path: str) -> str | None:
    """
    The part of a raw C{/$hc/...} path after the C{$hc} segment, or C{None} when the path is not under it.

    Clients that percent-encode C{$} (C{%24hc}) are accepted too.
    """
    segments = path.split("/", 2)
    if len(segments) < 2 or unquote(segments[1]).lower() != HC_SEGMENT:
        return None
    return "/" + (segments[2] if len(segments) > 2 else "")


def websocket_base(public_url: str) -> str:
    """
    The C{ws://} or C{wss://} base (scheme, host, port, base path without trailing slash) for addresses.

    @raise AddressError: for a URL L{public_url_problem} refuses.
    """
    problem = public_url_problem(public_url)
    if problem is not None:
        raise AddressError(f"public URL {problem}")
    parts = urlsplit(public_url)
    scheme = "wss" if parts.scheme.lower() in ("https", "wss") else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def http_base(public_url: str) -> str:
    """The C{http://} or C{https://} base matching L{websocket_base}, for addresses shown to HTTP clients."""
    ws = websocket_base(public_url)
    return "https" + ws[3:] if ws.startswith("wss") else "http" + ws[2:]


@lru_cache(maxsize=1024)
def _request_address_start(ws_base: str, entity_path: str) -> str:
    return rendezvous_address(ws_base, entity_path, "", ACTION_REQUEST, "")


def request_address(ws_base: str, entity_path: str, request_id: str, key: str) -> str:
    """
    L{rendezvous_address} for an HTTP request (action C{request}, no query), made from a cached start.

    Every relayed request has one; its id is a tracking id (L{relay.errors.new_tracking_id}: hex digits
    and hyphens, which need no quoting) and its key hex digits, so only they are appended.
    """
    return f"{_request_address_start(ws_base, entity_path)}{request_id}&{RESERVED_PREFIX}key={key}"


def rendezvous_address(
    ws_base: str, entity_path: str, query: str, action: str, connection_id: str, key: str | None = None
) -> str:
    """
    Build a one-time rendezvous address.

    @param entity_path: the entity name plus the sender's suffix, raw, starting with C{/}.
    @param query: the sender's passed-on query (reserved pairs already removed).
    @param key: an extra secret when the connection id was chosen by the sender and is therefore guessable.
    """
    parts = [query] if query else []
    parts.append(f"{RESERVED_PREFIX}action={action}")
    parts.append(f"{RESERVED_PREFIX}id={quote(connection_id, safe='')}")
    if key is not None:
        parts.append(f"{RESERVED_PREFIX}key={key}")
    return f"{ws_base}/{HC_SEGMENT}{entity_path}?{'&'.join(parts)}"
