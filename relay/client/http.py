"""
Serving HTTP through a hybrid connection listener, as hyco-https's relayed server and .NET's C{RequestHandler} do.

An application is a function (plain or C{async}) of a L{RelayedRequest} and a L{RelayedResponse}::

    async def app(request: RelayedRequest, response: RelayedResponse) -> None:
        body = await request.body.read_all(limit=1024 * 1024)
        response.headers["Content-Type"] = "text/plain"
        await response.write(b"got %d bytes for %s" % (len(body), request.path.encode()))

    listener = HybridConnectionListener(connection_string, "hyco", reactor=reactor)
    HttpListener(listener, app)
    await listener.open()

The response is finished when the application returns (or earlier with L{RelayedResponse.finish}); an
exception before anything was sent becomes a 500.

How the bytes travel is the protocol's business and handled here: small requests arrive whole on the
control channel, others over a rendezvous WebSocket that may carry more requests of the same sender
connection. At most C{max_fetch_dials} such rendezvous are being opened at once; at that limit the
listener's control channel is not read until one is open (L{relay.client.flow}), so a relay announcing
large requests faster than they can be fetched keeps them itself. The request the application reads is
in L{relay.client.httprequest}, the response it writes (and how that goes back) in
L{relay.client.httpresponse}.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.python.failure import Failure
from zope.interface import implementer

from relay.client.address import split_request_target
from relay.client.commands import RequestCommand, parse_command, remote_endpoint
from relay.client.errors import ConnectionClosedError
from relay.client.flow import FETCH_DIALS, MAX_FETCH_DIALS, DialSlots
from relay.client.headers import Headers
from relay.client.httprequest import RelayedRequest, RequestBody
from relay.client.httpresponse import RelayedResponse, _SocketSink
from relay.client.options import MIB, WebSocketOptions
from relay.client.protocol import IStreamingReceiver, RelayClientProtocol, open_websocket
from relay.hybrid.messages import ControlMessageError
from relay.logger import Logger
from relay.writes import WriteGate

_MAX_REQUEST_HEAD = 1 * MIB


HttpApp = Callable[[RelayedRequest, RelayedResponse], "Awaitable[None] | None"]
"""An HTTP application: gets each request and its response, plain or C{async}."""

QuickLane = Callable[[RequestCommand, "bytes | None", "HttpListener"], bool]
"""An application's own path for the common case: takes a whole request, or declines it (C{False})."""


@implementer(IStreamingReceiver)
class _RequestChannel:
    """A rendezvous the relay sends requests on: C{request} text, then the body as one streamed message."""

    log = Logger()

    def __init__(self, server: HttpListener, protocol: RelayClientProtocol) -> None:
        self._server = server
        self._protocol = protocol
        self._gate = WriteGate(ConnectionClosedError)
        protocol.registerProducer(self._gate, True)
        self._text: list[bytes] | None = None
        self._text_size = 0
        self._binary = False
        self._announced: RequestBody | None = None
        self._announced_id = ""  # the request whose body is announced
        self._body: RequestBody | None = None
        self._stray: int | None = None  # bytes of a binary message no request announced, while it comes
        # Every response under way here: the relay may send a request before the last one is answered
        # (e.g. when a text message comes where an announced body was due), and each must hear the close.
        self._responses: set[RelayedResponse] = set()
        self.closed = False
        self.sink = _SocketSink(protocol, self._gate, close_after=False)

    def message_begin(self, is_binary: bool) -> None:
        self._binary = is_binary
        if is_binary:
            self._body, self._announced = self._announced, None
            if self._body is None:
                self._stray = 0
            return
        if self._announced is not None:
            # The relay sends a body right after its request: a text message instead means it never comes.
            # As on the control channel, the request goes on without one; left open, its application
            # would wait for good (and hold one of the listener's request slots).
            announced, self._announced = self._announced, None
            self.log.warn(
                "request {request_id} announced a body but a text message followed on its rendezvous",
                request_id=self._announced_id,
            )
            announced.end()
        self._text, self._text_size = [], 0

    def message_data(self, payload: bytes) -> None:
        if self._binary:
            if self._body is not None:
                self._body.feed(payload)
            elif self._stray is not None:
                self._stray += len(payload)
            return
        if self._text is not None:
            self._text_size += len(payload)
            if self._text_size > _MAX_REQUEST_HEAD:
                self.log.warn(
                    "the relay sent a request message larger than {limit} bytes", limit=_MAX_REQUEST_HEAD
                )
                self._text = None
                self._protocol.dropConnection(abort=True)
                return
            self._text.append(payload)

    def message_end(self) -> None:
        if self._binary:
            body, self._body = self._body, None
            if body is not None:
                body.end()
            elif self._stray is not None:
                # As on the control channel: ignored (no request is waiting for it), but not silently.
                size, self._stray = self._stray, None
                self.log.info("ignoring a binary message ({size} bytes) on a request rendezvous", size=size)
            return
        if self._text is None:
            return
        payload, self._text = b"".join(self._text), None
        try:
            command = parse_command(payload)
        except ControlMessageError as e:
            self.log.warn("ignoring a malformed message on a request rendezvous: {error}", error=str(e))
            return
        if not isinstance(command, RequestCommand) or "method" not in command.fields:
            self.log.info("ignoring a message that is no request on a request rendezvous")
            return
        if self._server.closed:  # the relay reuses a rendezvous for its sender's next request
            self.log.info("request {request_id} not served: the listener closed", request_id=command.id)
            self.close_when_idle()
            return
        transport: Any = self._protocol.transport
        body = RequestBody(
            present=command.has_body, pause=transport.pauseProducing, resume=transport.resumeProducing
        )
        if command.has_body:
            self._announced, self._announced_id = body, command.id
        else:
            body.end()
        response = RelayedResponse(command.id, reactor=self._server.reactor, sink=self.sink)
        response.on_settled = lambda: self._settled(response)
        self._responses.add(response)
        self._server.handle(command, body, response)

    def message_received(self, payload: bytes, is_binary: bool) -> None:
        """Unused: this receiver streams."""

    def close_when_idle(self) -> None:
        """The listener closed: close the rendezvous (1000) now, or once the responses under way are done."""
        if not self._responses and not self.closed:
            self._protocol.sendClose(1000)

    def _settled(self, response: RelayedResponse) -> None:
        self._responses.discard(response)
        if self._server.closed:
            self.close_when_idle()

    def connection_closed(self, was_clean: bool, code: int | None, reason: str | None) -> None:
        self.closed = True
        self.sink.closed = True
        self._server.forget(self)
        self._gate.stop()
        for body in (self._body, self._announced):
            if body is not None:
                body.cut(ConnectionClosedError("the rendezvous closed in the middle of the request body"))
        for response in list(self._responses):
            response.socket_closed()


class HttpListener:
    """
    Serve the HTTP requests relayed to a listener with an application.

    @ivar listener: the hybrid connection listener (its C{request_handler} is taken over).
    @ivar app: the application.
    @ivar max_concurrent: requests handled at once; more are answered 503 at once (a request announced
        for a rendezvous is fetched first, to be answered on it).
    @ivar on_response: called after each response with the request, the response and the seconds it
        took (for access logs).

    Closing the listener closes the rendezvous sockets requests came on: idle ones at once, ones with a
    response under way once it is done; a request the relay sends on one after that is not served.
    """

    log = Logger()

    def __init__(
        self,
        listener: Any,
        app: HttpApp,
        *,
        reactor: Any = None,
        options: WebSocketOptions | None = None,
        max_concurrent: int = 256,
        max_fetch_dials: int = MAX_FETCH_DIALS,
        on_response: Callable[[RelayedRequest, RelayedResponse, float], object] | None = None,
        quick_lane: QuickLane | None = None,
    ) -> None:
        """
        Take over C{listener}'s requests.

        @param quick_lane: the application's own path for the common case (C{relay expose}'s,
            L{relay.exposequick}): offered every request that came whole on the control channel while
            the listener is not busy; what it declines takes the general path.

        @param max_fetch_dials: rendezvous opened at once to fetch requests too large for the control
            channel; at this limit the listener's control channel is not read until one is open (or
            failed), and fetches already read wait for their turn.
        """
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.listener = listener
        self.app = app
        self.reactor = reactor
        self.max_concurrent = max_concurrent
        self.on_response = on_response
        self.active = 0
        self._fetches = DialSlots(max_fetch_dials, self._fetches_full)
        self._options = options or getattr(listener, "options", None) or WebSocketOptions()
        self._quick = quick_lane
        self._channels: set[_RequestChannel] = set()
        listener.request_handler = self._request
        listener.close_handler = self._listener_closed

    @property
    def closed(self) -> bool:
        """Whether the listener was closed: no request is fetched or served any more."""
        return bool(getattr(self.listener, "closed", False))

    def _listener_closed(self) -> None:
        for channel in list(self._channels):
            channel.close_when_idle()

    def forget(self, channel: _RequestChannel) -> None:
        """A request rendezvous is gone."""
        self._channels.discard(channel)

    def _request(self, command: RequestCommand, body: bytes | None) -> None:
        if "method" not in command.fields:
            self._spawn(self._fetches.run(self._fetch, command))
            return
        control = self.listener.control_channel
        quick = self._quick
        if quick is not None and self.active < self.max_concurrent and quick(command, body, self):
            return
        self.general(command, body, control)

    def general(
        self,
        command: RequestCommand,
        body: bytes | None,
        control: Any,
        app: HttpApp | None = None,
        started: float | None = None,
    ) -> None:
        """
        Serve a request that came whole on C{control} on the general path.

        @param app: the application to run instead of the listener's (a quick lane handing a request
            over continues it so); it runs even when the listener is busy, as the request was admitted.
        @param started: when the request arrived (a quick lane handing it over took it then), for the
            duration given to C{on_response}; now by default.
        """
        response = RelayedResponse(
            command.id,
            reactor=self.reactor,
            control=control,
            open_rendezvous=lambda: Deferred.fromCoroutine(self._response_rendezvous(command.address)),
        )
        self.handle(command, RequestBody.whole(body if command.has_body else None), response, app, started)

    async def _fetch(self, command: RequestCommand) -> None:
        def receiver(protocol: RelayClientProtocol) -> _RequestChannel:
            channel = _RequestChannel(self, protocol)
            self._channels.add(channel)
            return channel

        if self.closed:  # it waited for a slot while the listener closed
            self.log.info("request {request_id} not fetched: the listener closed", request_id=command.id)
            return

        try:
            channel = await open_websocket(
                self.reactor, command.address, options=self._options, make_receiver=receiver
            )
        except CancelledError:
            raise
        except Exception as e:
            self.log.warn(
                "could not fetch request {request_id}: {error}", request_id=command.id, error=str(e)
            )
            return
        if self.closed:  # the listener closed while this rendezvous was being opened
            cast(_RequestChannel, channel).close_when_idle()

    def _fetches_full(self, full: bool) -> None:
        if full:
            self.listener.hold_reading(FETCH_DIALS)
        else:
            self.listener.release_reading(FETCH_DIALS)

    async def _response_rendezvous(self, address: str) -> _SocketSink:
        channel = cast(
            _ResponseChannel,
            await open_websocket(
                self.reactor, address, options=self._options, make_receiver=_ResponseChannel
            ),
        )
        return channel.sink

    def handle(
        self,
        command: RequestCommand,
        body: RequestBody,
        response: RelayedResponse,
        app: HttpApp | None = None,
        started: float | None = None,
    ) -> None:
        """Run the application (or C{app}, which is never refused as busy) for one request."""
        fields = command.fields
        target = str(fields.get("requestTarget") or "/")
        path, query = split_request_target(target, self.listener.address.path)
        headers = fields.get("requestHeaders")
        request = RelayedRequest(
            id=command.id,
            method=str(fields.get("method")),
            target=target,
            path=path,
            query=query,
            headers=Headers(
                {str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {}
            ),
            remote_endpoint=remote_endpoint(fields.get("remoteEndpoint")),
            body=body,
        )
        if app is None and self.active >= self.max_concurrent:
            text_answer(response, 503, f"Listener busy. TrackingId:{command.id}").addErrback(lambda _: None)
            body.discard()
            return
        self._spawn(self._run(request, response, app or self.app, started))

    async def _run(
        self, request: RelayedRequest, response: RelayedResponse, app: HttpApp, started: float | None
    ) -> None:
        self.active += 1
        if started is None:
            started = self.reactor.seconds()
        try:
            result = app(request, response)
            if isinstance(result, Deferred) or inspect.iscoroutine(result):
                await result  # in this task: one Deferred-driven coroutine per request, not two
            elif inspect.isawaitable(result):
                await ensureDeferred(cast(Any, result))
            if not response.finished:
                await response.finish()
        except ConnectionClosedError as e:
            if response.finished:  # the exchange itself is lost (the relay gave up): nobody to answer
                self.log.info(
                    "request {request_id} ended early: {error}", request_id=request.id, error=str(e)
                )
                response.abort(e)
            else:  # from a connection of the application's own
                self._failed(request, response)
        except Exception:
            # A CancelledError too: nothing cancels this task, so it is the application's own work that
            # was cancelled, and its sender must not wait for the relay's request_timeout.
            self._failed(request, response)
        finally:
            self.active -= 1
            # Nobody reads the rest of the body now: unread, it would keep its socket paused for good.
            request.body.discard()
        if self.on_response is not None:
            self.on_response(request, response, self.reactor.seconds() - started)

    def _failed(self, request: RelayedRequest, response: RelayedResponse) -> None:
        """The application raised: a 500 while nothing has left, else the response is cut off."""
        self.log.failure("the application failed on request {request_id}", request_id=request.id)
        if response.reset():  # nothing left yet: what the application wrote is dropped
            done = text_answer(response, 500, f"The listener failed. TrackingId:{request.id}")
            done.addErrback(lambda _: None)
        else:
            response.abort()

    def _spawn(self, coroutine: Any) -> None:
        task: Deferred[Any] = Deferred.fromCoroutine(coroutine)
        task.addErrback(self._task_failed)

    def _task_failed(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            self.log.failure("HTTP task failed", failure)


def text_answer(response: RelayedResponse, status: int, text: str) -> Deferred[None]:
    """
    Answer with one line of text, its length given.

    Without a length the relay streams an answer chunked, and it ends such an answer to an upload still
    under way only after the upload (or its linger time, then a reset).
    """
    body = f"{text}\n".encode()
    response.status_code = status
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    response.headers["Content-Length"] = str(len(body))
    return response.finish(body)


@implementer(IStreamingReceiver)
class _ResponseChannel:
    """A rendezvous opened only to send one large response; the relay sends nothing on it."""

    def __init__(self, protocol: RelayClientProtocol) -> None:
        gate = WriteGate(ConnectionClosedError)
        protocol.registerProducer(gate, True)
        self.sink = _SocketSink(protocol, gate, close_after=True)

    def message_begin(self, is_binary: bool) -> None:
        """Nothing is expected here."""

    def message_data(self, payload: bytes) -> None:
        """Nothing is expected here."""

    def message_end(self) -> None:
        """Nothing is expected here."""

    def message_received(self, payload: bytes, is_binary: bool) -> None:
        """Nothing is expected here."""

    def connection_closed(self, was_clean: bool, code: int | None, reason: str | None) -> None:
        """The socket is gone: writes fail from now on, and an unfinished response fails at once."""
        self.sink.socket_closed()
