"""
An HTTP exchange's rendezvous: a WebSocket a listener opens for one request or for its answer.

A request too large for the control channel is announced there and goes over the rendezvous the listener
opens for it; a small request's answer may come back over one (its address is held until the answer is
due). A keep-alive sender's next request reuses a kept rendezvous, and one that crosses its close before
any handler saw it is sent again. Part of L{relay.hybrid.httpexchange.Exchange} (see
L{relay.hybrid.exchangefields}).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, cast

from relay.errors import CloseCode, ErrorKind, RelayError
from relay.hybrid.dispatch import RequestWait
from relay.hybrid.exchangefields import ExchangeFields, State
from relay.hybrid.httpflow import UploadProducer, UploadToRendezvous
from relay.hybrid.rendezvous import Ticket

if TYPE_CHECKING:
    from twisted.python.failure import Failure

    from relay.hybrid.httpexchange import Exchange
    from relay.hybrid.httprendezvous import RendezvousRole


IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""Methods a request may be sent again with when no handler can have seen it (RFC 9110 section 9.2.2)."""


class ExchangeRendezvous(ExchangeFields):
    """The rendezvous side of an exchange."""

    __slots__ = ()

    def _exchange(self) -> Exchange:
        """This exchange, as the rendezvous and the body adapters know it."""
        return cast("Exchange", self)

    @property
    def address_window(self) -> float:
        """Seconds a small request's address stays claimable from its dispatch: its timeout and a rendezvous's."""
        return self._settings.request_timeout + self.relay.dispatcher.rendezvous_timeout

    @property
    def key(self) -> str:
        """The secret of the request's address (L{relay.hybrid.dispatch.HttpDispatcher.address})."""
        return self._key

    def address_claimed(self) -> Ticket:
        """
        A listener opened the address this exchange holds (a small request's): the ticket it claimed.

        Made now, already claimed; its outcome fires with the rendezvous once the upgrade completes.
        """
        self._address_deadline = None
        wait = RequestWait(self._exchange(), False, False)  # a socket opened for a response is never reused
        ticket = self._ticket = Ticket(key=self._key, connection_id=self.id, context=wait, done=True)
        ticket.outcome.addCallbacks(self._response_rendezvous, self._response_address_expired)
        return ticket

    def _drop_ticket(self, *, response_arrived: bool) -> None:
        deadline, self._address_deadline = self._address_deadline, None
        if deadline is not None:  # a small request's address, held: dropped, or kept for a late answer
            self.relay.release_address(self._exchange(), None if response_arrived else deadline)
        ticket, self._ticket = self._ticket, None
        if ticket is None or ticket.done:
            return
        self.relay.router.rendezvous.cancel(ticket)

    def _fetched(self, role: RendezvousRole) -> None:
        self._ticket = None
        if self.state is not State.WAITING:
            role.close(CloseCode.NORMAL, "The sender went away")
            return
        self._untrack()
        role.assign(self._exchange())

    def _not_fetched(self, failure: Failure) -> None:
        self._ticket = None
        error = failure.value
        if isinstance(error, RelayError):
            if error.kind is ErrorKind.LISTENER_TIMEOUT:
                error = RelayError(
                    ErrorKind.LISTENER_TIMEOUT,
                    f"The listener did not fetch the request within {self.relay.dispatcher.rendezvous_timeout:g}s",
                )
            self.fail(error)
        else:
            self.log.failure("request {request_id}: rendezvous failed", failure, request_id=self.id)
            self.fail(RelayError(ErrorKind.INTERNAL, "Internal error"))

    def _response_rendezvous(self, role: RendezvousRole) -> None:
        self._ticket = None
        if self.state is not State.WAITING or self.rendezvous is not None:
            role.close(CloseCode.NORMAL, "No response expected here")
            return
        self._untrack()
        self.rendezvous = role
        role.exchange = self._exchange()

    def _response_address_expired(self, failure: Failure) -> None:
        self._ticket = None  # the response timer reports the timeout; the address is no longer claimable

    def attached(self, role: RendezvousRole) -> None:
        """A rendezvous is ready for this request: send it the full request, then stream the body."""
        self.rendezvous = role
        protocol = role.protocol
        stream = self.request.body if self._body is None else None
        if stream is not None:
            has_body = not (stream.complete and stream.received == 0)
        else:
            has_body = bool(self._body)
        protocol.sendMessage(replace(self.message, body=has_body).encode(), isBinary=False)
        if stream is not None and has_body:
            protocol.beginMessage(isBinary=True)
            role.transport.registerProducer(UploadProducer(self._exchange(), stream), True)
            self._uploading = True
            stream.attach(UploadToRendezvous(self._exchange(), role))
            return
        if has_body and self._body:
            protocol.sendMessage(self._body, isBinary=True)
            self.uploaded_bytes = len(self._body)
        self.request_delivered()

    def rendezvous_closed(self, code: int | None, reason: str | None, *, head_begun: bool = False) -> None:
        """
        The rendezvous carrying this exchange closed.

        @param head_begun: part of a response head had come on it (a text message left unfinished).
        """
        self.rendezvous = None
        if self.state is State.DONE:
            return
        if code == CloseCode.NORMAL and not head_begun and self._may_go_again():
            self._go_again()
            return
        detail = ""
        if code:
            short = f": {reason}" if reason and len(reason) <= 80 else ""
            detail = f" (close code {code}{short})"
        if self.state is State.RESPONDING:
            self._abort(f"The listener closed the rendezvous in the middle of the response{detail}")
        else:
            self.fail(
                RelayError(
                    ErrorKind.BAD_GATEWAY, f"The listener closed the rendezvous before responding{detail}"
                )
            )

    def _may_go_again(self) -> bool:
        """
        Whether a request whose rendezvous closed (1000) before any of its answer may be sent again.

        Only a request put on a rendezvous kept from an earlier one: the .NET listener closes every
        rendezvous after its answer (spec 6.5), so a keep-alive request can cross that close, and no handler
        saw it. The body must still be whole at hand: buffered, or streamed with none of it sent yet. And
        the method must be idempotent (RFC 9110 9.2.2): a listener that took the request and then closed
        without a byte of answer cannot be told apart, and a POST must not be carried out twice.
        """
        return (
            self._on_kept_rendezvous
            and self.message.method in IDEMPOTENT_METHODS
            and self.state is State.WAITING
            and (self._body is not None or self.uploaded_bytes == 0)
        )

    def _go_again(self) -> None:
        """Send the request once more, on the control channel (no kept rendezvous: it may be closing too)."""
        self.log.debug("request {request_id} crossed its rendezvous's close: sent again", request_id=self.id)
        self._on_kept_rendezvous = False
        self._cancel_response_timer()
        self._stop_upload()
        self._request_sent = False
        self.uploaded_bytes = 0
        if self.request.body is not None:
            self.request.body.detach()
        try:
            self._dispatch()
        except RelayError as e:
            self.fail(e)

    def _release_rendezvous(self, code: int, reason: str) -> None:
        role, self.rendezvous = self.rendezvous, None
        if role is not None and role.exchange is self:
            role.exchange = None
            role.close(code, reason)
