"""
HTTP relaying, transport side: a sender's plain HTTP request on a hybrid connection's path, answered by a listener.

An L{Exchange} follows one request. Small requests go on the listener's control channel (C{request} JSON
and one binary body message); the answer comes back there (L{ControlResponses}) or, when large, over a
rendezvous the listener opens to the request's address. Other requests are announced with a
rendezvous-only C{request}; the listener opens a rendezvous (L{RendezvousRole}), receives the request
and its body streamed as one fragmented binary message, and answers on the same socket, which is then
kept for the sender connection's later requests until it idles out.

Bodies stream in both directions with back-pressure: a listener socket that cannot take more pauses
reading from the sender, and a sender that reads slowly pauses reading from the listener's rendezvous.
Nothing holds more than a socket buffer and one read per direction. Control-channel bodies are single
messages bounded by the control channel's message limit.

Failures answer the sender with the relay's own status (no C{Via}) and a body naming the cause and the
tracking id, while nothing was sent yet; once the response has started, the sender's connection is
aborted, so a cut-off body can never pass for a complete one.
"""

from __future__ import annotations

from dataclasses import replace
from enum import Enum
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET
from typing_extensions import override
from zope.interface import implementer

from relay.auth import Rights
from relay.entities import EntityMatch, HybridConnectionSettings, Namespace
from relay.errors import CloseCode, ErrorKind, RelayError, close_reason, new_tracking_id
from relay.hybrid.addressing import AddressError, RequestTarget, split_target
from relay.hybrid.control import ControlChannel
from relay.hybrid.dispatch import HttpDispatcher, RequestWait, fits_control_channel
from relay.hybrid.headers import (
    AUTHORIZATION,
    TOKEN_HEADER,
    HeaderError,
    body_forbidden,
    forward_request_headers,
    reason_phrase,
    response_head,
)
from relay.hybrid.messages import (
    ControlMessageError,
    HttpRequest,
    HttpResponse,
    RemoteEndpoint,
    decode_object,
    parse_response,
)
from relay.hybrid.rendezvous import Ticket
from relay.hybrid.router import Admission, HybridConnectionRouter
from relay.resource import ErrorResource, request_host
from relay.web import BodyProducer, IBodyConsumer, RelayHTTPChannel, RelayRequest

MAX_RESPONSE_HEAD = 1024 * 1024
"""Largest C{response} text message accepted on a rendezvous (bytes)."""


class State(Enum):
    """Where an exchange is."""

    WAITING = "waiting for the response"
    RESPONDING = "relaying the response"
    DONE = "done"


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _remote(request: IRequest) -> RemoteEndpoint:
    peer = request.getClientAddress()
    return RemoteEndpoint(address=str(getattr(peer, "host", "")), port=int(getattr(peer, "port", 0) or 0))


@implementer(IPushProducer)
class _DownloadProducer:
    """Registered on the sender's request: its full write buffer pauses reading the listener's rendezvous."""

    def __init__(self, exchange: Exchange, transport: Any) -> None:
        self._exchange = exchange
        self._transport = transport

    def pauseProducing(self) -> None:
        """The sender reads slowly."""
        self._transport.pauseProducing()
        self._exchange.download_paused()

    def resumeProducing(self) -> None:
        """The sender caught up."""
        self._transport.resumeProducing()
        self._exchange.download_resumed()

    def stopProducing(self) -> None:
        """The sender is gone; the exchange hears about it from the request."""


@implementer(IBodyConsumer)
class _Upload:
    """Streams a sender's request body into a rendezvous as the fragments of one binary message."""

    def __init__(self, exchange: Exchange, role: RendezvousRole) -> None:
        self._exchange = exchange
        self._protocol = role.protocol

    def body_data(self, data: bytes) -> None:
        """Forward one piece as one frame."""
        self._protocol.sendMessageFrame(data)

    def body_end(self) -> None:
        """Close the message."""
        self._protocol.endMessage()
        self._exchange.request_delivered()

    def body_failed(self, reason: Failure) -> None:
        """The sender went away; the exchange learns it from its request."""


class Exchange:
    """
    One relayed request: the sender's twisted.web request, the listener side it went to, and the timers.

    @ivar id: the request id (also the tracking id the sender sees in errors).
    @ivar state: where the exchange is.
    @ivar rendezvous: the rendezvous carrying the request or the response, once there is one.
    """

    log = Logger()

    def __init__(
        self,
        relay: HttpRelay,
        request: RelayRequest,
        admission: Admission,
        message: HttpRequest,
        body: bytes | None,
    ) -> None:
        self.relay = relay
        self.request = request
        self.sender_channel: Any = request.channel  # twisted drops request.channel once finished
        self.admission = admission
        self.message = message
        self.id = message.id
        self.state = State.WAITING
        self.rendezvous: RendezvousRole | None = None
        self.sent_bytes = 0
        self._body = body
        self._settings: HybridConnectionSettings = admission.settings
        self._channel: ControlChannel | None = None
        self._ticket: Ticket | None = None
        self._ticket_for_request = False
        self._uploading = False
        self._request_sent = False
        self._forward_body = True
        self._expected: int | None = None
        self._producer: _DownloadProducer | None = None
        self._response_timer: IDelayedCall | None = None
        self._idle_timer: IDelayedCall | None = None
        self._download_paused = False
        self._status = 0
        request.notifyFinish().addErrback(self._sender_gone)

    @property
    def clock(self) -> IReactorTime:
        """The relay's clock."""
        return self.relay.clock

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
            role.assign(self)
            return
        dispatcher = self.relay.dispatcher
        if self._body is not None:
            payload = self.message.encode()
            if fits_control_channel(len(payload), len(self._body)):
                channel, ticket = dispatcher.send_small(
                    self.admission,
                    payload,
                    self._body,
                    self.id,
                    self,
                    response_window=self._settings.request_timeout + dispatcher.rendezvous_timeout,
                )
                self._track(channel, ticket, for_request=False)
                ticket.outcome.addCallbacks(self._response_rendezvous, self._response_address_expired)
                self.request_delivered()
                return
        channel, ticket = dispatcher.announce(self.admission, self.id, self.message.address, self)
        self._track(channel, ticket, for_request=True)
        ticket.outcome.addCallbacks(self._fetched, self._not_fetched)

    def _track(self, channel: Any, ticket: Ticket, *, for_request: bool) -> None:
        self._channel = channel
        self._ticket = ticket
        self._ticket_for_request = for_request
        self.relay.responses(channel).track(self)

    def _untrack(self) -> None:
        if self._channel is not None:
            self.relay.responses(self._channel).untrack(self)
            self._channel = None

    def _drop_ticket(self, *, response_arrived: bool) -> None:
        # A small request's address stays claimable after a failure: hyco-https opens it for a late large
        # response without an error handler, and a refused upgrade would crash it. The upgrade is accepted
        # and closed instead, until the ticket expires.
        if not (response_arrived or self._ticket_for_request):
            return
        ticket, self._ticket = self._ticket, None
        if ticket is not None and not ticket.done:
            self.relay.router.rendezvous.cancel(ticket)

    def _fetched(self, role: RendezvousRole) -> None:
        self._ticket = None
        if self.state is not State.WAITING:
            role.close(CloseCode.NORMAL, "The sender went away")
            return
        self._untrack()
        role.assign(self)

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
        role.exchange = self

    def _response_address_expired(self, failure: Failure) -> None:
        # The response timer reports the timeout; the address just stops being claimable.
        self._ticket = None

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
            role.transport.registerProducer(BodyProducer(stream), True)
            self._uploading = True
            stream.attach(_Upload(self, role))
            return
        if has_body and self._body:
            protocol.sendMessage(self._body, isBinary=True)
        self.request_delivered()

    def request_delivered(self) -> None:
        """The whole request reached the listener's socket: its response is now due."""
        self._request_sent = True
        self._stop_upload()
        if self.state is State.WAITING and self._response_timer is None:
            timeout = self._settings.request_timeout
            self._response_timer = self.clock.callLater(timeout, self._response_timed_out, timeout)

    def _stop_upload(self) -> None:
        if self._uploading:
            self._uploading = False
            role = self.rendezvous
            if role is not None and role.transport is not None:
                role.transport.unregisterProducer()

    def _response_timed_out(self, timeout: float) -> None:
        self._response_timer = None
        self.fail(RelayError(ErrorKind.LISTENER_TIMEOUT, f"The listener did not respond within {timeout:g}s"))

    # -- receiving the response ----------------------------------------------------------------------

    def response_started(self, response: HttpResponse, *, streamed: bool) -> bool:
        """
        The listener's C{response} arrived.

        @param streamed: whether the body comes frame by frame over a rendezvous (else as one
            control-channel message).
        @return: whether this exchange wants the body message that follows (if C{response.body}).
        """
        if self.state is not State.WAITING:
            self.log.info(
                "late response for request {request_id} ignored ({state})",
                request_id=self.id,
                state=self.state.value,
            )
            return False
        self._cancel_response_timer()
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
        self.state = State.RESPONDING
        self._status = status
        request = self.request
        request.setResponseCode(status, reason_phrase(status, response.status_description).encode("ascii"))
        headers = request.responseHeaders
        headers.removeHeader(b"server")
        headers.removeHeader(b"date")
        request.defaultContentType = None
        for name, value in head.headers:
            headers.addRawHeader(name.encode("ascii"), value.encode("utf-8"))
        self._forward_body = not body_forbidden(self.message.method, status)
        if not self._forward_body:
            if head.content_length is not None and status != 204:
                headers.setRawHeaders(b"content-length", [b"%d" % head.content_length])
        elif streamed and head.content_length is not None:
            headers.setRawHeaders(b"content-length", [b"%d" % head.content_length])
            self._expected = head.content_length
        if not response.body:
            self._complete(b"")
            return False
        if streamed:
            if not request._disconnected:
                request.write(b"")  # the status line and headers go out now
            if self._forward_body and self.rendezvous is not None:
                self._producer = _DownloadProducer(self, self.rendezvous.transport)
                request.registerProducer(self._producer, True)
                channel = self.sender_channel
                if isinstance(channel, RelayHTTPChannel) and channel.writing_paused:
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
            self._complete(payload)

    def _complete(self, whole_body: bytes | None) -> None:
        """
        The response is complete.

        @param whole_body: the body when it came in one piece (C{b""}: none), or C{None} when it was
            streamed.
        """
        request = self.request
        if whole_body is not None and self._forward_body:
            request.setHeader(b"content-length", b"%d" % len(whole_body))
        self.state = State.DONE
        self._stop_timers()
        self._unregister_producer()
        self._stop_upload()
        self._untrack()
        self.relay.done(self)
        role = self.rendezvous
        if role is not None:
            # Kept for the sender's next request, unless the answer came before the upload ended: the
            # body message can then not be completed on this socket.
            role.exchange_done(self, reusable=self._request_sent)
        if whole_body and self._forward_body:
            self.sent_bytes = len(whole_body)
        self.log.info(
            "{method} {target} -> {status} ({size} bytes) request {request_id} from {client}",
            method=self.message.method,
            target=self.message.request_target[:200],
            status=self._status,
            size=self.sent_bytes,
            request_id=self.id,
            client=self.message.remote_endpoint.address,
        )
        request.relay_logged = True  # type: ignore[attr-defined]  # this line replaces the access log's
        if not request._disconnected:
            if whole_body and self._forward_body:
                request.write(whole_body)
            request.finish()

    # -- failures ------------------------------------------------------------------------------------

    def fail(self, error: RelayError) -> None:
        """End the exchange: answer the sender with C{error} if nothing was sent yet, else abort it."""
        if self.state is State.DONE:
            return
        responding = self.state is State.RESPONDING
        self.state = State.DONE
        self._cleanup()
        request = self.request
        if responding:
            self._abort_sender(error.message)
        elif not request._disconnected:
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
        self.log.warn(
            "aborting the sender of request {request_id} after {size} bytes of its response: {reason}",
            request_id=self.id,
            size=self.sent_bytes,
            reason=reason,
        )
        channel = self.sender_channel
        if channel is not None and channel.transport is not None:
            channel.transport.abortConnection()

    def _release_rendezvous(self, code: int, reason: str) -> None:
        role, self.rendezvous = self.rendezvous, None
        if role is not None and role.exchange is self:
            role.exchange = None
            role.close(code, reason)

    def listener_gone(self) -> None:
        """The listener's control channel closed while this exchange depended on it."""
        self.fail(RelayError(ErrorKind.BAD_GATEWAY, "The listener went away before responding"))

    def rendezvous_closed(self, code: int | None, reason: str | None) -> None:
        """The rendezvous carrying this exchange closed."""
        self.rendezvous = None
        if self.state is State.DONE:
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
        body = self.request.body
        if body is not None and not body.complete:
            body.discard()
        self.relay.done(self)

    # -- timers and back-pressure ----------------------------------------------------------------------

    def _cancel_response_timer(self) -> None:
        if self._response_timer is not None and self._response_timer.active():
            self._response_timer.cancel()
        self._response_timer = None

    def _arm_idle(self) -> None:
        if self._download_paused:
            return
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.reset(self._settings.request_timeout)
        elif self.state is State.RESPONDING:
            self._idle_timer = self.clock.callLater(self._settings.request_timeout, self._idle_expired)

    def _disarm_idle(self) -> None:
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.cancel()
        self._idle_timer = None

    def _idle_expired(self) -> None:
        self._idle_timer = None
        self._abort(
            f"The listener sent nothing for {self._settings.request_timeout:g}s in the middle of the body"
        )

    def _stop_timers(self) -> None:
        self._cancel_response_timer()
        self._disarm_idle()

    def download_paused(self) -> None:
        """The sender's buffer is full: waiting on it is no stall of the listener."""
        self._download_paused = True
        self._disarm_idle()

    def download_resumed(self) -> None:
        """The sender drained its buffer."""
        self._download_paused = False
        self._arm_idle()

    def _unregister_producer(self) -> None:
        if self._producer is not None:
            self._producer = None
            if not self.request._disconnected:
                self.request.unregisterProducer()


class RendezvousRole:
    """
    A listener's C{sb-hc-action=request} WebSocket: it fetches requests and carries responses.

    @ivar for_request: opened to fetch a request, so it may carry the sender connection's later requests;
        C{False} for a socket opened only to deliver a large response (never given a request).
    @ivar exchange: the exchange using the socket now, or C{None} while idle.
    """

    log = Logger()

    def __init__(self, relay: HttpRelay, protocol: Any, ticket: Ticket) -> None:
        self.relay = relay
        self.protocol = protocol
        self.ticket = ticket
        wait: RequestWait = ticket.context
        self.for_request = wait.for_request
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
        if self.for_request and reusable and self.is_open and isinstance(channel, RelayHTTPChannel):
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
                self.log.info(
                    "ignored a rendezvous message with keys {keys}", keys=[k[:40] for k in list(obj)[:5]]
                )
                return
            response = parse_response(obj["response"])
        except ControlMessageError as e:
            self._protocol_error(str(e))
            return
        exchange = self.exchange
        if exchange is None or response.request_id != exchange.id:
            self.log.info(
                "ignored a response for {request_id} on a rendezvous that does not carry it",
                request_id=response.request_id[:64],
            )
            return
        if exchange.response_started(response, streamed=True) and response.body:
            self._expect_body = exchange

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
        if not self._opened:
            if not self.ticket.outcome.called:
                self.ticket.outcome.errback(
                    RelayError(ErrorKind.BAD_GATEWAY, "The listener's rendezvous failed during its upgrade")
                )
            return
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.rendezvous_closed(code, reason)


class ControlResponses:
    """
    The HTTP side of one control channel: the requests sent on it and the responses coming back.

    A C{response} is matched by C{requestId} against the requests sent on this channel only; a body message
    belongs to the response right before it. Unknown ids are logged and their body dropped, and a binary
    message nobody announced (hyco-https sends one after C{"body": false}) is ignored.
    """

    log = Logger()

    def __init__(self, relay: HttpRelay, channel: ControlChannel) -> None:
        self.relay = relay
        self.channel = channel
        self.pending: dict[str, Exchange] = {}
        self._body_for: Exchange | None = None
        self._drop_body = False
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
        try:
            response = parse_response(body)
        except ControlMessageError as e:
            self.log.warn(
                "invalid response from listener {listener_id}: {error}",
                listener_id=channel.listener_id,
                error=str(e),
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
        if exchange is None or exchange.rendezvous is not None:
            self.log.info(
                "response for unknown request {request_id} from listener {listener_id} dropped",
                request_id=response.request_id[:64],
                listener_id=channel.listener_id,
            )
            self._drop_body = response.body
            return
        wanted = exchange.response_started(response, streamed=False)
        if response.body:
            if wanted:
                self._body_for = exchange
            else:
                self._drop_body = True

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
        self.relay.forget(channel)
        for exchange in list(self.pending.values()):
            exchange.listener_gone()
        self.pending.clear()


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
        """Start relaying, or refuse with the relay's error."""
        try:
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
    """

    log = Logger()

    def __init__(
        self,
        router: HybridConnectionRouter,
        clock: IReactorTime,
        *,
        rendezvous_timeout: float = 30.0,
        rendezvous_idle_timeout: float = 60.0,
    ) -> None:
        self.router = router
        self.clock = clock
        self.dispatcher = HttpDispatcher(router, rendezvous_timeout)
        self.rendezvous_idle_timeout = rendezvous_idle_timeout
        self.exchanges: set[Exchange] = set()
        self.roles: set[RendezvousRole] = set()
        self._responses: dict[ControlChannel, ControlResponses] = {}

    def resource(self, request: IRequest, namespace: Namespace, match: EntityMatch) -> IResource:
        """The resource factory registered for hybrid connections."""
        return RelayResource(self, namespace, match)

    def begin(self, request: RelayRequest, namespace: Namespace, match: EntityMatch) -> Exchange:
        """
        Admit a sender's request and send it to a listener.

        @raise RelayError: 400 (CONNECT, upgrades, bad target), 401/403 (token), 404 (HTTP disabled),
            502 (no listener).
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
        message = HttpRequest(
            address=self.dispatcher.address(admission, request_id),
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
            body=False,
        )
        body: bytes | None = None
        if request.body is None:
            content: Any = request.content
            content.seek(0)
            body = content.read()
            message = replace(message, body=bool(body))
        exchange = Exchange(self, request, admission, message, body)
        self.exchanges.add(exchange)
        try:
            exchange.start()
        except RelayError:
            self.exchanges.discard(exchange)
            exchange.state = State.DONE
            raise
        return exchange

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
        """Forget a finished exchange."""
        self.exchanges.discard(exchange)

    def responses(self, channel: ControlChannel) -> ControlResponses:
        """The HTTP state of a control channel, made on first use."""
        state = self._responses.get(channel)
        if state is None:
            state = self._responses[channel] = ControlResponses(self, channel)
        return state

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

    def request_rendezvous(self, protocol: Any, request: Any, target: RequestTarget) -> None:
        """
        The C{$hc} factory hook for C{sb-hc-action=request} upgrades: claim the address, install the role.

        @raise RelayError: 403 when the address is unknown, used or expired.
        """
        key = target.param("key") or target.param("id") or ""
        ticket = self.router.claim(key)
        protocol.tracking_id = ticket.connection_id
        protocol.autoPingInterval = 0
        protocol.http_role = RendezvousRole(self, protocol, ticket)

    def shutdown(self) -> None:
        """Fail requests in flight (503) and close rendezvous sockets (1001)."""
        for exchange in list(self.exchanges):
            exchange.fail(RelayError(ErrorKind.SHUTTING_DOWN, "Server shutting down"))
        for role in list(self.roles):
            role.close(CloseCode.GOING_AWAY, "Server shutting down")
