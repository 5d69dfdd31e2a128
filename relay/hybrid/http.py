"""
HTTP relaying, transport side: a sender's plain HTTP request on a hybrid connection's path, answered by a listener.

This module is the entry: L{HttpRelay} admits a sender's request (L{RelayResource}) and keeps the
per-gateway, per-control-channel and per-sender-connection state. An exchange (L{relay.hybrid.httpexchange})
follows one request. Small requests go on the listener's control channel (C{request} JSON and one binary
body message); the answer comes back there (L{relay.hybrid.httpcontrol}) or, when large, over a rendezvous
the listener opens to the request's address. Other requests are announced with a rendezvous-only
C{request}; the listener opens a rendezvous (L{relay.hybrid.httprendezvous}), receives the request and its
body streamed as one fragmented binary message, and answers on the same socket, which is then kept for the
sender connection's later requests until it idles out.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET
from typing_extensions import override

from relay.auth import Rights
from relay.deadlines import Deadlines
from relay.entities import EntityMatch, HybridConnectionSettings, Namespace
from relay.errors import CloseCode, ErrorKind, RelayError, new_tracking_id
from relay.hybrid.addressing import AddressError, RequestTarget, split_target
from relay.hybrid.control import ControlChannel
from relay.hybrid.dispatch import ABANDONED, HttpDispatcher, RequestWait
from relay.hybrid.exchangefields import State
from relay.hybrid.headers import AUTHORIZATION, TOKEN_HEADER, forward_request_headers
from relay.hybrid.httpcontrol import ControlResponses
from relay.hybrid.httpexchange import Exchange
from relay.hybrid.httprendezvous import RendezvousRole
from relay.hybrid.messages import HttpRequest, RemoteEndpoint
from relay.hybrid.rendezvous import Ticket, new_key
from relay.hybrid.router import Admission, HybridConnectionRouter
from relay.hybrid.runtimeinfo import CONTENT_TYPE, is_runtime_info_request, runtime_info_entry
from relay.logger import Logger
from relay.resource import ErrorResource, request_host
from relay.webchannel import RelayHTTPChannel
from relay.webrequest import RelayRequest

MAX_LATE_ADDRESSES = 4096
"""Addresses of ended small requests kept claimable at once (L{HttpRelay.release_address}); the oldest go first."""


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _remote(request: IRequest) -> RemoteEndpoint:
    peer = request.getClientAddress()
    return RemoteEndpoint(address=str(getattr(peer, "host", "")), port=int(getattr(peer, "port", 0) or 0))


LATE_ADDRESS_LAPSED = (
    "response address of ended request {connection_id} lapsed: no late answer came within {timeout:g}s"
)
"""What an address kept by L{HttpRelay.release_address} logs (at debug level) when nobody opened it."""


def _turn_away(role: RendezvousRole) -> None:
    """A late response rendezvous to an ended request: accepted, then closed."""
    role.close(CloseCode.NORMAL, "No response expected here")


def _lapsed(failure: Failure) -> None:
    """A kept address expired or was withdrawn: nobody waits on it."""


class RelayResource(Resource):
    """The resource for one plain HTTP request on a hybrid connection's path."""

    isLeaf = True

    def __init__(self, relay: HttpRelay, namespace: Namespace, match: EntityMatch) -> None:
        super().__init__()
        self.relay = relay
        self.namespace = namespace
        self.match = match

    @override
    def render(self, request: IRequest) -> bytes | int:
        """Start relaying (or answer the .NET client's runtime information query), or refuse."""
        try:
            if is_runtime_info_request(request, self.match):
                return self.relay.runtime_info(request, self.namespace, self.match)
            self.relay.begin(request, self.namespace, self.match)  # type: ignore[arg-type]
        except RelayError as e:
            return ErrorResource(e).render(request)  # type: ignore[no-any-return]
        return NOT_DONE_YET


class HttpRelay:
    """
    HTTP relaying for one gateway.

    It owns the resource for hybrid connection paths, the hook for request rendezvous upgrades, and the
    per-channel and per-sender-connection state.

    @ivar rendezvous_idle_timeout: seconds an idle rendezvous is kept for its sender connection.
    @ivar sender_stall_timeout: seconds a sender may read none of its answer before it is cut off (the
        gateway's C{http_idle_timeout}: a sender that takes nothing is idle too).
    """

    log = Logger()

    def __init__(
        self,
        router: HybridConnectionRouter,
        clock: IReactorTime,
        *,
        rendezvous_timeout: float = 30.0,
        rendezvous_idle_timeout: float = 60.0,
        sender_stall_timeout: float = 120.0,
    ) -> None:
        self.router = router
        self.sender_stall_timeout = sender_stall_timeout
        self.clock = clock
        self.dispatcher = HttpDispatcher(router, rendezvous_timeout)
        self.rendezvous_idle_timeout = rendezvous_idle_timeout
        self.exchanges: set[Exchange] = set()
        self.roles: set[RendezvousRole] = set()
        self._responses: dict[ControlChannel, ControlResponses] = {}
        self._late: dict[str, Ticket] = {}  # ended small requests' addresses, oldest first (_keep_late)
        self._addresses: dict[str, Exchange] = {}  # small requests' addresses by key, while answers are due
        self.stopping = False  # set as the gateway stops: it takes no rendezvous, so keeps no late address
        self._response_deadlines: dict[float, Deadlines] = {}  # by request timeout

    def response_deadlines(self, timeout: float) -> Deadlines:
        """The response deadlines of requests with this timeout: one timer for all of them."""
        deadlines = self._response_deadlines.get(timeout)
        if deadlines is None:
            deadlines = self._response_deadlines[timeout] = Deadlines(
                self.clock, timeout, lambda exchange: exchange.response_overdue(timeout)
            )
        return deadlines

    def resource(self, request: IRequest, namespace: Namespace, match: EntityMatch) -> IResource:
        """The resource factory registered for hybrid connections."""
        return RelayResource(self, namespace, match)

    def begin(self, request: RelayRequest, namespace: Namespace, match: EntityMatch) -> Exchange:
        """
        Admit a sender's request and send it to a listener.

        @raise RelayError: 400 (CONNECT, upgrades, bad target), 401/403 (token), 403 (namespace
            connections), 404 (HTTP disabled), 502 (no listener).
        """
        method = request.method.decode("latin-1")
        if method == "CONNECT" or request.requestHeaders.hasHeader(b"upgrade"):
            raise RelayError(
                ErrorKind.BAD_REQUEST,
                "CONNECT and Upgrade requests are not relayed; WebSocket senders connect to /$hc/",
            )
        settings: HybridConnectionSettings = match.entity.settings
        if not settings.http_enabled:
            raise RelayError(ErrorKind.NOT_FOUND, "HTTP relaying is disabled on this hybrid connection")
        try:
            target = split_target(request.uri.decode("latin-1"))
        except AddressError as e:
            raise RelayError(ErrorKind.BAD_REQUEST, str(e)) from None
        tokens, consumed = self._tokens(request, target, settings)
        host = request_host(request)
        grant = self.router.authorize(namespace, match, host, tokens, Rights.SEND)
        admission = Admission(namespace, match, grant)
        request_id = new_tracking_id()
        request.relay_tracking_id = request_id  # type: ignore[attr-defined]
        pairs = [
            (name.decode("latin-1"), _text(value))
            for name, values in request.requestHeaders.getAllRawHeaders()
            for value in values
        ]
        version = request.clientproto.decode("latin-1").partition("/")[2] or "1.1"
        remote = _remote(request)
        body: bytes | None = None  # a streamed body (request.body) is announced when the rendezvous opens
        if request.body is None:
            content: Any = request.content
            content.seek(0)
            body = content.read()
        key = new_key()
        message = HttpRequest(
            address=self.dispatcher.address(admission, request_id, key),
            id=request_id,
            request_target=target.target,
            method=method,
            remote_endpoint=remote,
            request_headers=forward_request_headers(
                pairs,
                strip_authorization=consumed,
                via=f"{version} {self.via_host(request)}",
                client_address=remote.address,
                scheme="https" if request.isSecure() else "http",
            ),
            body=bool(body),
        )
        lease = self.router.take_connection(admission)
        exchange = Exchange(self, request, admission, message, body, lease, key)
        self.exchanges.add(exchange)
        try:
            exchange.start()
        except RelayError:
            self.exchanges.discard(exchange)
            exchange.connection_lease.release()
            exchange.state = State.DONE
            raise
        return exchange

    def runtime_info(self, request: IRequest, namespace: Namespace, match: EntityMatch) -> bytes:
        """
        Answer the .NET client's C{GetRuntimeInformationAsync} (L{relay.hybrid.runtimeinfo}).

        It needs a valid token for the hybrid connection with any right: listeners and senders both have
        the method, each with its own right. Its token may come in C{Authorization}, as .NET sends it.

        @raise RelayError: 400 (bad target), 401/403 (token).
        """
        try:
            target = split_target(request.uri.decode("latin-1"))
        except AddressError as e:
            raise RelayError(ErrorKind.BAD_REQUEST, str(e)) from None
        headers = request.requestHeaders
        tokens = [_text(v) for v in headers.getRawHeaders(TOKEN_HEADER.encode(), [])]
        tokens += [_text(v) for v in headers.getRawHeaders(AUTHORIZATION.encode(), [])]
        query = target.param("token")
        if query:
            tokens.append(query)
        host = request_host(request)
        try:
            self.router.authorize(namespace, match, host, tokens, Rights.LISTEN)
        except RelayError as e:
            if e.status != 403:
                raise
            self.router.authorize(namespace, match, host, tokens, Rights.SEND)
        entity = match.entity
        settings: HybridConnectionSettings = entity.settings
        scheme = "https" if request.isSecure() else "http"
        request.setHeader(b"content-type", CONTENT_TYPE)
        return runtime_info_entry(
            f"{scheme}://{host}/{entity.name}",
            entity.name,
            requires_authorization=settings.requires_client_authorization,
            listeners=self.router.registry.count(namespace, entity),
            now=self.clock.seconds(),
        )

    def _tokens(
        self, request: IRequest, target: RequestTarget, settings: HybridConnectionSettings
    ) -> tuple[list[str], bool]:
        """The presented relay tokens, and whether C{Authorization} is one of them (then it is removed)."""
        tokens = [_text(v) for v in request.requestHeaders.getRawHeaders(TOKEN_HEADER.encode(), [])]
        query = target.param("token")
        if query:
            tokens.append(query)
        if tokens or not settings.requires_client_authorization:
            return tokens, False
        authorization = request.requestHeaders.getRawHeaders(AUTHORIZATION.encode(), [])
        return [_text(v) for v in authorization], bool(authorization)

    def via_host(self, request: IRequest) -> str:
        """This hop's name in C{Via}: the host name the sender used."""
        return request_host(request) or "relay"

    def done(self, exchange: Exchange) -> None:
        """
        Forget a finished exchange; count the bytes it relayed.

        Those are the request body as far as it was handed to a listener and the listener's answer body
        as far as it reached the sender. A request refused before it went to a listener, or never
        fetched by one, relayed nothing of its body.
        """
        if exchange not in self.exchanges:
            return
        self.exchanges.discard(exchange)
        exchange.connection_lease.release()
        self.router.instruments.bytes_transferred.inc(
            exchange.admission.entity.name, amount=exchange.uploaded_bytes + exchange.sent_bytes
        )

    def responses(self, channel: ControlChannel) -> ControlResponses:
        """The HTTP state of a control channel, made on first use."""
        state = self._responses.get(channel)
        if state is None:
            state = self._responses[channel] = ControlResponses(self, channel)
        return state

    def untrack(self, channel: ControlChannel, exchange: Exchange) -> None:
        """An exchange no longer depends on C{channel}; a channel with no HTTP state gets none."""
        state = self._responses.get(channel)
        if state is not None:
            state.untrack(exchange)

    def forget(self, channel: ControlChannel) -> None:
        """A control channel closed."""
        self._responses.pop(channel, None)

    def affinity(self, channel: RelayHTTPChannel) -> dict[Any, RendezvousRole]:
        """The idle rendezvous sockets of a sender connection, by hybrid connection."""
        table: dict[Any, RendezvousRole] | None = channel.affinity.get(self)
        if table is None:
            table = channel.affinity[self] = {}

            def sender_lost() -> None:
                for role in list(table.values()):
                    role.close(CloseCode.NORMAL, "The sender connection closed")
                table.clear()

            channel.when_lost.append(sender_lost)
        return table

    def reusable_rendezvous(self, request: RelayRequest, admission: Admission) -> RendezvousRole | None:
        """The sender connection's idle rendezvous to this hybrid connection, if one is still open."""
        channel = request.channel
        if not isinstance(channel, RelayHTTPChannel):
            return None
        table = channel.affinity.get(self)
        if not table:
            return None
        role: RendezvousRole | None = table.get((admission.namespace.name, admission.entity.key))
        if role is None:
            return None
        if not role.is_open:
            role.close(CloseCode.NORMAL, "Closing")
            return None
        return role

    def hold_address(self, exchange: Exchange) -> None:
        """
        A small request's address is claimable while its exchange waits for the answer (no ticket is made).

        Most answers come on the control channel and nobody opens the address: a ticket, with its
        Deferred and its timer, made and withdrawn for every request cost about 3 % of a relayed request.
        """
        self._addresses[exchange.key] = exchange

    def release_address(self, exchange: Exchange, late_until: float | None) -> None:
        """
        The exchange no longer waits on its address: forget it, or keep it for a late answer.

        @param late_until: the end of the address's response window, to keep it claimable until then
            (L{_keep_late}); C{None} when the answer came.
        """
        if self._addresses.get(exchange.key) is not exchange:
            return  # claimed by a listener already
        del self._addresses[exchange.key]
        if late_until is not None and not self.stopping:
            remaining = late_until - self.clock.seconds()
            if remaining > 0:
                self._keep_late(exchange.key, exchange.id, remaining, exchange.address_window)

    def _keep_late(self, key: str, request_id: str, remaining: float, window: float) -> None:
        """
        Keep an ended small request's address claimable until its deadline, holding nothing of the request.

        hyco-https opens that address for a late large answer without an error handler, and a refused
        upgrade would crash it: the upgrade is accepted and closed instead. The address no longer keeps
        the exchange, its body or its sender alive, and at most L{MAX_LATE_ADDRESSES} are kept, so senders
        that leave before their answer cannot make the gateway hold an address each for long.
        """
        table = self.router.rendezvous
        ticket = table.open(
            request_id,
            ABANDONED,
            key=key,
            timeout=remaining,
            lapse_note=LATE_ADDRESS_LAPSED,
            told_window=window,
        )
        ticket.outcome.addCallbacks(_turn_away, _lapsed)
        late = self._late
        if len(late) >= MAX_LATE_ADDRESSES:
            table.cancel(late.pop(next(iter(late))))
        late[key] = ticket
        ticket.when_done(self._late_done)

    def _late_done(self, ticket: Ticket) -> None:
        if self._late.get(ticket.key) is ticket:
            del self._late[ticket.key]

    def request_rendezvous(self, protocol: Any, request: Any, target: RequestTarget) -> None:
        """
        The C{$hc} factory hook for C{sb-hc-action=request} upgrades: claim the address, install the role.

        The address's key claims it, never its id: that is the tracking id the sender sees in errors.

        @raise RelayError: 403 when the address is unknown, used or expired.
        """
        key = target.param("key") or ""
        exchange = self._addresses.pop(key, None)  # a small request's address, held by its exchange
        ticket = exchange.address_claimed() if exchange is not None else self.router.claim(key, RequestWait)
        protocol.tracking_id = ticket.connection_id
        protocol.autoPingInterval = 0
        protocol.http_role = RendezvousRole(self, protocol, ticket)

    def shutdown(self) -> None:
        """Fail requests in flight (503) and close rendezvous sockets (1001)."""
        for exchange in list(self.exchanges):
            exchange.fail(RelayError(ErrorKind.SHUTTING_DOWN, "Server shutting down"))
        for role in list(self.roles):
            role.close(CloseCode.GOING_AWAY, "Server shutting down")
