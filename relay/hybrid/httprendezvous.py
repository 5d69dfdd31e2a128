"""
HTTP relaying: the listener's C{sb-hc-action=request} rendezvous sockets.

A listener opens one to the address of an announced request (it fetches the request, then its body as one
fragmented binary message, and answers on the same socket), or to deliver a response too large for the
control channel. A socket that fetched a request is then kept for the sender connection's later requests
until it idles out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import LogLevel

from relay.errors import CloseCode, ErrorKind, RelayError, close_reason
from relay.hybrid.dispatch import RequestWait
from relay.hybrid.messages import ControlMessageError, decode_object, parse_response
from relay.hybrid.rendezvous import Ticket
from relay.hybrid.router import Admission
from relay.logbudget import LogBudget
from relay.logger import Logger
from relay.webchannel import RelayHTTPChannel

if TYPE_CHECKING:
    from relay.hybrid.http import HttpRelay
    from relay.hybrid.httpexchange import Exchange

MAX_RESPONSE_HEAD = 1024 * 1024
"""Largest C{response} text message accepted on a rendezvous (bytes)."""


class RendezvousRole:
    """
    A listener's C{sb-hc-action=request} WebSocket: it fetches requests and carries responses.

    @ivar for_request: opened to fetch a request, so it may carry the sender connection's later requests
        (if its listener reads them there: L{RequestWait.reusable}); C{False} for a socket opened only to
        deliver a large response (never given a request).
    @ivar exchange: the exchange using the socket now, or C{None} while idle.
    """

    log = Logger()

    def __init__(self, relay: HttpRelay, protocol: Any, ticket: Ticket) -> None:
        self.relay = relay
        self.protocol = protocol
        self.ticket = ticket
        wait: RequestWait = ticket.context
        self.for_request = wait.for_request and wait.reusable
        self.exchange: Exchange | None = None
        self._opened = False
        self._closed = False
        self._text: list[bytes] | None = None
        self._text_size = 0
        self._body_to: Exchange | None = None
        self._expect_body: Exchange | None = None
        self._in_binary = False
        self._idle_timer: IDelayedCall | None = None
        self._parked: tuple[dict[Any, RendezvousRole], Any] | None = None
        self._lines: LogBudget | None = None  # made with the first line the listener's messages cause

    @property
    def transport(self) -> Any:
        """The socket's transport."""
        return self.protocol.transport

    @property
    def is_open(self) -> bool:
        """Whether requests can still be sent on the socket."""
        protocol = self.protocol
        return not self._closed and protocol.state == protocol.STATE_OPEN

    def opened(self) -> None:
        """The upgrade completed: hand the socket to whoever waits on the address."""
        self._opened = True
        # twisted.web registered the upgrade's HTTP channel as producer; flow control here is ours.
        self.transport.unregisterProducer()
        self.relay.roles.add(self)
        self.ticket.outcome.callback(self)

    def assign(self, exchange: Exchange) -> None:
        """Carry C{exchange}'s request now."""
        self._unpark()
        self.exchange = exchange
        exchange.attached(self)

    def exchange_done(self, exchange: Exchange, *, reusable: bool) -> None:
        """An exchange on this socket finished; keep the socket for the sender's next request, or close it."""
        if self.exchange is not exchange:
            return
        self.exchange = None
        channel = exchange.sender_channel
        # Not for a sender already gone (its answer can end before the listener's: a HEAD's unread body).
        kept = isinstance(channel, RelayHTTPChannel) and not channel.gone
        if self.for_request and reusable and self.is_open and kept:
            self._park(channel, exchange.admission)
        else:
            self.close(CloseCode.NORMAL, "Response complete")

    def _park(self, channel: RelayHTTPChannel, admission: Admission) -> None:
        table = self.relay.affinity(channel)
        key = (admission.namespace.name, admission.entity.key)
        previous = table.get(key)
        if previous is not None and previous is not self:
            previous._parked = None
            previous.close(CloseCode.NORMAL, "Replaced by a newer rendezvous")
        table[key] = self
        self._parked = (table, key)
        timeout = self.relay.rendezvous_idle_timeout
        self._idle_timer = self.relay.clock.callLater(timeout, self._idle_expired)

    def _unpark(self) -> None:
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.cancel()
        self._idle_timer = None
        parked, self._parked = self._parked, None
        if parked is not None:
            table, key = parked
            if table.get(key) is self:
                del table[key]

    def _idle_expired(self) -> None:
        self._idle_timer = None
        self._unpark()
        self.close(CloseCode.NORMAL, "Idle rendezvous closed")

    def close(self, code: int, reason: str) -> None:
        """Close the socket (once)."""
        self._unpark()
        if not self._closed:
            self._closed = True
            self.protocol.close_with(int(code), close_reason(reason))

    # -- frames from the listener ----------------------------------------------------------------------

    def message_begin(self, is_binary: bool) -> None:
        """A message starts."""
        self._in_binary = is_binary
        if is_binary:
            self._body_to, self._expect_body = self._expect_body, None
        else:
            self._text = []
            self._text_size = 0

    def message_data(self, data: bytes) -> None:
        """A piece of the current message."""
        if self._in_binary:
            if self._body_to is not None:
                self._body_to.response_data(data)
            return
        if self._text is None:
            return
        self._text_size += len(data)
        if self._text_size > MAX_RESPONSE_HEAD:
            self._text = None
            self._protocol_error(f"response message larger than {MAX_RESPONSE_HEAD} bytes")
            return
        self._text.append(data)

    def message_end(self) -> None:
        """The current message is complete."""
        if self._in_binary:
            exchange, self._body_to = self._body_to, None
            if exchange is not None:
                exchange.response_end()
            return
        if self._text is None:
            return
        payload, self._text = b"".join(self._text), None
        try:
            obj = decode_object(payload)
            if "response" not in obj:
                self._note(
                    "ignored a rendezvous message with keys {keys}", keys=[k[:40] for k in list(obj)[:5]]
                )
                return
            response = parse_response(obj["response"])
        except ControlMessageError as e:
            self._protocol_error(str(e))
            return
        exchange = self.exchange
        if exchange is None or response.request_id != exchange.id:
            self._note(
                "ignored a response for {request_id} on a rendezvous that does not carry it",
                request_id=response.request_id[:64],
            )
            return
        if exchange.responded:
            self._note(
                "repeated response for request {request_id} ignored",
                request_id=exchange.id,
            )
            return
        if exchange.response_started(response, streamed=True) and response.body:
            self._expect_body = exchange

    def _note(self, format: str, **fields: Any) -> None:
        """Log a line the listener's messages cause, within this socket's budget (L{LogBudget})."""
        lines = self._lines
        if lines is None:
            lines = self._lines = LogBudget(self.relay.clock)
        lines.emit(self.log, LogLevel.info, format, **fields)

    def _protocol_error(self, problem: str) -> None:
        self.log.warn("listener broke the rendezvous protocol: {problem}", problem=problem)
        exchange = self.exchange
        if exchange is not None:
            exchange.fail(
                RelayError(ErrorKind.BAD_GATEWAY, f"The listener sent an invalid response: {problem}")
            )
        self.close(CloseCode.POLICY_VIOLATION, problem)

    def closed(self, code: int | None, reason: str | None) -> None:
        """The socket is gone."""
        self._closed = True
        self._unpark()
        self.relay.roles.discard(self)
        if self._lines is not None:
            self._lines.report_held(
                self.log, "rendezvous {connection_id}", connection_id=self.ticket.connection_id
            )
        if not self._opened:
            if not self.ticket.outcome.called:
                self.ticket.outcome.errback(
                    RelayError(ErrorKind.BAD_GATEWAY, "The listener's rendezvous failed during its upgrade")
                )
            return
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.rendezvous_closed(code, reason, head_begun=self._text is not None)
