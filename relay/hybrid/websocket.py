"""
The C{$hc} WebSocket endpoint: Autobahn protocol and factory for listeners, senders and rendezvous.

The protocol only translates. C{onConnect} reads the upgrade (action, tokens, headers), asks the
L{HybridConnectionRouter} for a decision, and installs a role: a L{ControlChannel} for listeners, or one leg
of a L{Splice} for senders and their listeners' rendezvous upgrades. Refusals become HTTP statuses with a
reason that names the cause and a tracking id; refused listeners are answered after a delay that grows per
source address, because some clients reconnect in a tight loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from typing_extensions import override

from relay.auth import Rights
from relay.draining import ConnectionDrain
from relay.errors import ErrorKind, RelayError, new_tracking_id
from relay.httphead import host_name
from relay.hybrid.addressing import (
    ACTION_ACCEPT,
    ACTION_CONNECT,
    ACTION_LISTEN,
    ACTION_REQUEST,
    AddressError,
    RequestTarget,
    hc_path,
    split_target,
)
from relay.hybrid.bridge import Splice
from relay.hybrid.control import TOKEN_EXPIRY_GRACE, ControlChannel
from relay.hybrid.legs import SplicedConnection
from relay.hybrid.messages import RemoteEndpoint
from relay.hybrid.native import NativeSplices
from relay.hybrid.rendezvous import Ticket
from relay.hybrid.router import HybridConnectionRouter, SenderContext
from relay.hybrid.upgrades import (
    EarlyBytes,
    Handoff,
    SenderLease,
    announce_sender,
    claim_rendezvous,
    deny,
    presented_tokens,
    rendezvous_subprotocol,
    sender_refusal,
)
from relay.logger import Logger
from relay.throttle import FailureThrottle
from relay.wsdata import BoundedDrop, BoundedPongs, QuietSendData
from relay.wsfast import FastMessageReader

_FACTORY_OPTIONS = frozenset(WebSocketServerProtocol.CONFIG_ATTRS)


class HybridConnectionFactory(WebSocketServerFactory):
    """
    Carries the router and limits to every C{$hc} connection.

    @ivar router: admission and pairing decisions.
    @ivar throttle: delays for refused listeners.
    @ivar limits: gateway-wide numbers (see L{relay.config.GATEWAY_LIMITS}).
    """

    def __init__(
        self,
        router: HybridConnectionRouter,
        throttle: FailureThrottle,
        clock: IReactorTime,
        limits: Mapping[str, float],
        server_name: str = "relay",
    ) -> None:
        super().__init__(server=server_name, reactor=clock)
        self.router = router
        self.throttle = throttle
        self.clock = clock
        self.limits = limits
        # HTTP relaying plugs in here: called as (protocol, request, target) for sb-hc-action=request
        # upgrades; it installs the protocol's http_role (see relay.hybrid.httprendezvous.RendezvousRole).
        self.request_rendezvous: Any = None
        self.splices: set[Splice] = set()
        self.native = NativeSplices.create(
            clock,
            int(limits.get("splice_buffer_bytes", 262144)),
            enabled=bool(limits.get("native_splice", 1.0)),
        )
        # Every $hc socket: Autobahn protocols, legs answered without Autobahn, spliced connections.
        self.connections: set[Any] = set()
        self._drain = ConnectionDrain(self.connections, clock)
        self.externalPort = None
        ping = float(limits.get("control_ping_interval", 30.0))
        self.setProtocolOptions(
            openHandshakeTimeout=0,
            closeHandshakeTimeout=float(limits.get("close_handshake_timeout", 5.0)),
            autoPingInterval=ping,
            autoPingTimeout=ping,
            maxFramePayloadSize=4 * 1024 * 1024,
            maxMessagePayloadSize=16 * 1024 * 1024,
            perMessageCompressionAccept=lambda offers: None,
            failByDrop=False,
        )

    def start_splice(self, sender: Any, listener: Any, tracking_id: str, ticket: Ticket | None) -> Splice:
        """Join a sender with its listener's rendezvous (both answered with 101) and start relaying."""
        context = ticket.context if ticket is not None else None
        entity = context.entity if isinstance(context, SenderContext) else ""
        listener_id = context.listener_id if isinstance(context, SenderContext) else ""
        splice = Splice(
            sender,
            listener,
            self.clock,
            tracking_id,
            buffer_size=int(self.limits.get("splice_buffer_bytes", 262144)),
            close_timeout=float(self.limits.get("close_handshake_timeout", 5.0)),
            entity=entity,
            listener_id=listener_id,
            metered=self.router.instruments.bytes_cell(entity),
            native=self.native,
        )
        # The sender's namespace lease goes with the pair: its protocol hears no connectionLost now.
        splice.connection_lease, sender.connection_lease = sender.connection_lease, None
        splice.start(self.spliced_connection_closed)
        self.splice_started(splice, (sender, listener))
        return splice

    def splice_started(self, splice: Splice, protocols: tuple[Any, ...]) -> None:
        """Count a new pair: its spliced connections replace the Autobahn protocols they took over from."""
        self.router.instruments.sender_connected(splice.entity)
        self.splices.add(splice)
        self.connections.difference_update(protocols)
        for leg in (splice.sender, splice.listener):
            if leg.connection is not None:
                self.connections.add(leg.connection)

    def spliced_connection_closed(self, connection: SplicedConnection) -> None:
        """A spliced leg's socket is gone; forget the pair with its last leg."""
        splice = connection.leg.splice
        if splice.ended and splice in self.splices:
            self.splices.discard(splice)
            self.router.instruments.sender_disconnected(splice.entity)
            if splice.connection_lease is not None:
                splice.connection_lease.release()
        self.connection_closed(connection)

    def connection_closed(self, protocol: Any) -> None:
        """Forget a connection; wake L{drain} waiters when none are left."""
        self._drain.forget(protocol)

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Wait until every connection is gone, aborting the stragglers after C{timeout} seconds.

        Used at shutdown after close frames were sent, so well-behaved peers finish their closing handshake.
        """
        return self._drain.wait(timeout)


class HybridConnectionProtocol(  # type: ignore[misc]
    BoundedPongs, EarlyBytes, SenderLease, QuietSendData, BoundedDrop, WebSocketServerProtocol
):
    """One C{$hc} WebSocket: a control channel, a sender, or a listener's rendezvous."""

    # Autobahn's own code logs through C{self.log} (a txaio logger honouring txaio's level); ours is separate.
    logger = Logger()
    factory: HybridConnectionFactory
    transport: Any

    # Autobahn copies its ~30 options from the factory onto every connection and pretty-prints them for a
    # debug line whatever the log level: a fifth of the gateway's CPU per connection, and a larger
    # instance dict. With no attributes to copy, options are read from the factory (L{__getattr__});
    # a connection can still set its own (C{autoPingInterval} on spliced legs).
    CONFIG_ATTRS: list[str] = []

    def __getattr__(self, name: str) -> Any:
        """Protocol options not set on this connection are the factory's."""
        if name in _FACTORY_OPTIONS:
            return getattr(self.factory, name)
        raise AttributeError(name)

    def __init__(self) -> None:
        super().__init__()
        self.tracking_id = ""
        self.control: ControlChannel | None = None
        self.http_role: Any = None
        self._ticket: Ticket | None = None
        self._handoff: Handoff | None = None
        self._accepted_ticket: Ticket | None = None
        self._accepted_protocol: str | None = None
        self._delayed: IDelayedCall | None = None
        self._throttled_source: str | None = None
        self._gone = False
        self._reader = FastMessageReader(self, masked=True, binary=True)

    # -- handshake -------------------------------------------------------------------------------------

    @override
    def onConnect(self, request: ConnectionRequest) -> Any:
        """Admit the upgrade and pick this connection's role."""
        try:
            target = split_target(self.http_request_uri)
        except AddressError as e:
            self.tracking_id = new_tracking_id()
            raise deny(RelayError(ErrorKind.BAD_REQUEST, str(e)), self.tracking_id) from None
        self.tracking_id = target.param("id") or new_tracking_id()
        path = hc_path(target.path) or "/"
        # No action (or an empty one) is a sender's upgrade, as Azure reads it: a plain WebSocket client
        # (a browser's) dials wss://ns/$hc/name[?sb-hc-token=..]; an unknown action is refused (400).
        action = target.param("action") or ACTION_CONNECT
        host = host_name(self.http_request_host or "")  # "[::1]" is "::1", as for plain HTTP
        try:
            if action == ACTION_LISTEN:
                return self._listen(request, target, path, host)
            if action == ACTION_CONNECT:
                return self._connect(request, target, path, host)
            if action == ACTION_ACCEPT:
                return self._accept(request, target)
            if action == ACTION_REQUEST and self.factory.request_rendezvous is not None:
                return self.factory.request_rendezvous(self, request, target)
            if action == ACTION_REQUEST:
                raise RelayError(
                    ErrorKind.RENDEZVOUS_UNKNOWN, "Rendezvous address is unknown, used or expired"
                )
            raise RelayError(ErrorKind.BAD_REQUEST, "Unknown sb-hc-action")
        except RelayError as e:
            self.logger.info(
                "refused {action} upgrade on {path}: {kind} {reason}",
                action=action or "-",
                path=path[:200],
                kind=e.kind.name,
                reason=e.message,
                tracking_id=self.tracking_id,
                peer=self.peer,
            )
            if action == ACTION_LISTEN:
                return self._deny_later(e)
            raise deny(e, self.tracking_id) from None

    def _remote(self) -> RemoteEndpoint:
        peer = self.transport.getPeer()
        return RemoteEndpoint(address=getattr(peer, "host", ""), port=int(getattr(peer, "port", 0)))

    def _listen(self, request: ConnectionRequest, target: RequestTarget, path: str, host: str) -> None:
        router = self.factory.router
        admission = router.admit(
            host, path, presented_tokens(request.headers, target), Rights.LISTEN, listener=True
        )
        channel = ControlChannel(
            self,
            router,
            admission,
            self.tracking_id,
            host,
            self.factory.clock,
            expiry_grace=float(self.factory.limits.get("listener_token_grace", TOKEN_EXPIRY_GRACE)),
            agent=request.headers.get("relay-user-agent", ""),
        )
        router.register_listener(admission, channel)
        self.factory.throttle.forget(self._source())
        self.control = channel
        return None

    def _connect(
        self, request: ConnectionRequest, target: RequestTarget, path: str, host: str
    ) -> Deferred[Any]:
        ticket, self.connection_lease = announce_sender(
            self.factory,
            target,
            path,
            host,
            request.headers,
            self._remote(),
            tuple(request.protocols),
            self.tracking_id,
        )
        self._ticket = ticket
        self.autoPingInterval = 0
        outcome: Deferred[Any] = ticket.outcome
        outcome.addCallbacks(self._listener_arrived, self._listener_failed)
        return outcome

    def _listener_arrived(self, handoff: Handoff) -> str | None:
        if self._gone:
            handoff.protocol.close_with(1001, "Sender went away")
            raise ConnectionDeny(ErrorKind.BAD_GATEWAY.status, "Sender went away")
        self._handoff = handoff
        return handoff.subprotocol

    def _listener_failed(self, failure: Failure) -> None:
        self.release_lease()  # refused: no longer a relay connection, however long its socket lingers
        status, reason = sender_refusal(failure, self.tracking_id)
        raise ConnectionDeny(status, reason) from None

    def _accept(self, request: ConnectionRequest, target: RequestTarget) -> str | None:
        ticket = claim_rendezvous(self.factory, target)
        self.tracking_id = ticket.connection_id
        chosen = rendezvous_subprotocol(ticket, target, self.http_request_uri, request.protocols)
        self._accepted_ticket = ticket
        self._accepted_protocol = chosen
        self.autoPingInterval = 0
        return chosen

    def _source(self) -> str:
        return str(getattr(self.transport.getPeer(), "host", self.peer))

    def _deny_later(self, error: RelayError) -> Deferred[None]:
        throttle = self.factory.throttle
        source = self._source()
        delay = throttle.failure_delay(source)
        refusal = deny(error, self.tracking_id)
        if delay <= 0:
            raise refusal
        if not throttle.begin_wait(source):
            self.logger.warn("dropping refused listener from {source}: too many waiting", source=source)
            self.transport.abortConnection()
            return Deferred()
        self._throttled_source = source
        waiting: Deferred[None] = Deferred()

        def answer() -> None:
            self._delayed = None
            self._end_throttle()
            waiting.errback(refusal)

        self._delayed = self.factory.clock.callLater(delay, answer)
        return waiting

    def _end_throttle(self) -> None:
        if self._throttled_source is not None:
            self.factory.throttle.end_wait(self._throttled_source)
            self._throttled_source = None

    # -- open connection -------------------------------------------------------------------------------

    @override
    def dropConnection(self, abort: bool = False) -> None:
        """
        End the TCP connection, gracefully after a completed closing handshake.

        Autobahn resets the connection when the peer answers a close the server started; the Node clients
        (ws 1.x) then report 1006 instead of the close code the gateway sent, so the gateway closes with a
        FIN whenever the handshake completed cleanly.
        """
        super().dropConnection(abort=abort and not self.wasClean)

    def close_with(self, code: int, reason: str) -> None:
        """
        Start a closing handshake with any valid close code.

        Autobahn's public C{sendClose} only allows 1000 and 3000-4999, but the relay must send 1001, 1008
        and 1011 as the protocol defines them.
        """
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=int(code), reasonUtf8=reason.encode("utf-8")[:123], isReply=False)
        elif self.state != self.STATE_CLOSED:
            self.dropConnection(abort=True)

    @override
    def onOpen(self) -> None:
        """Start the role picked in C{onConnect}."""
        if self.control is not None:
            self.control.opened()
        elif self._accepted_ticket is not None:
            ticket, self._accepted_ticket = self._accepted_ticket, None
            ticket.outcome.callback(Handoff(self, self._accepted_protocol))
        elif self._handoff is not None:
            listener = self._handoff.protocol
            self._handoff = None
            self.factory.start_splice(self, listener, self.tracking_id, self._ticket)
        elif self.http_role is not None:
            self.http_role.opened()
        self.release_early()  # what was held is taken (the splice) or parsed next (Autobahn)

    @override
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Whole messages reach only control channels; spliced legs bypass Autobahn."""
        if self.control is not None:
            self.control.message(payload, isBinary)

    # An HTTP rendezvous streams: its role gets each frame's payload as it arrives, with no message
    # assembly and no message size limit (a 200 MB body is one message).

    @override
    def onMessageBegin(self, isBinary: bool) -> None:
        """A message starts: an HTTP rendezvous streams it, anything else assembles it."""
        if self.http_role is not None:
            self.http_role.message_begin(isBinary)
        else:
            super().onMessageBegin(isBinary)

    @override
    def onMessageFrameBegin(self, length: int) -> None:
        """Frame boundaries mean nothing to a streamed message."""
        if self.http_role is None:
            super().onMessageFrameBegin(length)

    @override
    def onMessageFrameData(self, payload: bytes) -> None:
        """Payload bytes, unmasked."""
        if self.http_role is not None:
            self.http_role.message_data(payload)
        else:
            super().onMessageFrameData(payload)

    @override
    def onMessageFrameEnd(self) -> None:
        """Frame boundaries mean nothing to a streamed message."""
        if self.http_role is None:
            super().onMessageFrameEnd()

    @override
    def onMessageEnd(self) -> None:
        """The message is complete."""
        if self.http_role is not None:
            self.http_role.message_end()
        else:
            super().onMessageEnd()

    @override
    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """Let the role clean up."""
        if self.control is not None:
            self.control.closed(code, reason)
        elif self.http_role is not None:
            self.http_role.closed(code, reason)

    @override
    def dataReceived(self, data: bytes) -> None:
        """
        Control channels read whole simple frames themselves; everything else goes to Autobahn.

        A control channel's messages (an HTTP request's response and body, C{renewToken}) are almost
        always one whole frame each, and Autobahn's frame machinery cost more than handling them
        (L{relay.wsfast}). Other connections hand their bytes to Autobahn's framework-neutral entry point:
        its Twisted adapter's C{dataReceived} only adds a debug line whose colourised arguments it formats
        whatever the log level. Spliced legs no longer come here: their transports moved on. While an
        upgrade's answer is pending, bytes are held here instead (L{EarlyBytes}).
        """
        if self.control is not None:
            self._reader.data_received(data)
            return
        if self.state == self.STATE_CONNECTING and getattr(self, "http_request_data", None) is not None:
            # The upgrade's answer is pending. Autobahn would keep all of it, and parse each further
            # request head as another upgrade (another ticket, another accept, another throttle slot).
            self.hold_early(data)
            return
        self._dataReceived(data)

    @override
    def connectionMade(self) -> None:
        """Count the connection, so shutdown can wait for it."""
        self.factory.connections.add(self)
        super().connectionMade()

    def _end_unopened_rendezvous(self) -> None:
        """
        A handshake that failed after C{onConnect} (Autobahn refusing an extension offer, say) never opens.

        A listener's rendezvous that claimed its sender's ticket must then fail that sender (the claim
        took the ticket's timer with it); a sender whose listener already accepted must close that leg.
        """
        ticket, self._accepted_ticket = self._accepted_ticket, None
        if ticket is not None and not ticket.outcome.called:
            ticket.outcome.errback(
                RelayError(ErrorKind.BAD_GATEWAY, "The listener's rendezvous failed before it opened")
            )
        handoff, self._handoff = self._handoff, None
        if handoff is not None:
            handoff.protocol.close_with(1001, "The sender's handshake failed")

    @override
    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Withdraw a waiting sender, end a rendezvous that never opened, release throttle slots."""
        self._gone = True
        if self._delayed is not None and self._delayed.active():
            self._delayed.cancel()
        self._delayed = None
        self._end_throttle()
        if self._ticket is not None and not self._ticket.done:
            self.logger.info(
                "sender {tracking_id} left before a listener accepted", tracking_id=self.tracking_id
            )
            self.factory.router.sender_left(self._ticket)
        self._end_unopened_rendezvous()
        self.release_lease()
        super().connectionLost(reason)
        self.factory.connection_closed(self)


HybridConnectionFactory.protocol = HybridConnectionProtocol
