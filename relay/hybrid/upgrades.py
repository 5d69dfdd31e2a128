"""
The sender and rendezvous roles of a C{$hc} upgrade, shared by both ways the gateway answers one.

Upgrades go through Autobahn (L{relay.hybrid.websocket}) or, when their head is plain, are answered
without it (L{relay.hybrid.direct}); both admit a sender, announce it to a listener, claim a listener's
rendezvous and turn refusals into statuses here, so the two paths cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, unquote_plus

from autobahn.websocket.types import ConnectionDeny
from twisted.python.failure import Failure

from relay.auth import Rights, split_tokens
from relay.connectionquota import ConnectionLease
from relay.errors import ErrorKind, RelayError
from relay.hybrid.addressing import RequestTarget
from relay.hybrid.headers import TYPE_HINT
from relay.hybrid.messages import RemoteEndpoint
from relay.hybrid.rendezvous import Ticket
from relay.hybrid.router import SenderContext
from relay.logger import Logger

if TYPE_CHECKING:
    from relay.hybrid.websocket import HybridConnectionFactory, HybridConnectionProtocol

# The namespace these events always had (operators filter on it).
log = Logger(namespace="relay.hybrid.websocket.HybridConnectionProtocol")

_HEADER_SPELLING = {
    "sec-websocket-key": "Sec-WebSocket-Key",
    "sec-websocket-version": "Sec-WebSocket-Version",
    "sec-websocket-protocol": "Sec-WebSocket-Protocol",
    "sec-websocket-extensions": "Sec-WebSocket-Extensions",
    "www-authenticate": "WWW-Authenticate",
    "te": "TE",
}
_TOKEN_HEADER = "servicebusauthorization"  # noqa: S105 - a header name
_MAX_REASON = 200


@lru_cache(maxsize=1024)  # senders choose the names: bounded
def header_name(lower: str) -> str:
    """The conventional spelling of a header name Autobahn handed us in lower case."""
    return _HEADER_SPELLING.get(lower) or "-".join(part.capitalize() for part in lower.split("-"))


def connect_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """
    The sender's upgrade headers for the C{accept} message: all but the relay's token header.

    A header named C{__type} is left out too: the .NET listener could not read the message (L{TYPE_HINT}).
    """
    return {
        header_name(name): value
        for name, value in headers.items()
        if name != _TOKEN_HEADER and name != TYPE_HINT
    }


def safe_reason(text: str) -> str:
    """A reason phrase that cannot break the HTTP status line."""
    cleaned = "".join(c if 32 <= ord(c) < 127 else " " for c in text)
    return cleaned[:_MAX_REASON]


def deny(error: RelayError, tracking_id: str) -> ConnectionDeny:
    """The Autobahn refusal for a relay error."""
    return ConnectionDeny(error.status, safe_reason(error.describe(tracking_id)))


class SenderLease:
    """
    Mixin for the two kinds of C{$hc} connection a sender arrives on (Autobahn's and the direct one).

    A sender holds a lease on its namespace's connections (L{announce_sender}) until it is refused, it
    goes, or the pair takes the lease over (L{relay.hybrid.websocket.HybridConnectionFactory.start_splice}).
    """

    connection_lease: ConnectionLease | None = None

    def release_lease(self) -> None:
        """The sender no longer counts (refused or gone); nothing if its pair took the lease over."""
        lease, self.connection_lease = self.connection_lease, None
        if lease is not None:
            lease.release()


class EarlyBytes:
    """
    Mixin for a C{$hc} connection waiting for its upgrade's answer: what the peer sends meanwhile is held.

    A peer may not send before its 101 (RFC 6455 section 4.1), yet one that does must not make the gateway
    hold an unbounded amount while it waits (a sender for its listener, a refused listener for its
    throttle delay): past one splice read's worth, reading stops, and TCP holds the rest. The held bytes
    stay in C{data}, where the splice (or Autobahn, once open) takes them.
    """

    data: bytes
    transport: Any
    factory: Any
    _early_paused = False

    def hold_early(self, data: bytes) -> None:
        """Keep C{data}; stop reading once a splice read's worth is held."""
        self.data += data
        if not self._early_paused and len(self.data) >= self.factory.limits.get(
            "splice_buffer_bytes", 262144
        ):
            self._early_paused = True
            self.transport.pauseProducing()

    def release_early(self) -> None:
        """The answer is given and what was held is taken: read again, if reading had stopped."""
        if self._early_paused:
            self._early_paused = False
            self.transport.resumeProducing()


@dataclass(frozen=True, slots=True)
class Rejection(Exception):
    """A listener refused a sender: the sender's upgrade fails with the listener's own status."""

    status: int
    description: str


@dataclass(frozen=True, slots=True)
class Handoff:
    """What a listener's accepted rendezvous hands to the waiting sender."""

    protocol: HybridConnectionProtocol
    subprotocol: str | None


def presented_tokens(headers: Mapping[str, str], target: RequestTarget) -> list[str]:
    """
    The relay tokens an upgrade presents: those of the C{ServiceBusAuthorization} header, then C{sb-hc-token}.

    The header may hold several (given twice, joined by Autobahn); any valid one admits, as on HTTP.
    """
    tokens = split_tokens(headers.get(_TOKEN_HEADER, ""))
    query = target.param("token")
    if query:
        tokens.append(query)
    return tokens


def announce_sender(
    factory: HybridConnectionFactory,
    target: RequestTarget,
    path: str,
    host: str,
    headers: Mapping[str, str],
    remote: RemoteEndpoint,
    protocols: tuple[str, ...],
    tracking_id: str,
) -> tuple[Ticket, ConnectionLease]:
    """
    Admit a sender's upgrade, count it against its namespace, and announce it to a listener.

    @param headers: the upgrade's header fields, names in lower case.
    @return: the ticket whose outcome fires with the listener's L{Handoff} (or fails: L{sender_refusal}),
        and the sender's lease on its namespace's connections, for the caller to release when it ends.
    @raise RelayError: 401/403 (token), 403 (namespace connections), 404 (no such hybrid connection or
        no listener), 431 (the C{accept} message would not fit a listener's control-channel buffer).
    """
    router = factory.router
    admission = router.admit(host, path, presented_tokens(headers, target), Rights.SEND)
    lease = router.take_connection(admission)
    try:
        ticket = router.connect_sender(
            admission,
            target,
            path,
            connect_headers(headers),
            remote,
            protocols,
            connection_id=tracking_id,
        )
    except BaseException:
        lease.release()
        raise
    return ticket, lease


def sender_refusal(failure: Failure, tracking_id: str) -> tuple[int, str]:
    """
    The status and reason a waiting sender's upgrade is refused with, for its ticket's failure.

    @raise Exception: anything that is neither a listener's rejection nor a relay error (a bug).
    """
    error = failure.value
    if isinstance(error, Rejection):
        return error.status, safe_reason(error.description)
    if isinstance(error, RelayError):
        log.info(
            "sender {tracking_id} not connected: {reason}", tracking_id=tracking_id, reason=error.message
        )
        refusal = deny(error, tracking_id)
        return refusal.code, str(refusal.reason)
    failure.raiseException()
    raise AssertionError("unreachable")


def claim_rendezvous(factory: HybridConnectionFactory, target: RequestTarget) -> Ticket:
    """
    Claim the ticket a listener's rendezvous upgrade names.

    @raise RelayError: 403 when the address is unknown, used or expired.
    """
    return factory.router.claim(target.param("key") or target.param("id") or "", SenderContext)


def rendezvous_subprotocol(
    ticket: Ticket, target: RequestTarget, raw_uri: str, protocols: Sequence[str]
) -> str | None:
    """
    The subprotocol a claimed rendezvous upgrade accepts for its sender, unless the listener rejects.

    A listener's rejection (a status in the address) is delivered to the waiting sender here.

    @raise RelayError: the rejection's delivery notice, or 400 (a subprotocol the sender did not offer).
    """
    context: SenderContext = ticket.context
    rejection = _rejection(target, raw_uri, context.issued_query)
    if rejection is not None:
        log.info(
            "listener rejected sender {tracking_id} with {status}",
            tracking_id=ticket.connection_id,
            status=rejection.status,
        )
        ticket.outcome.errback(rejection)
        raise RelayError(ErrorKind.REJECT_DELIVERED, "Rejection delivered to the sender")
    if not protocols:
        return None
    offered = [p for p in protocols if p in context.offered_protocols]
    if not offered:
        ticket.outcome.errback(
            RelayError(ErrorKind.BAD_GATEWAY, "The listener chose a subprotocol the sender did not offer")
        )
        raise RelayError(ErrorKind.BAD_REQUEST, "Subprotocol was not offered by the sender")
    return offered[0]


def _appended_pairs(query: str, issued_query: str) -> list[str]:
    """
    The C{name=value} pairs a listener's upgrade added after the address's query as issued.

    The issued pairs are compared percent-decoded: a listener's URL parser may escape what the sender sent
    raw (Node's escape C{'}, ws 1.x also C{{}}|^}), and the address is still the one issued.
    """
    issued = [unquote(pair) for pair in issued_query.split("&")]
    pairs = query.split("&")
    if [unquote(pair) for pair in pairs[: len(issued)]] != issued:
        return []
    return [pair for pair in pairs[len(issued) :] if pair]


def _rejection(target: RequestTarget, raw_uri: str, issued_query: str) -> Rejection | None:
    """
    The status a listener's rendezvous upgrade carries to reject its sender, if any.

    .NET appends C{sb-hc-statusCode}/C{sb-hc-statusDescription}; the Node libraries append the unprefixed
    C{statusCode}/C{statusDescription}. Unprefixed names are only read from what the listener appended to
    the address we issued, so a sender's own C{statusCode} query parameter is never mistaken for one.
    """
    code = target.param("statuscode")
    description = target.param("statusdescription")
    if code is None:
        appended: dict[str, str] = {}
        for pair in _appended_pairs(raw_uri.partition("?")[2], issued_query):
            name, _, value = pair.partition("=")
            appended.setdefault(unquote(name).lower(), unquote_plus(value))
        code = appended.get("statuscode")
        description = appended.get("statusdescription", description)
    if code is None:
        return None
    try:
        status = int(code)
    except ValueError:
        status = 0
    if not 400 <= status <= 599:
        status = ErrorKind.BAD_GATEWAY.status
        description = f"Listener rejected the connection with an invalid status {code[:10]!r}"
    return Rejection(status, description or "Rejected by the listener")
