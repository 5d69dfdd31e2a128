"""
The listener control channel: the long-lived WebSocket over which a listener is told about senders.

It registers the listener, sends C{accept} messages, adopts renewed tokens, and closes with 1008 when the
token lapses unrenewed (after a grace: the Node libraries renew only as their token lapses). Messages from
the listener other than C{renewToken} are handed to optional handlers (HTTP relaying adds C{response}
handling); unknown keys are logged and ignored. A listener sends as many messages as it likes, so the
lines they cause are budgeted per channel (L{ControlChannel.note}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import LogLevel
from zope.interface import implementer

from relay.auth import Rights
from relay.errors import CloseCode, ErrorKind, RelayError, tracked_close_reason
from relay.hybrid.messages import ControlMessageError, decode_object, parse_renew_token
from relay.hybrid.rendezvous import Ticket
from relay.hybrid.router import Admission, HybridConnectionRouter, IListenerChannel
from relay.logbudget import LogBudget
from relay.logger import Logger
from relay.writes import pending_write_bytes

MAX_CONTROL_BACKLOG = 1024 * 1024
"""Bytes a listener may leave unread on its control channel before it gets no more work."""

TOKEN_EXPIRY_GRACE = 10.0
"""
Seconds a listener's token may have lapsed before its channel is closed (the gateway's C{listener_token_grace}).

hyco-ws and hyco-https renew every hour with a token that lives an hour, made when the one before was, so
their C{renewToken} arrives a little after the expiry (up to a second for the token's whole-second C{se},
plus timer lateness and the network); closed right at the expiry, they were dropped once an hour.
"""

DOTNET_AGENT = "azure-relay-dotnet/"
"""
How the .NET listener's C{Relay-User-Agent} starts (C{HybridConnectionConstants.ClientAgent}).

It fetches one request per rendezvous and closes the socket after the answer, so a socket kept for the
sender's next request would take a request nobody reads.
"""

MessageHandler = Callable[["ControlChannel", Any], None]
BinaryHandler = Callable[["ControlChannel", bytes], None]


@implementer(IListenerChannel)
class ControlChannel:
    """
    One registered listener.

    @ivar listener_id: tracking id of the channel (the listener's C{sb-hc-id} or a new GUID).
    @ivar admission: namespace, entity and the grant the channel was opened with.
    @ivar closing: set once the channel is going away; it then gets no new work.
    @ivar handlers: extra top-level message keys this channel understands (C{response} for HTTP).
    @ivar binary_handler: what to do with binary messages (HTTP response bodies); ignored when C{None}.
    @ivar expiry_grace: seconds past the token's expiry before the channel is closed (L{TOKEN_EXPIRY_GRACE}).
    @ivar keeps_rendezvous: whether the listener reads later requests on a rendezvous it fetched one over;
        C{False} for the .NET listener (its listen upgrade's C{Relay-User-Agent} says L{DOTNET_AGENT}).
    """

    log = Logger()

    def __init__(
        self,
        protocol: Any,
        router: HybridConnectionRouter,
        admission: Admission,
        listener_id: str,
        host: str,
        clock: IReactorTime,
        expiry_grace: float = TOKEN_EXPIRY_GRACE,
        agent: str = "",
    ) -> None:
        self.protocol = protocol
        self.router = router
        self.admission = admission
        self.listener_id = listener_id
        self.host = host
        self.clock = clock
        self.expiry_grace = expiry_grace
        self.keeps_rendezvous = not agent.startswith(DOTNET_AGENT)
        self.closing = False
        self.handlers: dict[str, MessageHandler] = {}
        self.binary_handler: BinaryHandler | None = None
        self.on_closed: list[Callable[[ControlChannel], None]] = []
        self._pending: set[Ticket] = set()
        self._expiry_call: IDelayedCall | None = None
        self._expiry = admission.grant.expiry if admission.grant else None
        self._lines: LogBudget | None = None  # made with the first line the listener's messages cause
        self._backlogged = False  # warned that the listener does not read; cleared once it takes work again

    @property
    def entity_name(self) -> str:
        """The hybrid connection this listener serves."""
        return self.admission.entity.name

    def opened(self) -> None:
        """The handshake completed: watch the token's expiry."""
        self.log.info(
            "listener {listener_id} online on {entity} ({count} listeners)",
            listener_id=self.listener_id,
            entity=self.entity_name,
            count=self.router.registry.count(self.admission.namespace, self.admission.entity),
        )
        self._schedule_expiry()

    def _schedule_expiry(self) -> None:
        if self._expiry_call is not None and self._expiry_call.active():
            self._expiry_call.cancel()
        self._expiry_call = None
        if self._expiry is not None:
            delay = max(0.0, self._expiry + self.expiry_grace - self.clock.seconds())
            self._expiry_call = self.clock.callLater(delay, self._token_expired)

    def _token_expired(self) -> None:
        self._expiry_call = None
        self.log.info("listener {listener_id} token expired without renewal", listener_id=self.listener_id)
        self.close(CloseCode.POLICY_VIOLATION, "Token expired")

    def can_send(self) -> bool:
        """
        Whether the channel takes new work: open, not closing, and not sitting on a backlog.

        A listener that stops reading its control channel would otherwise make the gateway buffer every
        announcement sent to it; past L{MAX_CONTROL_BACKLOG} unsent bytes it is skipped like a closing one.
        That is logged once until it takes work again, not for every request that skips it.
        """
        if self.closing or self.protocol.state != self.protocol.STATE_OPEN:
            return False
        if pending_write_bytes(self.protocol.transport) > MAX_CONTROL_BACKLOG:
            if not self._backlogged:
                self._backlogged = True
                self.log.warn(
                    "listener {listener_id} is not reading its control channel; skipping it",
                    listener_id=self.listener_id,
                )
            return False
        self._backlogged = False
        return True

    def send_control(self, payload: bytes) -> bool:
        """Send one JSON text message if the channel takes work."""
        if not self.can_send():
            return False
        self.protocol.send_whole(payload, False)
        return True

    def send_request(self, payload: bytes, body: bytes) -> bool:
        """
        Send a relayed HTTP request and its body in one write, handed to the kernel at once.

        Announcements are otherwise left to Twisted's batching, which pays for accepts; a request would
        then wait until the gateway had read and handled every request of its reactor turn, and the
        listener would sit idle meanwhile instead of working on the first.
        """
        if not self.can_send():
            return False
        messages = ((payload, False), (body, True)) if body else ((payload, False),)
        self.protocol.send_wholes(messages, at_once=True)
        return True

    def add_pending(self, ticket: Ticket) -> None:
        """Track a sender announced on this channel until its ticket is settled."""
        self._pending.add(ticket)
        ticket.when_done(self._pending.discard)

    def note(self, log: Logger, level: LogLevel, format: str, **fields: Any) -> None:
        """
        Log a line that the listener's own messages cause, within the channel's budget (L{LogBudget}).

        Past a burst of lines, a steady few a second get through; the others are counted, and the count
        is said in the next line that gets through and when the channel closes.
        """
        lines = self._lines
        if lines is None:
            lines = self._lines = LogBudget(self.clock)
        lines.emit(log, level, format, listener_id=self.listener_id, **fields)

    def response_dropped(self, request_id: object) -> None:
        """A C{response} for no request this channel carries, or before it carried any: logged and dropped."""
        self.note(
            self.log,
            LogLevel.info,
            "response for unknown request {request_id} from listener {listener_id} dropped",
            request_id=request_id[:64] if isinstance(request_id, str) else repr(request_id)[:64],
        )

    def message(self, payload: bytes, is_binary: bool) -> None:
        """Handle one complete message from the listener."""
        if is_binary:
            if self.binary_handler is not None:
                self.binary_handler(self, payload)
            else:
                self.log.debug(
                    "ignored binary message from listener {listener_id}", listener_id=self.listener_id
                )
            return
        try:
            obj = decode_object(payload)
            unknown: list[str] = []
            for key, body in obj.items():
                if key == "renewToken":
                    self._renew(parse_renew_token(body).token)
                elif key in self.handlers:
                    self.handlers[key](self, body)
                elif key == "response":  # HTTP relaying handles it from the channel's first request on
                    self.response_dropped(body.get("requestId") if isinstance(body, dict) else None)
                else:
                    unknown.append(key)
            if unknown:  # one line per message, however many keys it holds
                self.note(
                    self.log,
                    LogLevel.info,
                    "ignored unknown control message {keys} ({count} in all) from listener {listener_id}",
                    keys=", ".join(repr(key[:64]) for key in unknown[:5]),
                    count=len(unknown),
                )
        except ControlMessageError as e:
            # Budgeted: the channel closes, but what the listener sent before it reads the close comes too.
            self.note(
                self.log,
                LogLevel.warn,
                "malformed control message from listener {listener_id}: {error}",
                error=str(e),
            )
            self.close(CloseCode.POLICY_VIOLATION, f"Malformed control message: {e}")

    def _renew(self, token: str) -> None:
        if self.closing:  # crossed our close: a new expiry timer would outlive the channel
            return
        try:
            grant = self.router.authorize(
                self.admission.namespace, self.admission.match, self.host, [token], Rights.LISTEN
            )
        except RelayError as e:
            self.log.info(
                "listener {listener_id} sent an invalid renewToken: {error}",
                listener_id=self.listener_id,
                error=e.message,
            )
            self.close(CloseCode.POLICY_VIOLATION, f"Invalid renewToken: {e.message}")
            return
        assert grant is not None  # noqa: S101 - listeners always need a token
        self._expiry = grant.expiry
        self._schedule_expiry()
        self.note(
            self.log,
            LogLevel.info,
            "listener {listener_id} renewed its token until {expiry}",
            expiry=grant.expiry,
        )

    def close(self, code: int, reason: str) -> None:
        """Close the channel on the relay's initiative (token expiry, bad message, shutdown)."""
        if self.closing:
            return
        self._withdraw()
        text = tracked_close_reason(reason, self.listener_id)
        self.protocol.close_with(int(code), text)

    def _withdraw(self) -> None:
        self.closing = True
        self.router.unregister_listener(self.admission, self)
        if self._expiry_call is not None and self._expiry_call.active():
            self._expiry_call.cancel()
        self._expiry_call = None
        for ticket in list(self._pending):
            if self.router.announce_again(ticket, self):
                continue
            self.router.rendezvous.fail(
                ticket,
                RelayError(
                    ErrorKind.LISTENER_TIMEOUT, "The listener went away before accepting the connection"
                ),
            )

    def closed(self, code: int | None, reason: str | None) -> None:
        """The socket is gone: unregister and fail whatever waited on this listener."""
        if not self.closing:
            self._withdraw()
        if self._lines is not None:
            self._lines.report_held(self.log, "listener {listener_id}", listener_id=self.listener_id)
        self.log.info(
            "listener {listener_id} offline from {entity} (close code {code})",
            listener_id=self.listener_id,
            entity=self.entity_name,
            code=code,
        )
        callbacks, self.on_closed = self.on_closed, []
        for callback in callbacks:
            callback(self)
