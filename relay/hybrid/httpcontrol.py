"""
HTTP relaying on a listener's control channel: small requests go out there, and their responses come back.

The answer to a small request comes back on the control channel (C{response} JSON and one binary body
message), unless it is large; then it comes over a rendezvous (L{relay.hybrid.httprendezvous}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import LogLevel

from relay.errors import ErrorKind, RelayError
from relay.hybrid.control import ControlChannel
from relay.hybrid.messages import ControlMessageError, parse_response
from relay.logger import Logger

if TYPE_CHECKING:
    from relay.hybrid.http import HttpRelay
    from relay.hybrid.httpexchange import Exchange


class ControlResponses:
    """
    The HTTP side of one control channel: the requests sent on it and the responses coming back.

    A C{response} is matched by C{requestId} against the requests sent on this channel only; a body message
    belongs to the response right before it. Unknown ids (and a request's second response) are logged
    (within the channel's budget, L{ControlChannel.note}) and their body dropped, and a binary message
    nobody announced (hyco-https sends one after C{"body": false}) is ignored.
    """

    log = Logger()

    def __init__(self, relay: HttpRelay, channel: ControlChannel) -> None:
        self.relay = relay
        self.channel = channel
        self.pending: dict[str, Exchange] = {}
        self._body_for: Exchange | None = None
        self._drop_body = False
        self._body_timer: IDelayedCall | None = None
        channel.handlers["response"] = self._response
        channel.binary_handler = self._binary
        channel.on_closed.append(self._closed)

    def track(self, exchange: Exchange) -> None:
        """A request went out on this channel (or was announced on it)."""
        self.pending[exchange.id] = exchange

    def untrack(self, exchange: Exchange) -> None:
        """The exchange no longer depends on this channel."""
        if self.pending.get(exchange.id) is exchange:
            del self.pending[exchange.id]

    def _response(self, channel: ControlChannel, body: Any) -> None:
        waiting, self._body_for = self._body_for, None
        if waiting is not None:
            # The body a response announced must come next; without this the request would wait for it
            # as long as its sender stays (its response timer stopped when the head came).
            waiting.fail(
                RelayError(
                    ErrorKind.BAD_GATEWAY,
                    "The listener sent another response instead of the body it announced",
                )
            )
        try:
            response = parse_response(body)
        except ControlMessageError as e:
            channel.note(
                self.log, LogLevel.warn, "invalid response from listener {listener_id}: {error}", error=str(e)
            )
            request_id = body.get("requestId") if isinstance(body, dict) else None
            self._drop_body = isinstance(body, dict) and body.get("body") is True
            exchange = self.pending.get(request_id) if isinstance(request_id, str) else None
            if exchange is not None:
                exchange.fail(
                    RelayError(ErrorKind.BAD_GATEWAY, f"The listener sent an invalid response: {e}")
                )
            return
        exchange = self.pending.get(response.request_id)
        if exchange is None or exchange.rendezvous is not None or exchange.responded:
            channel.response_dropped(response.request_id)
            self._drop_body = response.body
            return
        wanted = exchange.response_started(response, streamed=False)
        if response.body:
            if wanted:
                self._await_body(exchange)
            else:
                self._drop_body = True

    def _await_body(self, exchange: Exchange) -> None:
        """
        The body message must come next, within the request's timeout (its response timer stopped).

        One timer per channel, pushed back for each body awaited (no timer made and cancelled per request);
        when it comes due with no body awaited, it just lapses.
        """
        self._body_for = exchange
        timeout = float(exchange.admission.settings.request_timeout)
        timer = self._body_timer
        if timer is not None and timer.active():
            timer.reset(timeout)
        else:
            self._body_timer = self.relay.clock.callLater(timeout, self._body_overdue, timeout)

    def _body_overdue(self, timeout: float) -> None:
        self._body_timer = None
        exchange, self._body_for = self._body_for, None
        if exchange is not None:
            self._drop_body = True  # if it comes after all, it is nobody's
            exchange.fail(
                RelayError(
                    ErrorKind.BAD_GATEWAY,
                    f"The listener did not send the body it announced within {timeout:g}s",
                )
            )

    def _binary(self, channel: ControlChannel, payload: bytes) -> None:
        exchange, self._body_for = self._body_for, None
        if exchange is not None:
            exchange.response_body(payload)
        elif self._drop_body:
            self._drop_body = False
        else:
            self.log.debug(
                "ignored a binary message nobody announced ({size} bytes) from listener {listener_id}",
                size=len(payload),
                listener_id=channel.listener_id,
            )

    def _closed(self, channel: ControlChannel) -> None:
        timer, self._body_timer = self._body_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        pending = list(self.pending.values())
        self.pending.clear()
        for exchange in pending:
            exchange.listener_gone()
        self.relay.forget(channel)  # last: nothing above may bring the channel's state back
