"""
The C{$wcf} WebSocket endpoint: listeners and senders of the SOAP relay bindings (spec sections 3-4).

C{onConnect} admits the upgrade (name, kind, token, quota, the C{soap} subprotocol) and gives the connection
a role from L{bindings.wcfroles}: a L{ListenerRole} or a L{SenderRole}. Binary frames close with 1003,
frames over the kind's hard cap with 1009 (Autobahn); a message over the name's limit gets a
C{MessageTooLarge} fault from the role as soon as its bytes pass the limit (L{bindings.wcflimit}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from typing_extensions import override

from bindings.addressing import choose_token
from bindings.faultcodes import RelayFault, RelayFaultError
from bindings.faults import gateway_fault, version_mismatch
from bindings.settings import (
    MESSAGE_BYTES,
    REQUEST_REPLY,
)
from bindings.soap import Envelope, SoapVersion
from bindings.wcflimit import LimitedAssembly
from bindings.wcfroles import ListenerRole
from bindings.wcfsender import SenderRole
from bindings.wcftarget import TargetError, parse_target, safe_reason
from relay.auth import split_tokens
from relay.connectionquota import ConnectionLease, ConnectionQuotaExceeded
from relay.draining import ConnectionDrain
from relay.errors import CloseCode, ErrorKind, RelayError, close_reason, new_tracking_id
from relay.httphead import host_name
from relay.logbudget import LogBudget
from relay.logger import Logger
from relay.resource import ErrorResource
from relay.writes import pending_write_bytes
from relay.wsdata import BoundedDrop, BoundedPongs, NoTimerAfterLoss
from relay.wsfast import FastMessageReader
from relay.wsframes import FrameCache

if TYPE_CHECKING:
    from bindings.gateway import BindingsGateway

SUBPROTOCOL: Final = "soap"
REGISTER_TIMEOUT: Final = 30.0
"""Seconds a listener has to send C{r:Register} after its handshake."""
_TOKEN_HEADER: Final = "servicebusauthorization"  # noqa: S105 - a header name

# Unsent bytes past which a peer that draws faults is closed rather than sent another (L{send_fault}).
FAULT_BACKLOG_LIMIT: Final = 1024 * 1024


def deny(status: int, message: str, tracking_id: str) -> ConnectionDeny:
    """The handshake refusal: the status and a reason naming the cause and the tracking id (spec 3)."""
    return ConnectionDeny(status, safe_reason(f"{message}. TrackingId:{tracking_id}"))


class WcfFactory(WebSocketServerFactory):
    """
    Carries the bindings gateway to every C{$wcf} connection.

    @ivar gateway: names, routers and limits.
    @ivar connections: open protocols, for shutdown.
    """

    def __init__(self, gateway: BindingsGateway) -> None:
        super().__init__(server="relay", reactor=gateway.clock)
        self.gateway = gateway
        self.connections: set[WcfProtocol] = set()
        self.register_timeout = REGISTER_TIMEOUT
        self._drain = ConnectionDrain(self.connections, gateway.clock)
        self._frames = FrameCache(gateway.clock)
        ping = float(gateway.limits.get("control_ping_interval", 30.0))
        self.setProtocolOptions(
            openHandshakeTimeout=0,
            closeHandshakeTimeout=float(gateway.limits.get("close_handshake_timeout", 5.0)),
            autoPingInterval=ping,
            autoPingTimeout=2 * ping,
            maxMessagePayloadSize=MESSAGE_BYTES[REQUEST_REPLY][1],
            perMessageCompressionAccept=lambda offers: None,
            failByDrop=False,
        )

    def frame_for(self, payload: bytes) -> bytes:
        """
        The text frame carrying C{payload}, built once for consecutive writes of the same bytes object.

        A multicast publish hands the same payload to every subscriber in one go, so each copy after the
        first costs a transport write and nothing else; a large one is not kept past its turn (L{FrameCache}).
        """
        return self._frames.frame_for(payload)

    def close_all(self, code: int, reason: str) -> None:
        """Close every connection (gateway shutdown)."""
        for protocol in list(self.connections):
            protocol.close_with(code, reason)

    def connection_closed(self, protocol: WcfProtocol) -> None:
        """Forget a connection; wake L{drain} waiters when none are left."""
        self._drain.forget(protocol)

    def drain(self, timeout: float) -> Deferred[None]:
        """Wait until every connection is gone, aborting the stragglers after C{timeout} seconds."""
        return self._drain.wait(timeout)


class WcfResource(Resource):
    """C{/$wcf/...}: WebSocket upgrades go to Autobahn; anything else is a client error."""

    isLeaf = True

    def __init__(self, factory: WcfFactory) -> None:
        super().__init__()
        self._websocket = WebSocketResource(factory)

    @override
    def render(self, request: IRequest) -> Any:
        """Hand upgrades to Autobahn, refuse the rest with 400."""
        if (request.getHeader(b"upgrade") or b"").lower() != b"websocket":
            error = RelayError(ErrorKind.BAD_REQUEST, "The $wcf endpoint only accepts WebSocket upgrades")
            return ErrorResource(error).render(request)
        return self._websocket.render(request)


class WcfProtocol(LimitedAssembly, BoundedPongs, NoTimerAfterLoss, BoundedDrop, WebSocketServerProtocol):  # type: ignore[misc]
    """
    One C{$wcf} WebSocket: a listener or a sender.

    Simple text frames are read by L{FastMessageReader}, everything else by Autobahn (whose adapter's own
    C{dataReceived}, with a debug message formatted on every read, is never used). The frames a sender sent
    after a message that held it back wait in the reader until it is let go, also when Autobahn read that
    message (L{processData}).
    """

    # Autobahn logs through C{self.log} (a txaio logger); ours is separate and must not shadow it.
    logger = Logger()
    factory: WcfFactory
    transport: Any

    def __init__(self) -> None:
        super().__init__()
        self.tracking_id = ""
        self.role: ListenerRole | SenderRole | None = None
        self.connection_lease: ConnectionLease | None = None  # on the namespace's connections
        self.host = ""
        self._reader = FastMessageReader(self, masked=True, held=self._reading_held)
        self._fault_lines: LogBudget | None = None  # made with the factory's clock on the first fault
        self._message_lines: LogBudget | None = None  # lines about its messages that are not faults

    def _reading_held(self) -> bool:
        return isinstance(self.role, SenderRole) and self.role.reading_held

    def reading_released(self) -> None:
        """
        A held-back sender was let go: read the frames it sent after the message that held it.

        They are read in a later turn, never from inside the outlet (or the transport) that let it go.
        """
        if self._reader.keeping:
            self.factory.gateway.clock.callLater(0, self._reader.resume)

    @property
    def role_name(self) -> str:
        """C{listener}, C{sender} or C{connection} (before admission), for logs."""
        return self.role.name if self.role is not None else "connection"

    # -- handshake -------------------------------------------------------------------------------------

    @override
    def onConnect(self, request: ConnectionRequest) -> str:
        """Admit the upgrade and pick this connection's role."""
        self.tracking_id = new_tracking_id()
        try:
            target = parse_target(self.http_request_uri)
        except TargetError as e:
            raise self._refuse(400, str(e), "-", "") from None
        self.tracking_id = safe_reason(target.client_id or "")[:64] or self.tracking_id
        if SUBPROTOCOL not in request.protocols:
            raise self._refuse(
                400, "The 'soap' WebSocket subprotocol is required", target.action, target.path
            )
        self.host = host_name(self.http_request_host or "")  # "[::1]" is "::1", as for SOAP over HTTP
        tokens = choose_token(target.token, request.headers.get(_TOKEN_HEADER))
        presented = split_tokens(tokens.token or "")  # a header given twice holds two; any valid one admits
        try:
            if target.action == "listen":
                self.role = ListenerRole.admit(self, target.path, presented)
            elif target.action == "send":
                self.role = SenderRole.admit(self, target.path, presented)
            else:
                raise self._refuse(400, "Missing or unknown sb-wcf-action", target.action, target.path)
        except RelayFaultError as e:
            raise self._refuse(e.kind.status, e.message, target.action, target.path) from None
        try:
            self.connection_lease = self.factory.gateway.connections.take(self.role.namespace.name)
        except ConnectionQuotaExceeded as e:
            self.role = None
            status = RelayFault.QUOTA_EXCEEDED.status
            raise self._refuse(status, e.message, target.action, target.path) from None
        self.maxMessagePayloadSize = self.role.frame_cap
        return SUBPROTOCOL

    def _refuse(self, status: int, message: str, action: str | None, path: str) -> ConnectionDeny:
        self.logger.info(
            "refused {action} upgrade on {path}: {status} {cause}",
            action=action or "-",
            path=path[:200],
            status=status,
            cause=message,
            tracking_id=self.tracking_id,
            peer=self.peer,
        )
        return deny(status, message, self.tracking_id)

    # -- open connection -------------------------------------------------------------------------------

    def close_with(self, code: int, reason: str) -> None:
        """
        Start a closing handshake with any valid close code (Autobahn's C{sendClose} refuses 1001-1011).
        """
        text = close_reason(f"{reason}. TrackingId:{self.tracking_id}")
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=int(code), reasonUtf8=text.encode("utf-8"), isReply=False)
        elif self.state != self.STATE_CLOSED:
            self.dropConnection(abort=True)

    def send_text(self, payload: bytes) -> bool:
        """
        Write one envelope (UTF-8 bytes) as one text message, if the socket is open; whether it was.

        The frame goes straight to the transport (see L{relay.wsframes}); only while Autobahn itself
        has frames queued (it never does on C{$wcf}, which sends nothing synchronously) does it go through
        Autobahn, to keep the order.
        """
        if self.state != self.STATE_OPEN:
            return False
        if self.send_queue:
            self.sendMessage(payload, isBinary=False)
        else:
            self.transport.write(self.factory.frame_for(payload))
        return True

    def send_envelope(self, envelope: Envelope) -> None:
        """Write one envelope as one text message, if the socket is open."""
        self.send_text(envelope.to_bytes())

    def send_answer(self, envelope: Envelope, allowance: int = 0) -> None:
        """
        Write an answer the peer asked for (C{r:TokenRenewed}), unless it does not read what it gets.

        A listener is read however full its socket is (its queue is the outlet's business), so one that
        keeps asking without reading is closed with 1008 once L{FAULT_BACKLOG_LIMIT} bytes plus
        C{allowance} (the largest message that may legitimately wait for it) are unsent.
        """
        if not self.answers_backlogged(allowance):
            self.send_envelope(envelope)

    def answers_backlogged(self, allowance: int) -> bool:
        """
        Whether the peer does not read its answers; if so it is closed with 1008 "Answers are not being read".

        That is once L{FAULT_BACKLOG_LIMIT} plus C{allowance} bytes wait unsent for it. A sender is not
        read while its answers back up, but the replies to what it already sent still come: without this
        they would be queued for it without end.
        """
        return self._closed_for_backlog(
            FAULT_BACKLOG_LIMIT + allowance,
            "it asks for answers without reading them",
            "Answers are not being read",
        )

    def _closed_for_backlog(self, limit: int, why: str, reason: str) -> bool:
        """Close with 1008 and C{reason} (logged with C{why}) once C{limit} bytes wait unsent; whether it did."""
        if pending_write_bytes(self.transport) < limit:
            return False
        if self.state == self.STATE_OPEN:
            self.logger.warn(
                "closing {role} {tracking_id}: {why}",
                role=self.role_name,
                tracking_id=self.tracking_id,
                why=why,
            )
        self.close_with(CloseCode.POLICY_VIOLATION, reason)
        return True

    def send_fault(
        self, kind: RelayFault, message: str, relates_to: str | None = None, path: str | None = None
    ) -> None:
        """
        Write a gateway fault (spec 7.1), count it and log it.

        A peer that keeps sending bad messages without reading the faults is closed with 1008 once
        L{FAULT_BACKLOG_LIMIT} bytes wait for it, instead of having faults queued for it without end. One
        that reads them gets every fault and every one is counted, but its log lines are budgeted
        (L{LogBudget}: 20 at once, then 10 a second), with the number left out said in the next line or
        when the socket closes.
        """
        if not self._fault_accounted(kind.subcode_name, message, relates_to):
            return
        role_path = self.role.path if self.role is not None else ""
        self.send_envelope(
            gateway_fault(
                kind,
                SoapVersion.SOAP12,
                path=path or role_path,
                tracking_id=self.tracking_id,
                message=message,
                relates_to=relates_to,
            )
        )

    def send_version_mismatch(self, cause: str) -> None:
        """
        Write a C{VersionMismatch} fault (spec 6.3) as L{send_fault} writes gateway faults.

        It is counted, its log line comes out of the same budget, and a peer that does not read its faults
        is closed with 1008 rather than sent another.
        """
        if self._fault_accounted("VersionMismatch", cause):
            self.send_envelope(version_mismatch(SoapVersion.SOAP12, self.tracking_id))

    def _fault_accounted(self, subcode: str, cause: str, relates_to: str | None = None) -> bool:
        """
        Count and log (within the fault budget) a fault about to be written to this peer.

        @return: C{False} when the peer was closed instead: it does not read the faults it already has.
        """
        if self._closed_for_backlog(
            FAULT_BACKLOG_LIMIT,
            "it sends bad messages without reading the faults",
            "Faults are not being read",
        ):
            return False
        entity = getattr(self.role, "entity", None)
        self.factory.gateway.instruments.fault(entity.name if entity is not None else None, subcode)
        if self._fault_lines is None:
            self._fault_lines = LogBudget(self.factory.gateway.clock)
        unlogged = self._fault_lines.allow()
        if unlogged is not None:
            self.logger.info(
                "fault {subcode} to {role} {tracking_id}: {cause}"
                + (" ({unlogged} faults to it before this one were not logged)" if unlogged else ""),
                subcode=subcode,
                role=self.role_name,
                tracking_id=self.tracking_id,
                cause=cause,
                relates_to=relates_to,
                unlogged=unlogged,
            )
        return True

    def message_lines(self) -> LogBudget:
        """
        The budget of log lines about this peer's messages that are not faults (renewals, dropped replies).

        A peer causes them as fast as it sends, as it does faults: 20 at once, then 10 a second, and the
        number held back is said in the next line let through (L{LogBudget.emit}) and when the socket closes.
        """
        if self._message_lines is None:
            self._message_lines = LogBudget(self.factory.gateway.clock)
        return self._message_lines

    def log_message_line(self, text: str, **fields: Any) -> None:
        """Log a line about one of this peer's messages within L{message_lines}."""
        self.message_lines().emit(self.logger, LogLevel.info, text, **fields)

    @override
    def onOpen(self) -> None:
        """Start the role."""
        if self.role is not None:
            self.role.opened()

    @override
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Binary frames end the connection (1003); text frames go to the role."""
        if isBinary:
            self.binary_message()
        elif self.role is not None:
            self.role.message(payload)

    @override
    def binary_message(self) -> None:
        """A binary message ends the connection (1003)."""
        self.logger.info(
            "{role} {tracking_id} sent a binary frame", role=self.role_name, tracking_id=self.tracking_id
        )
        self.close_with(CloseCode.UNSUPPORTED_DATA, "Only text frames carrying SOAP envelopes are accepted")

    @override
    def assembly_limit(self) -> int:
        """The name's current message size limit (Autobahn closes past the kind's hard cap)."""
        return self.role.message_limit if self.role is not None else self.maxMessagePayloadSize  # type: ignore[no-any-return]

    @override
    def message_too_large(self, head: bytes, limit: int) -> None:
        """A message passed the name's limit while it was assembled: the role refuses it now."""
        if self.role is not None:
            self.role.too_large(head, limit)

    @override
    def onAutoPingTimeout(self) -> None:
        """
        Drop a peer whose pong did not come in time, unless it may wait unread behind a held-back message.

        A sender waiting for room in a listener's queue is not read (for up to C{send_timeout}, 5 minutes at
        most, and again for each message that finds the queue full): its pong is given the time again. So
        is a listener with request/reply calls in flight (L{ListenerRole.awaited}): a host busy with as many
        calls as it runs at once reads nothing, pings included, until one ends, and dropping it failed
        every call in flight with C{ListenerGone}; each call still ends at its C{request_timeout}. And so
        is a listener the gateway heard from since its ping: a host busy with one-way calls (whose end the
        gateway cannot see) sends unsolicited pongs while it reads nothing (L{bindings.wsclient}).
        """
        role = self.role
        heard = self.heard_since_ping()
        if (isinstance(role, ListenerRole) and (role.awaited or heard)) or (
            isinstance(role, SenderRole)
            and (role.waiting_for_listener or (self._reader.keeping and not role.reading_held))
        ):
            self.wait_for_pong_again()
            return
        super().onAutoPingTimeout()

    @override
    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """Let the role clean up; say how many faults went unlogged since the last line about them."""
        if self._fault_lines is not None and self._fault_lines.held:
            self.logger.info(
                "{unlogged} more faults to {role} {tracking_id} were not logged (at most {per_second:g} a second)",
                unlogged=self._fault_lines.held,
                role=self.role_name,
                tracking_id=self.tracking_id,
                per_second=self._fault_lines.per_second,
            )
        if self._message_lines is not None:
            self._message_lines.report_held(
                self.logger,
                "messages from {role} {tracking_id}",
                role=self.role_name,
                tracking_id=self.tracking_id,
            )
        if self.role is not None:
            self.role.closed(code)

    @override
    def dataReceived(self, data: bytes) -> None:
        """Simple text frames are read by L{FastMessageReader}; everything else by Autobahn's parser."""
        self._heard_since_ping = True
        self._reader.data_received(data)

    @override
    def processData(self) -> bool:
        """Autobahn parses its next frame, unless the message it just delivered held the sender back."""
        return not self._reader.keeps_autobahn_rest() and super().processData()  # type: ignore[no-any-return]

    @override
    def connectionMade(self) -> None:
        """Count the connection, so shutdown can wait for it."""
        self.factory.connections.add(self)
        super().connectionMade()

    @override
    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Forget the connection; it no longer counts against its namespace."""
        lease, self.connection_lease = self.connection_lease, None
        if lease is not None:
            lease.release()
        super().connectionLost(reason)
        self.factory.connection_closed(self)


WcfFactory.protocol = WcfProtocol
