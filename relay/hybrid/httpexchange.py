"""
HTTP relaying: one exchange, a sender's request followed from its arrival until its response is complete.

An L{Exchange} sends the request on the listener's control channel or a rendezvous
(L{relay.hybrid.httprendezvous}), and relays the response that comes back on either. This module holds
the request's dispatch, the answer and the failures; the rendezvous side is in
L{relay.hybrid.exchangerendezvous} and the timers in L{relay.hybrid.exchangeflow} (one state machine in
three modules, L{relay.hybrid.exchangefields}).

Bodies stream in both directions with back-pressure: a listener socket that cannot take more pauses
reading from the sender, and a sender that reads slowly pauses reading from the listener's rendezvous.
Nothing holds more than a socket buffer and one read per direction. Control-channel bodies are single
messages bounded by the control channel's message limit.

Failures answer the sender with the relay's own status (no C{Via}) and a body naming the cause and the
tracking id, while nothing was sent yet; once the response has started, the sender's connection is
aborted, so a cut-off body can never pass for a complete one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure

from relay.connectionquota import ConnectionLease
from relay.errors import CloseCode, ErrorKind, RelayError
from relay.hybrid.control import ControlChannel
from relay.hybrid.dispatch import fits_control_channel
from relay.hybrid.exchangefields import State
from relay.hybrid.exchangeflow import ExchangeFlow
from relay.hybrid.exchangerendezvous import ExchangeRendezvous
from relay.hybrid.headers import (
    MAX_SENDER_HEAD,
    HeaderError,
    body_forbidden,
    oversized_head,
    reason_phrase,
    response_head,
)
from relay.hybrid.httpflow import DownloadProducer
from relay.hybrid.messages import HttpRequest, HttpResponse
from relay.hybrid.router import Admission
from relay.logger import Logger
from relay.resource import ErrorResource
from relay.webrequest import RelayRequest

if TYPE_CHECKING:
    from relay.hybrid.http import HttpRelay
    from relay.hybrid.rendezvous import Ticket


class Exchange(ExchangeRendezvous, ExchangeFlow):
    """
    One relayed request: the sender's twisted.web request, the listener side it went to, and the timers.

    @ivar id: the request id (also the tracking id the sender sees in errors).
    @ivar state: where the exchange is.
    @ivar rendezvous: the rendezvous carrying the request or the response, once there is one.
    """

    __slots__ = ()  # all in ExchangeFields

    log = Logger()

    def __init__(
        self,
        relay: HttpRelay,
        request: RelayRequest,
        admission: Admission,
        message: HttpRequest,
        body: bytes | None,
        connection_lease: ConnectionLease,
        key: str,
    ) -> None:
        self.relay = relay
        self.connection_lease = connection_lease  # released by the relay when the exchange is done
        self.request = request
        self.sender_channel: Any = request.channel  # twisted drops request.channel once finished
        self.admission = admission
        self.message = message
        self.id = message.id
        self._key = key  # the secret of message.address (HttpDispatcher.address)
        self.state = State.WAITING
        self.rendezvous = None
        self.sent_bytes = 0
        self.uploaded_bytes = 0  # request body bytes handed to a listener (the relayed ones)
        self._body = body
        self._settings = admission.settings
        self._channel: ControlChannel | None = None
        self._ticket = None
        self._address_deadline = None  # while it holds its address (a small request)
        self._uploading = False
        self._request_sent = False
        self._on_kept_rendezvous = False  # put on a rendezvous kept from an earlier request (may go again)
        self._forward_body = True
        self._sender_done = False  # its answer is complete, the listener's unread body is still drained
        self._expected: int | None = None
        self._producer = None
        self._response_deadline = None  # set while its response is due
        self._idle_timer = None
        self._upload_stall = None  # the listener takes none of the request body
        self._download_stall = None  # the sender takes none of the answer
        self._download_paused = False
        self._status = 0
        request.when_done(self._request_over)

    # -- sending the request -------------------------------------------------------------------------

    def start(self) -> None:
        """
        Send the request to a listener.

        It goes on the sender connection's rendezvous if it has one, else on the control channel when it
        is small, else it is announced for a rendezvous.

        @raise RelayError: 502 when no listener is connected.
        """
        role = self.relay.reusable_rendezvous(self.request, self.admission)
        if role is not None:
            self.log.debug("request {request_id} reuses a rendezvous", request_id=self.id)
            self._on_kept_rendezvous = True
            role.assign(self)
            return
        self._dispatch()

    def _dispatch(self) -> None:
        """
        Send the request on the control channel when it is small, else announce it there for a rendezvous.

        @raise RelayError: 502 when no listener is connected.
        """
        dispatcher = self.relay.dispatcher
        if self._body is not None:
            payload = self.message.encode()
            if fits_control_channel(len(payload), len(self._body)):
                channel = dispatcher.send_small(self.admission, payload, self._body)
                self._track(channel, None)
                # claimable for a response over a rendezvous while the answer is due, and after that
                # (for a late one, HttpRelay.release_address) until the end of the response window
                self._address_deadline = self.clock.seconds() + self.address_window
                self.relay.hold_address(self)
                self.uploaded_bytes = len(self._body)
                self.request_delivered()
                return
        channel, ticket = dispatcher.announce(
            self.admission, self.id, self.message.address, self, key=self._key
        )
        self._track(channel, ticket)
        ticket.outcome.addCallbacks(self._fetched, self._not_fetched)

    def _track(self, channel: Any, ticket: Ticket | None) -> None:
        self._channel = channel
        self._ticket = ticket
        self.relay.responses(channel).track(self)

    def _untrack(self) -> None:
        if self._channel is not None:
            self.relay.untrack(self._channel, self)
            self._channel = None

    def request_delivered(self) -> None:
        """The whole request reached the listener's socket: its response is now due."""
        self._request_sent = True
        self._stop_upload()
        if self.state is State.WAITING and self._response_deadline is None:
            deadlines = self._response_deadline = self.relay.response_deadlines(
                self._settings.request_timeout
            )
            deadlines.set(self)

    # -- receiving the response ----------------------------------------------------------------------

    @property
    def responded(self) -> bool:
        """
        Whether the exchange took a response head already, or ended: a later head is not for it.

        The caller drops such a head and logs it within the listener's budget (a listener can repeat heads
        as fast as it sends).
        """
        return self.state is not State.WAITING

    def response_started(self, response: HttpResponse, *, streamed: bool) -> bool:
        """
        The listener's C{response} arrived (only while not L{responded}).

        @param streamed: whether the body comes frame by frame over a rendezvous (else as one
            control-channel message).
        @return: whether this exchange wants the body message that follows (if C{response.body}).
        """
        self._cancel_response_timer()
        self.upload_resumed()  # answering: a held upload ends with the answer, not with a 504
        self._drop_ticket(response_arrived=True)
        if streamed:
            self._untrack()
        status = response.status_code
        if status < 200:
            self.fail(
                RelayError(ErrorKind.BAD_GATEWAY, f"The listener answered with the interim status {status}")
            )
            return False
        try:
            head = response_head(response.response_headers, via=f"1.1 {self.relay.via_host(self.request)}")
        except HeaderError as e:
            self.fail(RelayError(ErrorKind.BAD_GATEWAY, f"The listener's response is invalid: {e}"))
            return False
        reason = reason_phrase(status, response.status_description)
        size = oversized_head(reason, head.headers)
        if size is not None:  # senders would refuse it (Node.js takes 16 KiB): the relay's 502 instead
            self.fail(
                RelayError(
                    ErrorKind.BAD_GATEWAY,
                    f"The listener's response head of {size} bytes exceeds the relay's {MAX_SENDER_HEAD} bytes",
                )
            )
            return False
        self.state = State.RESPONDING
        self._status = status
        request = self.request
        request.setResponseCode(status, reason.encode("ascii"))
        request.drop_default_fields()  # twisted.web's Connection stays; its Server and Date do not
        headers = request.responseHeaders
        request.defaultContentType = None
        request.add_fields(head.headers)
        self._forward_body = not body_forbidden(self.message.method, status)
        if not self._forward_body:
            if head.content_length is not None and status != 204:
                headers.setRawHeaders(b"content-length", [b"%d" % head.content_length])
        else:
            self._expected = head.content_length
            if streamed and head.content_length is not None:
                headers.setRawHeaders(b"content-length", [b"%d" % head.content_length])
        if not response.body:
            self._whole_body(b"")
            return False
        if streamed:
            if not request._disconnected:
                request.write(b"")  # the status line and headers go out now
            if not self._forward_body:
                # HEAD, 204, 304: the sender's answer is whole; the body only has to be drained from the
                # rendezvous (hyco-https sends a HEAD answer's body as for a GET) before it carries more.
                self._finish_sender()
            elif self.rendezvous is not None:
                self._producer = DownloadProducer(self, self.rendezvous.transport)
                request.registerProducer(self._producer, True)
                channel = self.sender_channel
                if getattr(channel, "writing_paused", False):
                    # The sender is still draining an earlier answer; twisted only tells new producers
                    # about the next time its buffer fills.
                    self._producer.pauseProducing()
            self._arm_idle()
        return True

    def response_data(self, data: bytes) -> None:
        """A piece of a streamed body."""
        if self.state is not State.RESPONDING:
            return
        self._arm_idle()
        if not self._forward_body or not data:
            return
        self.sent_bytes += len(data)
        if self._expected is not None and self.sent_bytes > self._expected:
            self._abort(f"The listener sent more than its Content-Length of {self._expected} bytes")
            return
        self.request.write(data)

    def response_end(self) -> None:
        """The streamed body is complete."""
        if self.state is not State.RESPONDING:
            return
        if self._forward_body and self._expected is not None and self.sent_bytes != self._expected:
            self._abort(
                f"The listener's body ended after {self.sent_bytes} of its {self._expected} announced bytes"
            )
            return
        self._complete(None)

    def response_body(self, payload: bytes) -> None:
        """The whole body, as one control-channel message."""
        if self.state is State.RESPONDING:
            self._whole_body(payload)

    def _whole_body(self, body: bytes) -> None:
        """
        Complete the response with a body that came whole, unless it belies its Content-Length.

        The head is still held then, so the sender gets a 502 rather than a body passed off as complete
        with the field rewritten (a streamed body that does this is cut off: L{response_end}).
        """
        expected = self._expected
        if expected is not None and expected != len(body):
            self.fail(
                RelayError(
                    ErrorKind.BAD_GATEWAY,
                    f"The listener's body has {len(body)} bytes, not the {expected} of its Content-Length",
                )
            )
            return
        self._complete(body)

    def _complete(self, whole_body: bytes | None) -> None:
        """
        The response is complete.

        @param whole_body: the body when it came in one piece (C{b""}: none), or C{None} when it was
            streamed.
        """
        request = self.request
        self.state = State.DONE
        self._stop_timers()
        self._unregister_producer()
        self._stop_upload()
        self._untrack()
        if whole_body and self._forward_body:
            self.sent_bytes = len(whole_body)
        self.relay.done(self)
        role = self.rendezvous
        if role is not None:
            # Kept for the sender's next request, unless the answer came before the upload ended: the
            # body message can then not be completed on this socket.
            role.exchange_done(self, reusable=self._request_sent)
        if self._sender_done:
            return
        self._log_access()
        if not request._disconnected:
            if whole_body is not None and self._forward_body:
                request.write_whole(whole_body)
            request.finish()

    def _finish_sender(self) -> None:
        """The sender's answer is whole before the listener's is (a body it must not get is drained)."""
        self._sender_done = True
        self._log_access()
        if not self.request._disconnected:
            self.request.finish()

    def _log_access(self) -> None:
        """The request's one access line (it replaces twisted.web's)."""
        message = self.message
        method, target, client = message.method, message.request_target[:200], message.remote_endpoint.address
        # An f-string: twistd formats each field of a format string with string.Formatter, which made this
        # line 10 % of the gateway's CPU per request. The fields stay in the event for other observers.
        self.log.info(
            "{access}",
            access=f"{method} {target} -> {self._status} ({self.sent_bytes} bytes) request {self.id} from {client}",
            method=method,
            target=target,
            status=self._status,
            size=self.sent_bytes,
            request_id=self.id,
            client=client,
        )
        self.request.relay_logged = True  # type: ignore[attr-defined]  # this line replaces the access log's

    # -- failures ------------------------------------------------------------------------------------

    def fail(self, error: RelayError) -> None:
        """End the exchange: answer the sender with C{error} if nothing was sent yet, else abort it."""
        if self.state is State.DONE:
            return
        request = self.request
        # A head held for its body (a control-channel answer) has not been sent: the error can still be.
        head_held = self.state is State.RESPONDING and not request.startedWriting
        responding, self.state = self.state is State.RESPONDING and not head_held, State.DONE
        self._cleanup()
        if responding:
            self._abort_sender(error.message)
        elif not request._disconnected:
            if head_held:
                request.clear_fields()
            body = ErrorResource(error).render(request)
            if request.method != b"HEAD":
                request.setHeader(b"content-length", b"%d" % len(body))
                request.write(body)
            request.finish()
        self._release_rendezvous(error.kind.close_code, error.message)

    def _abort(self, reason: str) -> None:
        self.state = State.DONE
        self._cleanup()
        self._abort_sender(reason)
        self._release_rendezvous(CloseCode.PROTOCOL_ERROR, reason)

    def _abort_sender(self, reason: str) -> None:
        if self._sender_done:  # its answer was whole already: only the listener's unread body is cut
            self.log.info(
                "request {request_id}: the rest of a body the sender does not get was cut: {reason}",
                request_id=self.id,
                reason=reason,
            )
            return
        self.log.warn(
            "aborting the sender of request {request_id} after {size} bytes of its response: {reason}",
            request_id=self.id,
            size=self.sent_bytes,
            reason=reason,
        )
        channel = self.sender_channel
        if channel is not None and channel.transport is not None:
            channel.transport.abortConnection()

    def listener_gone(self) -> None:
        """The listener's control channel closed while this exchange depended on it."""
        self.fail(RelayError(ErrorKind.BAD_GATEWAY, "The listener went away before responding"))

    def _request_over(self, failure: Failure | None) -> None:
        if failure is not None:
            self._sender_gone(failure)

    def _sender_gone(self, failure: Failure) -> None:
        if self.state is State.DONE:
            return
        self.log.info("the sender of request {request_id} went away", request_id=self.id)
        self.state = State.DONE
        self._cleanup()
        self._release_rendezvous(CloseCode.NORMAL, "The sender went away")

    def _cleanup(self) -> None:
        self._stop_timers()
        self._drop_ticket(response_arrived=False)
        self._untrack()
        self._unregister_producer()
        self._stop_upload()
        if self.request.body is not None and not self.request.body.complete:
            self.request.body.discard()
        self.relay.done(self)
