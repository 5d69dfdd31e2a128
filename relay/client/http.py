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
connection; request bodies are streamed with back-pressure (the socket stops being read while the
application lags behind). Responses are buffered up to 64 kB: a response that is complete by then goes
back on the control channel, anything larger or slower (2 s, as .NET does) streams over a rendezvous.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from relay.client.address import split_request_target
from relay.client.commands import RequestCommand, parse_command
from relay.client.connection import WriteGate
from relay.client.errors import ConnectionClosedError
from relay.client.headers import Headers
from relay.client.options import MIB, WebSocketOptions
from relay.client.protocol import IStreamingReceiver, RelayClientProtocol, open_websocket
from relay.hybrid.messages import ControlMessageError, RemoteEndpoint, encode

CONTROL_RESPONSE_LIMIT = 64 * 1024
"""A response body up to this size, complete in time, goes back on the control channel."""

FLUSH_DELAY = 2.0
"""Seconds a response may sit in the buffer before it is streamed over a rendezvous anyway."""

_MAX_REQUEST_HEAD = 1 * MIB


class BodyTooLarge(ValueError):
    """A request body exceeds the limit given to L{RequestBody.read_all}."""


class RequestBody:
    """
    The body of a relayed request, read as it arrives.

    Unread pieces queue up to C{high_water} bytes; beyond that the socket they come from stops being
    read until the application has taken half of it, so a slow application slows the sender down.

    @ivar present: whether the request has a body at all.
    @ivar received: bytes received so far.
    """

    def __init__(
        self,
        *,
        present: bool = True,
        high_water: int = 1 * MIB,
        pause: Callable[[], None] | None = None,
        resume: Callable[[], None] | None = None,
    ) -> None:
        self.present = present
        self.received = 0
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._ended = not present
        self._error: Exception | None = None
        self._waiters: deque[Deferred[bytes]] = deque()
        self._high_water = high_water
        self._pause = pause
        self._resume = resume
        self._paused = False

    @classmethod
    def whole(cls, data: bytes | None) -> RequestBody:
        """A body that is already complete (C{None}: the request has none)."""
        body = cls(present=data is not None)
        if data:
            body.feed(data)
        body.end()
        return body

    @property
    def complete(self) -> bool:
        """Whether the whole body has arrived (it may not be read yet)."""
        return self._ended

    def read(self) -> Deferred[bytes]:
        """
        The next piece of the body; C{b""} at its end.

        @return: a L{Deferred} failing with L{ConnectionClosedError} when the body was cut off.
        """
        if self._chunks:
            data = self._chunks.popleft()
            self._queued -= len(data)
            if self._paused and self._queued <= self._high_water // 2:
                self._paused = False
                if self._resume is not None:
                    self._resume()
            return succeed(data)
        if self._error is not None:
            return fail(self._error)
        if self._ended:
            return succeed(b"")
        waiter: Deferred[bytes] = Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        return waiter

    async def read_all(self, limit: int | None = None) -> bytes:
        """
        The whole body.

        @param limit: the most bytes to accept.
        @raise BodyTooLarge: when the body is longer than C{limit}.
        """
        parts = []
        size = 0
        while data := await self.read():
            size += len(data)
            if limit is not None and size > limit:
                raise BodyTooLarge(f"the request body exceeds {limit} bytes")
            parts.append(data)
        return b"".join(parts)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while data := await self.read():
            yield data

    def feed(self, data: bytes) -> None:
        """A piece arrived."""
        if not data or self._ended or self._error is not None:
            return
        self.received += len(data)
        if self._waiters:
            self._waiters.popleft().callback(data)
            return
        self._chunks.append(data)
        self._queued += len(data)
        if not self._paused and self._queued >= self._high_water:
            self._paused = True
            if self._pause is not None:
                self._pause()

    def end(self) -> None:
        """The body is complete."""
        if self._ended or self._error is not None:
            return
        self._ended = True
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            waiter.callback(b"")

    def cut(self, error: Exception) -> None:
        """The body will never be complete."""
        if self._ended or self._error is not None:
            return
        self._error = error
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            waiter.errback(error)


@dataclass(frozen=True, slots=True)
class RelayedRequest:
    """
    An HTTP request a sender made to the hybrid connection.

    @ivar id: the request id, also the tracking id the relay logs.
    @ivar method: C{GET}, C{POST}, ...
    @ivar target: the request target as relayed, hybrid connection name included (C{/hyco/api?x=1}).
    @ivar path: the path below the hybrid connection (C{/api}), or C{""}.
    @ivar query: the query string (C{x=1}), or C{""}.
    @ivar headers: the request headers (the relay removed its token and hop-by-hop headers and added
        C{Via}, C{X-Forwarded-For} and C{X-Forwarded-Proto}).
    @ivar remote_endpoint: the sender's address as the relay saw it.
    @ivar body: the body, streamed.
    """

    id: str
    method: str
    target: str
    path: str
    query: str
    headers: Headers
    remote_endpoint: RemoteEndpoint | None
    body: RequestBody


class _State(Enum):
    BUFFERING = "buffering"
    OPENING = "opening a rendezvous"
    STREAMING = "streaming"
    DONE = "done"


class _SocketSink:
    """A response on a rendezvous socket: the C{response} text, then the body as one fragmented message."""

    def __init__(self, protocol: RelayClientProtocol, gate: WriteGate, *, close_after: bool) -> None:
        self.protocol = protocol
        self.gate = gate
        self.close_after = close_after
        self.closed = False

    def send_head(self, payload: bytes, has_body: bool) -> None:
        self.protocol.sendMessage(payload, isBinary=False)
        if has_body:
            self.protocol.beginMessage(isBinary=True)

    def send_data(self, data: bytes) -> None:
        self.protocol.sendMessageFrame(data)

    def end(self, has_body: bool) -> None:
        if has_body:
            self.protocol.endMessage()
        if self.close_after:
            self.protocol.sendClose(1000)

    def abort(self) -> None:
        self.protocol.dropConnection(abort=True)


class ResponseHeaders(MutableMapping[str, "str | list[str]"]):
    """Response headers: names are matched without regard to case; a list value sends one line per item."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[str, str | list[str]]] = {}

    def __getitem__(self, name: str) -> str | list[str]:
        return self._items[name.lower()][1]

    def __setitem__(self, name: str, value: str | list[str]) -> None:
        for item in [value] if isinstance(value, str) else value:
            if not isinstance(item, str) or any(c in item for c in "\r\n\0"):
                raise ValueError(f"header {name!r} needs string values without CR, LF or NUL")
        if not name or any(c in name for c in " \t\r\n:\0"):
            raise ValueError(f"invalid header name {name!r}")
        self._items[name.lower()] = (name, value)

    def __delitem__(self, name: str) -> None:
        del self._items[name.lower()]

    def __iter__(self) -> Any:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def add(self, name: str, value: str) -> None:
        """Add a value, keeping those already set (C{Set-Cookie})."""
        current = self._items.get(name.lower())
        if current is None:
            self[name] = value
        else:
            values = [current[1]] if isinstance(current[1], str) else list(current[1])
            self[current[0]] = [*values, value]

    def to_json(self) -> dict[str, str | list[str]]:
        """The C{responseHeaders} object."""
        return {name: value for name, value in self._items.values()}


class RelayedResponse:
    """
    The answer to a L{RelayedRequest}.

    Set L{status_code}, L{status_description} and L{headers} before the first L{write}; they are sent
    with the first bytes that leave (or at L{finish}).

    @ivar status_code: the status, 200 by default.
    @ivar status_description: the reason phrase; the standard one when C{None}.
    @ivar headers: the response headers.
    """

    log = Logger()

    def __init__(
        self,
        request_id: str,
        *,
        reactor: Any,
        sink: _SocketSink | None = None,
        control: Any = None,
        open_rendezvous: Callable[[], Deferred[_SocketSink]] | None = None,
    ) -> None:
        self.request_id = request_id
        self.status_code = 200
        self.status_description: str | None = None
        self.headers = ResponseHeaders()
        self.bytes_sent = 0
        self._reactor = reactor
        self._sink = sink
        self._control = control
        self._open_rendezvous = open_rendezvous
        self._state = _State.STREAMING if sink is not None else _State.BUFFERING
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._ending = False
        self._head_sent = False
        self._has_body = True
        self._flush_timer: IDelayedCall | None = None
        self._waiters: list[Deferred[None]] = []
        self._done_waiters: list[Deferred[None]] = []
        self._error: Exception | None = None

    @property
    def headers_sent(self) -> bool:
        """Whether status and headers have left; they cannot be changed any more."""
        return self._head_sent

    @property
    def finished(self) -> bool:
        """Whether L{finish} was called (or the response failed)."""
        return self._ending or self._error is not None

    def write(self, data: bytes) -> Deferred[None]:
        """
        Send part of the body.

        @return: a L{Deferred} firing when more may be written; await it to respect back-pressure.
        @raise RuntimeError: after L{finish}.
        """
        if self._ending:
            raise RuntimeError("write() after finish()")
        if self._error is not None:
            return fail(self._error)
        if data:
            self._queue.append(bytes(data))
            self._queued += len(data)
            self._pump()
        return self._writable()

    def finish(self, data: bytes = b"") -> Deferred[None]:
        """
        Send the rest of the body (if any) and end the response.

        @return: a L{Deferred} firing once everything was handed to the socket.
        """
        if self._error is not None:
            return fail(self._error)
        if not self._ending:
            if data:
                self._queue.append(bytes(data))
                self._queued += len(data)
            self._ending = True
            self._pump()
        if self._error is not None:
            return fail(self._error)
        if self._state is _State.DONE:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._done_waiters.append(waiter)
        return waiter

    def abort(self, error: Exception | None = None) -> None:
        """Give up: drop the rendezvous if a response was started on it, else send nothing at all."""
        if self._state is _State.DONE:
            return
        self._fail(error or ConnectionClosedError("the response was aborted"))
        if self._sink is not None and self._head_sent:
            self._sink.abort()

    def socket_closed(self) -> None:
        """The socket the response goes to is gone."""
        if self._state is not _State.DONE:
            self._fail(ConnectionClosedError(f"the rendezvous of request {self.request_id} closed"))

    # -- internals -------------------------------------------------------------------------------------

    def _head(self) -> bytes:
        status = self.status_code
        description = self.status_description
        if description is None:
            try:
                description = HTTPStatus(status).phrase
            except ValueError:
                description = ""
        return encode(
            {
                "response": {
                    "requestId": self.request_id,
                    "statusCode": status,
                    "statusDescription": description,
                    "responseHeaders": self.headers.to_json(),
                    "body": self._has_body,
                }
            }
        )

    def _pump(self) -> None:
        state = self._state
        if state is _State.BUFFERING:
            if self._ending and self._queued <= CONTROL_RESPONSE_LIMIT and self._control is not None:
                self._send_on_control()
            elif self._ending or self._queued > CONTROL_RESPONSE_LIMIT or self._control is None:
                self._start_rendezvous()
            elif self._flush_timer is None:
                self._flush_timer = self._reactor.callLater(FLUSH_DELAY, self._flush_due)
        elif state is _State.STREAMING:
            self._stream()

    def _send_on_control(self) -> None:
        body = b"".join(self._queue)
        self._queue.clear()
        self._queued = 0
        self._has_body = bool(body)
        self._head_sent = True
        sent = self._control.send_message(self._head())
        if sent and body:
            sent = self._control.send_message(body, is_binary=True)
        if not sent:
            self._fail(ConnectionClosedError("the control channel closed before the response was sent"))
            return
        self.bytes_sent = len(body)
        self._done()

    def _flush_due(self) -> None:
        self._flush_timer = None
        if self._state is _State.BUFFERING:
            self._start_rendezvous()

    def _start_rendezvous(self) -> None:
        self._cancel_flush()
        if self._open_rendezvous is None:
            self._fail(ConnectionClosedError("no way to send this response"))
            return
        self._state = _State.OPENING
        self._open_rendezvous().addCallbacks(self._rendezvous_opened, self._rendezvous_failed)

    def _rendezvous_opened(self, sink: _SocketSink) -> None:
        if self._state is not _State.OPENING:
            sink.abort()
            return
        self._sink = sink
        self._state = _State.STREAMING
        self._stream()
        self._release_waiters()

    def _rendezvous_failed(self, failure: Failure) -> None:
        self.log.warn(
            "could not open a rendezvous for the response to {request_id}: {error}",
            request_id=self.request_id,
            error=str(failure.value),
        )
        self._fail(ConnectionClosedError(f"no rendezvous for the response: {failure.value}"))

    def _stream(self) -> None:
        sink = self._sink
        assert sink is not None  # noqa: S101 - streaming implies a sink
        if sink.closed:
            self._fail(ConnectionClosedError(f"the rendezvous of request {self.request_id} closed"))
            return
        if not self._head_sent:
            if not self._queue and not self._ending:
                return
            self._has_body = bool(self._queue)
            self._head_sent = True
            sink.send_head(self._head(), self._has_body)
        while self._queue:
            data = self._queue.popleft()
            self._queued -= len(data)
            self.bytes_sent += len(data)
            sink.send_data(data)
        if self._ending:
            sink.end(self._has_body)
            self._done()

    def _writable(self) -> Deferred[None]:
        if self._state is _State.STREAMING and self._sink is not None:
            return self._sink.gate.when_writable()
        if self._state is _State.BUFFERING and self._queued <= CONTROL_RESPONSE_LIMIT:
            return succeed(None)
        if self._state is _State.DONE:
            return succeed(None) if self._error is None else fail(self._error)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def _release_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if self._error is not None:
                waiter.errback(self._error)
            elif self._sink is not None:
                self._sink.gate.when_writable().chainDeferred(waiter)
            else:
                waiter.callback(None)

    def _cancel_flush(self) -> None:
        if self._flush_timer is not None and self._flush_timer.active():
            self._flush_timer.cancel()
        self._flush_timer = None

    def _done(self) -> None:
        self._state = _State.DONE
        self._cancel_flush()
        self._release_waiters()
        waiters, self._done_waiters = self._done_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _fail(self, error: Exception) -> None:
        if self._state is _State.DONE:
            return
        self._error = error
        self._state = _State.DONE
        self._cancel_flush()
        self._queue.clear()
        self._queued = 0
        self._release_waiters()
        waiters, self._done_waiters = self._done_waiters, []
        for waiter in waiters:
            waiter.errback(error)


HttpApp = Callable[[RelayedRequest, RelayedResponse], "Awaitable[None] | None"]
"""An HTTP application: gets each request and its response, plain or C{async}."""


@implementer(IStreamingReceiver)
class _RequestChannel:
    """A rendezvous the relay sends requests on: C{request} text, then the body as one streamed message."""

    log = Logger()

    def __init__(self, server: HttpListener, protocol: RelayClientProtocol) -> None:
        self._server = server
        self._protocol = protocol
        self._gate = WriteGate()
        protocol.registerProducer(self._gate, True)
        self._text: list[bytes] | None = None
        self._text_size = 0
        self._binary = False
        self._announced: RequestBody | None = None
        self._body: RequestBody | None = None
        self._response: RelayedResponse | None = None
        self.closed = False
        self.sink = _SocketSink(protocol, self._gate, close_after=False)

    def message_begin(self, is_binary: bool) -> None:
        self._binary = is_binary
        if is_binary:
            self._body, self._announced = self._announced, None
        else:
            self._text, self._text_size = [], 0

    def message_data(self, payload: bytes) -> None:
        if self._binary:
            if self._body is not None:
                self._body.feed(payload)
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
        transport: Any = self._protocol.transport
        body = RequestBody(
            present=command.has_body, pause=transport.pauseProducing, resume=transport.resumeProducing
        )
        if command.has_body:
            self._announced = body
        else:
            body.end()
        response = RelayedResponse(command.id, reactor=self._server.reactor, sink=self.sink)
        self._response = response
        self._server.handle(command, body, response)

    def message_received(self, payload: bytes, is_binary: bool) -> None:
        """Unused: this receiver streams."""

    def connection_closed(self, was_clean: bool, code: int | None, reason: str | None) -> None:
        self.closed = True
        self.sink.closed = True
        self._gate.stop()
        for body in (self._body, self._announced):
            if body is not None:
                body.cut(ConnectionClosedError("the rendezvous closed in the middle of the request body"))
        if self._response is not None:
            self._response.socket_closed()


class HttpListener:
    """
    Serve the HTTP requests relayed to a listener with an application.

    @ivar listener: the hybrid connection listener (its C{request_handler} is taken over).
    @ivar app: the application.
    @ivar max_concurrent: requests handled at once; more are answered 503 at once.
    @ivar on_response: called after each response with the request, the response and the seconds it
        took (for access logs).
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
        on_response: Callable[[RelayedRequest, RelayedResponse, float], object] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.listener = listener
        self.app = app
        self.reactor = reactor
        self.max_concurrent = max_concurrent
        self.on_response = on_response
        self.active = 0
        self._options = options or getattr(listener, "options", None) or WebSocketOptions()
        listener.request_handler = self._request

    def _request(self, command: RequestCommand, body: bytes | None) -> None:
        if "method" not in command.fields:
            self._spawn(self._fetch(command))
            return
        control = self.listener.control_channel
        response = RelayedResponse(
            command.id,
            reactor=self.reactor,
            control=control,
            open_rendezvous=lambda: Deferred.fromCoroutine(self._response_rendezvous(command.address)),
        )
        self.handle(command, RequestBody.whole(body if command.has_body else None), response)

    async def _fetch(self, command: RequestCommand) -> None:
        def receiver(protocol: RelayClientProtocol) -> _RequestChannel:
            return _RequestChannel(self, protocol)

        try:
            await open_websocket(self.reactor, command.address, options=self._options, make_receiver=receiver)
        except CancelledError:
            raise
        except Exception as e:
            self.log.warn(
                "could not fetch request {request_id}: {error}", request_id=command.id, error=str(e)
            )

    async def _response_rendezvous(self, address: str) -> _SocketSink:
        channel = cast(
            _ResponseChannel,
            await open_websocket(
                self.reactor, address, options=self._options, make_receiver=_ResponseChannel
            ),
        )
        return channel.sink

    def handle(self, command: RequestCommand, body: RequestBody, response: RelayedResponse) -> None:
        """Run the application for one request."""
        fields = command.fields
        target = str(fields.get("requestTarget") or "/")
        path, query = split_request_target(target, self.listener.address.path)
        headers = fields.get("requestHeaders")
        remote = fields.get("remoteEndpoint")
        request = RelayedRequest(
            id=command.id,
            method=str(fields.get("method")),
            target=target,
            path=path,
            query=query,
            headers=Headers(
                {str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {}
            ),
            remote_endpoint=(
                RemoteEndpoint(str(remote.get("address", "")), int(remote.get("port") or 0))
                if isinstance(remote, dict)
                else None
            ),
            body=body,
        )
        if self.active >= self.max_concurrent:
            response.status_code = 503
            response.headers["Content-Type"] = "text/plain; charset=utf-8"
            response.finish(f"Listener busy. TrackingId:{command.id}\n".encode()).addErrback(lambda _: None)
            return
        self._spawn(self._run(request, response))

    async def _run(self, request: RelayedRequest, response: RelayedResponse) -> None:
        self.active += 1
        started = self.reactor.seconds()
        try:
            result = self.app(request, response)
            if isinstance(result, Deferred) or inspect.isawaitable(result):
                await ensureDeferred(cast(Any, result))
            if not response.finished:
                await response.finish()
        except CancelledError:
            response.abort()
            raise
        except ConnectionClosedError as e:
            self.log.info("request {request_id} ended early: {error}", request_id=request.id, error=str(e))
            response.abort(e)
        except Exception:
            self.log.failure("the application failed on request {request_id}", request_id=request.id)
            if not response.headers_sent and not response.finished:
                response.status_code = 500
                response.status_description = None
                response.headers.clear()
                response.headers["Content-Type"] = "text/plain; charset=utf-8"
                done = response.finish(f"The listener failed. TrackingId:{request.id}\n".encode())
                done.addErrback(lambda _: None)
            else:
                response.abort()
        finally:
            self.active -= 1
        if self.on_response is not None:
            self.on_response(request, response, self.reactor.seconds() - started)

    def _spawn(self, coroutine: Any) -> None:
        task: Deferred[Any] = Deferred.fromCoroutine(coroutine)
        task.addErrback(self._task_failed)

    def _task_failed(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            self.log.failure("HTTP task failed", failure)


@implementer(IStreamingReceiver)
class _ResponseChannel:
    """A rendezvous opened only to send one large response; the relay sends nothing on it."""

    def __init__(self, protocol: RelayClientProtocol) -> None:
        gate = WriteGate()
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
        """The socket is gone: writes fail from now on."""
        self.sink.gate.stop()
        self.sink.closed = True
