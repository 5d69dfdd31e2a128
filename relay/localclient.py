"""
A keep-alive HTTP/1.1 client for the one local server that C{relay expose} forwards to.

twisted's C{Agent} serves any URL with any policy; per small request it cost C{relay expose} about a third
of its CPU (request objects, header objects, a parser that reads lines one call at a time, several
Deferreds, a write the reactor sends later). This client knows its one origin: it writes each request
head in one system call, reads response heads with L{relay.http1}, hands body bytes straight to a sink
that can push back, and keeps idle connections for reuse.
"""

from __future__ import annotations

from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikePolicyForHTTPS

from relay.client.errors import ConnectionClosedError
from relay.client.httprequest import RequestBody
from relay.deadlines import Deadlines
from relay.http1 import (
    LAST_CHUNK,
    ChunkedReader,
    Framing,
    ResponseError,
    ResponseHead,
    chunk,
    read_response_head,
    request_head,
)
from relay.logger import Logger
from relay.writes import WriteGate, no_delay, plain_socket, write_now

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


class ResponseTimeout(Exception):
    """The local server did not send a response head in time (C{relay expose} answers 504)."""


class BodySink(TypingProtocol):
    """Where a response body goes."""

    def data(self, data: bytes) -> Deferred[None] | None:
        """A piece of the body; an unfired L{Deferred} stops reading until it fires (or fails)."""

    def end(self) -> None:
        """The body is complete."""

    def failed(self, reason: Failure) -> None:
        """The body was cut off."""


class LocalResponse:
    """
    A response head from the local server; its body follows into the sink given to L{deliver}.

    Body bytes that arrive before L{deliver} are held; past L{HELD_BYTES} the connection stops being
    read until they are delivered.

    @ivar length: the body's length when the server gave one, else C{None}.
    """

    HELD_BYTES = 64 * 1024

    def __init__(self, connection: LocalConnection, head: ResponseHead) -> None:
        self._connection = connection
        self.code = head.code
        self.phrase = head.phrase
        self.headers = head.headers
        self.length = head.length
        self._sink: BodySink | None = None
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._ended = False
        self._failure: Failure | None = None
        self._stopped = False

    def deliver(self, sink: BodySink) -> None:
        """Send the body to C{sink}: what arrived already at once, the rest as it comes."""
        self._sink = sink
        held, self._held = self._held, []
        if self._held_bytes >= self.HELD_BYTES:
            self._connection.resume_reading(self)
        self._held_bytes = 0
        for data in held:
            self.data(data)
        if self._failure is not None:
            sink.failed(self._failure)
        elif self._ended:
            sink.end()

    def data(self, data: bytes) -> None:
        """A piece of the body (from the connection)."""
        sink = self._sink
        if self._stopped:
            return
        if sink is None:
            self._held.append(data)
            self._held_bytes += len(data)
            if self._held_bytes >= self.HELD_BYTES and self._held_bytes - len(data) < self.HELD_BYTES:
                self._connection.pause_reading(self)
            return
        more = sink.data(data)
        if more is None:
            return
        if not more.called:
            self._connection.pause_reading(self)
            more.addCallbacks(lambda _: self._connection.resume_reading(self), self._cut)
        else:
            more.addErrback(self._cut)

    def abort(self) -> None:
        """The rest of the body is not wanted (the relay gave up on it): drop the connection unless complete."""
        if self._stopped or self._ended or self._failure is not None:
            return
        self._stopped = True
        self._held, self._held_bytes = [], 0
        self._connection.abort_response(self)

    def _cut(self, failure: Failure) -> None:
        """The sink cannot take more: the rest of the body is not wanted, and the sink hears why (once)."""
        if self._stopped:
            return
        self._stopped = True
        self._connection.abort_response(self)
        if self._sink is not None:
            self._sink.failed(failure)

    def end(self) -> None:
        """The body is complete (from the connection)."""
        self._ended = True
        if self._sink is not None and not self._stopped:
            self._sink.end()

    def fail(self, reason: Failure) -> None:
        """The body was cut off (from the connection)."""
        self._failure = reason
        if self._sink is not None and not self._stopped:
            self._sink.failed(reason)


class LocalConnection(Protocol):
    """
    One connection to the local server, carrying one request at a time.

    Bytes beyond the end of an answer (past its C{Content-Length} or its last chunk, a body after a HEAD,
    204 or 304 answer, bytes when nothing is due) never fail the answer: by its framing it was complete,
    and whether they came in its last read or a later one is chance. They spend the connection instead: it
    is dropped, with a warning, so they can never be read as the start of another request's answer.
    """

    log = Logger()
    transport: Any = None  # a TCP (or TLS) transport: pauses, resumes and aborts

    def __init__(self, client: LocalClient) -> None:
        self._client = client
        self._buffer = b""
        self._method = b""
        self._waiting: Deferred[LocalResponse] | None = None  # the response head is due
        self._head: ResponseHead | None = None
        self._response: LocalResponse | None = None
        self._remaining = 0
        self._chunks: ChunkedReader | None = None
        self._body_sent = True
        self._paused = 0
        self.received_any = False  # of the current response
        self.reused = False
        self.closed = False
        self._spent = False  # dropped or closing: its close may not have been reported yet
        self._timed = False  # the response deadline is set (in the client's Deadlines)
        self._socket: Any = None

    def connectionMade(self) -> None:
        """Nagle off: a request head and its body are separate sends."""
        no_delay(self.transport)
        self._socket = plain_socket(self.transport)

    def request(
        self, method: bytes, head: bytes, body: RequestBody | None, *, chunked: bool = False
    ) -> Deferred[LocalResponse]:
        """
        Send a request (its head is ready-made); the L{Deferred} fires with the response head.

        @param chunked: whether the head announced a chunked body (decided when the head was made).
        """
        self._method = method
        self.received_any = False
        waiting: Deferred[LocalResponse] = Deferred(self._cancelled)
        self._waiting = waiting
        if body is None:
            self._write(head)
            self._start_timer()
        else:
            self._body_sent = False
            Deferred.fromCoroutine(self._send_body(head, body, chunked)).addErrback(self._body_failed)
        return waiting

    def _cancelled(self, waiting: Deferred[LocalResponse]) -> None:
        """The response is not wanted any more: the connection is dropped (its loss reports nothing)."""
        if waiting is self._waiting:
            self._waiting = None
            self._stop_timer()
        self.abort()

    def _write(self, data: bytes) -> None:
        write_now(self.transport, data, self._socket)

    async def _send_body(self, head: bytes, body: RequestBody, chunked: bool) -> None:
        pending = head
        gate = WriteGate(ConnectionClosedError)
        self.transport.registerProducer(gate, True)  # the transport pauses it when its queue is full
        try:
            while not self.closed:
                data = await body.read()
                if self.closed:
                    return
                if not data:
                    self._write(pending + LAST_CHUNK if chunked else pending)
                    self._body_sent = True
                    if self._waiting is not None:
                        self._start_timer()
                    elif self._head is None and self._response is None:
                        self._idle()
                    return
                self._write(pending + (chunk(data) if chunked else data))
                pending = b""
                await gate.when_writable()
        finally:
            if not self.closed:
                self.transport.unregisterProducer()

    def _body_failed(self, failure: Failure) -> None:
        if not self.closed:
            self._fail(failure)
            self.abort()

    # -- reading the response ----------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Response bytes: a head, or body bytes for the response being read."""
        self.received_any = True
        if self._waiting is None and self._head is None:
            # Nothing is due (a body written after a HEAD, 204 or 304 answer, say): kept, these bytes would
            # be read as the start of the next request's answer. The connection is spent.
            self._extra(len(data))
            self._client.forget(self)
            self.abort()
            return
        try:
            if self._head is None:
                self._buffer += data
                self._read_heads()
            else:
                self._body(data)
        except ResponseError as e:
            self._fail(Failure(e))
            self.abort()

    def _read_heads(self) -> None:
        while self._head is None and self._buffer:  # an answer read whole leaves nothing to look at
            found = read_response_head(self._buffer, self._method)
            if found is None:
                return
            head, end = found
            rest, self._buffer = self._buffer[end:], b""
            if head.code == 101:
                raise ResponseError("the local server switched protocols without being asked")
            if head.code > 599:  # relay.http1 reads any three digits; the relay takes 100-599 only
                raise ResponseError(f"status code {head.code} out of range")
            if head.interim:
                self._buffer = rest
                continue
            waiting, self._waiting = self._waiting, None
            if waiting is None:
                raise ResponseError("the local server answered a request it was not sent")
            self._stop_timer()
            self._head = head
            self._remaining = head.length or 0
            self._chunks = ChunkedReader() if head.framing is Framing.CHUNKED else None
            response = self._response = LocalResponse(self, head)
            waiting.callback(response)
            if self.closed:
                return
            if head.framing is Framing.NONE:
                # Bytes after an answer that has no body (a HEAD, 204 or 304 answer written with one): the
                # answer stands, the connection does not.
                if rest:
                    self._extra(len(rest))
                self._end_body(spent=bool(rest))
            elif rest:
                self._body(rest)

    def _body(self, data: bytes) -> None:
        head = self._head
        response = self._response
        if head is None or response is None:
            raise ResponseError("the local server sent bytes after the response")
        if head.framing is Framing.LENGTH:
            extra = len(data) - self._remaining
            if extra > 0:  # the answer is complete; the rest spends the connection
                data = data[: self._remaining]
            self._remaining -= len(data)
            if data:
                response.data(data)
            if extra > 0:
                self._extra(extra)
                self._end_body(spent=True)
            elif not self._remaining:
                self._end_body()
        elif (chunks := self._chunks) is not None:  # chunked framing
            for piece in chunks.feed(data):
                response.data(piece)
            if chunks.done:
                if chunks.rest:
                    self._extra(len(chunks.rest))
                self._end_body(spent=bool(chunks.rest))
        elif head.framing is Framing.CLOSE:
            response.data(data)
        else:
            raise ResponseError("the local server sent bytes after the response")

    def _extra(self, size: int) -> None:
        self.log.warn(
            "the local server sent {size} bytes after its answer; dropping the connection", size=size
        )

    def _end_body(self, *, spent: bool = False) -> None:
        response, head = self._response, self._head
        if response is None or head is None:
            return
        self._response = None
        self._head = None
        if self._paused:
            self._paused = 0
            if not self.closed:
                self.transport.resumeProducing()
        response.end()
        if self.closed:
            return
        if not head.reusable:
            self._spent = True
            self.transport.loseConnection()
        elif spent or not self._body_sent:
            self.abort()  # answered before the whole request body was sent: this connection is spent
        else:
            self._idle()

    def _idle(self) -> None:
        if self._spent or self.closed:
            # Dropped or closing (an answer that came before the request body was all sent, say): the
            # reactor reports the close later, and until then the pool would hand it to the next request.
            return
        self.reused = True
        self._client.release(self)

    def pause_reading(self, response: LocalResponse) -> None:
        """The response's sink is full: stop reading until L{resume_reading}."""
        if response is self._response and not self.closed:
            self._paused += 1
            if self._paused == 1:
                self.transport.pauseProducing()

    def resume_reading(self, response: LocalResponse) -> None:
        """The response's sink takes more."""
        if response is self._response and self._paused and not self.closed:
            self._paused -= 1
            if not self._paused:
                self.transport.resumeProducing()

    def abort_response(self, response: LocalResponse) -> None:
        """The response's body is not wanted any more: the connection cannot be reused."""
        if response is self._response:
            self._response = None
            self.abort()

    # -- ending ------------------------------------------------------------------------------------

    def abort(self) -> None:
        """Drop the connection (the response is not wanted, or cannot be read)."""
        self._spent = True
        if not self.closed:
            self.transport.abortConnection()

    def _start_timer(self) -> None:
        """The whole request is sent: the local server's time to answer starts (as the relay's does)."""
        deadlines = self._client.deadlines
        if deadlines is not None:
            deadlines.set(self)
            self._timed = True

    def timed_out(self, timeout: float) -> None:
        """No response head within C{timeout} seconds of the request's last byte: it fails, the connection goes."""
        self._timed = False
        self._fail(Failure(ResponseTimeout(f"the local server did not answer within {timeout:g}s")))
        self.abort()

    def _stop_timer(self) -> None:
        if self._timed:
            self._timed = False
            self._client.deadlines.clear(self)  # type: ignore[union-attr]  # _timed: it is set

    def _fail(self, reason: Failure) -> None:
        self._stop_timer()
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.errback(reason)
            return
        response, self._response = self._response, None
        self._head = None
        if response is not None:
            response.fail(reason)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """A body read until the close ends here; anything else still due fails."""
        self.closed = True
        self._stop_timer()
        self._client.forget(self)
        head = self._head
        if head is not None and head.framing is Framing.CLOSE and reason.check(ConnectionDone):
            self._end_body()
            return
        if self._waiting is not None and not self.received_any:
            self._fail(reason)
        elif self._waiting is not None or self._response is not None:
            self._fail(
                Failure(ResponseError(f"the local server closed the connection: {reason.getErrorMessage()}"))
            )


class LocalClient:
    """
    Requests to one local server over a pool of keep-alive connections.

    @ivar max_idle: idle connections kept for reuse.
    @ivar response_timeout: seconds a request waits for its response head (C{None}: no limit); then its
        connection is dropped and the request fails with L{ResponseTimeout}. Given at construction.
    """

    def __init__(
        self,
        reactor: Any,
        scheme: str,
        host: str,
        port: int,
        *,
        host_header: bytes | None = None,
        max_idle: int = 64,
        response_timeout: float | None = None,
        endpoint: IStreamClientEndpoint | None = None,
    ) -> None:
        self.reactor = reactor
        self.max_idle = max_idle
        self.response_timeout = response_timeout
        # The requests share one timeout, so their deadlines come due in the order they were set: one
        # timer for all (relay.deadlines), not a callLater and a cancel per request.
        self.deadlines = (
            None
            if response_timeout is None
            else Deadlines(reactor, response_timeout, lambda late: late.timed_out(response_timeout))
        )
        default_port = port == (443 if scheme == "https" else 80)
        self.host_header = host_header or (host if default_port else f"{host}:{port}").encode("idna")
        if endpoint is None:
            endpoint = HostnameEndpoint(reactor, host, port)
            if scheme == "https":
                endpoint = wrapClientTLS(
                    BrowserLikePolicyForHTTPS().creatorForNetloc(host.encode(), port), endpoint
                )
        self._endpoint = endpoint
        self._idle: list[LocalConnection] = []

    def request(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: RequestBody | None
    ) -> Deferred[LocalResponse]:
        """
        Send one request; the L{Deferred} fires with the response head, or fails if there is none.

        @param body: the request body, or C{None}. A complete body is sent with its length, one that is
            still arriving is sent chunked.
        """
        if body is not None and not body.present:
            body = None
        length = None if body is not None and not body.complete else (body.received if body else 0)
        head = request_head(method, target, self.host_header, headers, length)
        # A request whose body was not consumed can be sent again when a kept connection turns out to
        # have been closed by the server in the meantime (as twisted's Agent does).
        retry = method in IDEMPOTENT and body is None
        chunked = length is None
        while self._idle:  # a kept connection: no coroutine, no connect (the common case)
            connection = self._idle.pop()
            if connection.closed:
                continue
            answer = connection.request(method, head, body, chunked=chunked)
            if retry:
                answer.addErrback(self._retry, connection, method, head)
            return answer
        return Deferred.fromCoroutine(self._send_new(method, head, body, chunked))

    def has_idle(self) -> bool:
        """Whether a kept connection is ready, so that a request needs no connect."""
        idle = self._idle
        while idle and idle[-1].closed:
            idle.pop()
        return bool(idle)

    def _retry(
        self, failure: Failure, connection: LocalConnection, method: bytes, head: bytes
    ) -> Failure | Deferred[LocalResponse]:
        """The kept connection had been closed by the server before it answered: once more on a new one."""
        if connection.closed and not connection.received_any and not failure.check(CancelledError):
            return Deferred.fromCoroutine(self._send_new(method, head, None, False))
        return failure

    async def _send_new(
        self, method: bytes, head: bytes, body: RequestBody | None, chunked: bool
    ) -> LocalResponse:
        protocol: Any = await self._endpoint.connect(Factory.forProtocol(lambda: LocalConnection(self)))
        connection: LocalConnection = protocol
        return await connection.request(method, head, body, chunked=chunked)

    def release(self, connection: LocalConnection) -> None:
        """A connection is free for another request."""
        if len(self._idle) < self.max_idle:
            self._idle.append(connection)
        else:
            connection.transport.loseConnection()  # type: ignore[union-attr]

    def forget(self, connection: LocalConnection) -> None:
        """A connection closed."""
        if connection in self._idle:
            self._idle.remove(connection)

    def close(self) -> None:
        """Close the idle connections."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.transport.loseConnection()  # type: ignore[union-attr]
