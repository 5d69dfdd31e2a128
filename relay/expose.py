"""
C{relay expose}: put a local web server behind a hybrid connection.

One listener on the hybrid connection forwards every relayed HTTP request to the local base URL (the path
below the hybrid connection is appended: C{https://relay/myapp/api?x=1} becomes
C{http://127.0.0.1:8000/api?x=1}) and every WebSocket sender to the same place as C{ws://}. Bodies, and
WebSocket messages frame by frame, stream both ways with back-pressure. The listener reconnects on its
own; each request and each WebSocket connection is logged as one line on stdout.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NoReturn, cast
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.python.failure import Failure

from relay.client.accepting import Accept, AcceptContext, Reject
from relay.client.connection import SENDABLE_CLOSE_CODES, HybridWebSocket
from relay.client.errors import ConnectError, ConnectionClosedError
from relay.client.http import text_answer
from relay.client.httprequest import RelayedRequest
from relay.client.httpresponse import RelayedResponse
from relay.client.options import WebSocketOptions
from relay.client.protocol import RelayClientProtocol, open_websocket
from relay.exposeaddress import DOTS_ABOVE, local_base, resolve_dots, websocket_forward_headers
from relay.exposequick import QuickLane, response_headers
from relay.http1 import ResponseError, valid_request
from relay.hybrid.headers import HOP_BY_HOP
from relay.localclient import LocalClient, LocalResponse, ResponseTimeout
from relay.logger import Logger

# WebSocket senders relayed at once (being opened, waiting for their sender, or relaying); more get 503,
# as HTTP requests past the listener's 256 slots do.
MAX_WEBSOCKETS = 256
_HOP_BY_HOP = HOP_BY_HOP | {"host"}
# The body's framing on the local connection is this client's own; X-Forwarded-Host is expose's to say
# (a sender's own would come first, and frameworks that read the first value would believe it).
_REQUEST_DROPPED = _HOP_BY_HOP | {"content-length", "expect", "x-forwarded-host"}
_SHUTTING_DOWN = "relay expose is shutting down"
LOCAL_TIMEOUT = 60.0
"""Seconds the local server has to start its answer (the relay's default request timeout); then 504."""

LOCAL_KEEPALIVE = 64
"""Idle connections to the local server kept open for reuse (as many as requests usually in flight)."""


class _ResponsePipe:
    """Copies the local server's response body into the relayed response, with back-pressure."""

    def __init__(self, response: RelayedResponse, done: Deferred[None]) -> None:
        self._response = response
        self._done = done
        self._failed = False

    def data(self, data: bytes) -> Deferred[None]:
        return self._response.write(data)

    def end(self) -> None:
        self._response.finish().addBoth(self._finished)

    def failed(self, reason: Failure) -> None:
        """
        The copy stops (the local body was cut, or the relay gave up on the response): the first reason counts.

        A local body that broke off leaves the response to L{Forwarder.cut_short}, which may still answer.
        """
        if self._failed:
            return
        self._failed = True
        if not reason.check(ResponseError):
            self._response.abort()
        if not self._done.called:
            self._done.errback(reason)

    def _finished(self, result: object) -> None:
        if not self._done.called:  # else the response was lost while its end was being sent
            if isinstance(result, Failure):
                self._done.errback(result)
            else:
                self._done.callback(None)


@dataclass
class _Pending:
    local: HybridWebSocket
    started: float


class Forwarder:
    """
    The HTTP application and the WebSocket accept handler of C{relay expose}.

    @ivar base: the local base URL, without trailing slash.
    @ivar log_line: where access log lines go (one per request or WebSocket connection).
    @ivar max_websockets: WebSocket senders relayed at once; more are refused with 503.
    @ivar draining: set when expose stops (L{drain}): new requests and WebSocket senders get 503 while
        the answers in flight finish.
    """

    log = Logger()

    # What the access line of an undelivered request says after "given up:": the relay gave up (the sender
    # left, its request_timeout expired, the channel closed) before the local server's answer came, before
    # any of it left, or in the middle of it.
    GIVEN_UP_UNANSWERED = "the local server had not answered"
    GIVEN_UP_UNSENT = "the sender got nothing"
    GIVEN_UP_CUT = "the sender got a cut answer"

    def __init__(
        self,
        base: str,
        *,
        reactor: Any,
        log_line: Callable[[str], object],
        options: WebSocketOptions | None = None,
        local_timeout: float | None = LOCAL_TIMEOUT,
        max_websockets: int = MAX_WEBSOCKETS,
    ) -> None:
        self.base = local_base(base)
        self.max_websockets = max_websockets
        self.draining = False
        self._opening = 0  # local WebSockets being opened for senders
        self.reactor = reactor
        self.log_line = log_line
        # Responses the relay gave up on before the local server answered: their access line has no
        # status to show (a response's 200 is only its default). Weak: each leaves with its response.
        self._unanswered: weakref.WeakSet[RelayedResponse] = weakref.WeakSet()
        self.options = options or WebSocketOptions()
        # A trust root (--ca) is the relay's: a wss local server is checked as an https one is (LocalClient),
        # by the platform's certificate authorities.
        self._local_options = replace(self.options, trust_root=None, tls_options=None)
        parts = urlsplit(self.base)
        self._base_path = parts.path.encode()
        self.client = LocalClient(
            reactor,
            parts.scheme,
            parts.hostname or "",
            parts.port or (443 if parts.scheme == "https" else 80),
            host_header=parts.netloc.rpartition("@")[2].encode("idna"),
            max_idle=LOCAL_KEEPALIVE,
            response_timeout=local_timeout,
        )
        self._pending: dict[int, _Pending] = {}  # by id() of the sender's AcceptContext
        self.quick = QuickLane(self, _HOP_BY_HOP)
        self.connections: dict[Deferred[Any], tuple[HybridWebSocket, HybridWebSocket]] = {}
        """The WebSocket pairs being relayed: each splice's task, with its sender and its local socket."""

    # -- HTTP ------------------------------------------------------------------------------------------

    def url_for(self, path: str, query: str, websocket: bool = False) -> str:
        """The local URL for a path below the hybrid connection and a query."""
        base = self.base
        if websocket:
            base = ("wss" if base.startswith("https") else "ws") + base[base.index(":") :]
        return base + (path or ("" if base.count("/") > 2 else "/")) + (f"?{query}" if query else "")

    async def __call__(self, request: RelayedRequest, response: RelayedResponse) -> None:
        """Forward one relayed request to the local server and its response back."""
        if self.draining:
            await text_answer(response, 503, f"relay expose is shutting down. TrackingId:{request.id}")
            return
        local_request = self.local_request(request.method, request.path, request.query, request.headers)
        if isinstance(local_request, str):
            self.log.warn(
                "request {request_id} not forwarded: {problem}", request_id=request.id, problem=local_request
            )
            await text_answer(response, 400, f"Bad request: {local_request}. TrackingId:{request.id}")
            return
        method, target, headers = local_request
        answer = self.client.request(method, target, headers, request.body if request.body.present else None)
        # The relay may give up on the exchange (the sender left, its request_timeout expired) while the
        # local server is slow: stop waiting for it then, or its connection and this request slot stay
        # taken for as long as it takes (for ever, for an event stream).
        waiting = True

        def lost(reason: Exception) -> None:
            if waiting:
                answer.cancel()  # its canceller drops the local connection

        response.when_lost().addCallback(lost)
        try:
            local = await answer
        except Exception as e:
            waiting = False
            if response.finished:  # the relay gave up (or the response failed): nobody to answer
                self.given_up(request.id, response, str(e))
            await self.local_failed(request, response, target, e)
            return
        waiting = False
        await self.answer_from(request, response, local)

    async def local_failed(
        self, request: RelayedRequest, response: RelayedResponse, target: bytes, error: Exception
    ) -> None:
        """Answer 502, or 504 when the local server did not start its answer in time."""
        url = self.base + target.decode("utf-8", "replace")[len(self._base_path) :]
        self.log.warn("the local server did not answer {url}: {error}", url=url, error=str(error))
        late = isinstance(error, ResponseTimeout)
        what = f"did not answer within {self.client.response_timeout:g}s" if late else "did not answer"
        await text_answer(
            response, 504 if late else 502, f"The local server {self.base} {what}. TrackingId:{request.id}"
        )

    async def answer_from(
        self, request: RelayedRequest, response: RelayedResponse, local: LocalResponse
    ) -> None:
        """Relay the local server's response, its body streamed with back-pressure."""
        pipe: _ResponsePipe | None = None

        def lost(reason: Exception) -> None:
            if pipe is not None:
                local.abort()
                pipe.failed(Failure(reason))

        response.when_lost().addCallback(lost)
        response.status_code = local.code
        response.status_description = local.phrase.decode("latin-1")
        for name, value in response_headers(local, _HOP_BY_HOP).items():
            response.headers[name] = value
        done: Deferred[None] = Deferred()
        pipe = _ResponsePipe(response, done)
        local.deliver(pipe)
        try:
            await done
        except ResponseError as e:  # the local server's fault, not the application's: no traceback
            await self.cut_short(request, response, e)

    async def cut_short(self, request: RelayedRequest, response: RelayedResponse, error: Exception) -> None:
        """
        The local answer broke off: a 502 instead while none of it has left, else the relayed one is cut.

        Sending nothing would leave the sender waiting for the relay's C{request_timeout}, then a 504.
        """
        self.log.warn(
            "request {request_id}: the local server's response was cut: {error}",
            request_id=request.id,
            error=str(error),
        )
        if not response.reset():
            response.abort()
            return
        await text_answer(
            response, 502, f"The local server {self.base} broke off its answer. TrackingId:{request.id}"
        )

    def local_request(
        self, method: str, path: str, query: str, headers: Mapping[str, str]
    ) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]] | str:
        """
        A relayed request's method, target and header fields for the local server, or why it cannot go.

        It cannot when the head could not carry a character, or a line break would start a field of its own.
        """
        suffix = resolve_dots(path)
        if suffix is None:
            return DOTS_ABOVE
        try:
            fields = [
                (name.encode("latin-1"), value.encode("utf-8"))
                for name, value in headers.items()
                if name.lower() not in _REQUEST_DROPPED
            ]
            host = headers.get("Host")
            if host:
                fields.append((b"X-Forwarded-Host", host.encode("latin-1")))
            encoded = method.encode("latin-1")
            target = self.local_target(suffix, query)
        except UnicodeEncodeError as e:  # JSON text may hold any character, lone surrogates too
            return f"{e.object[e.start : e.end]!r} cannot be sent as {e.encoding}"
        problem = valid_request(target, fields, encoded)
        return (encoded, target, fields) if problem is None else problem

    def local_target(self, path: str, query: str) -> bytes:
        """The request target on the local server for a path below the hybrid connection and a query."""
        target = self._base_path + (path.encode("utf-8") if path else (b"" if self._base_path else b"/"))
        return target + (b"?" + query.encode("utf-8") if query else b"")

    def given_up(self, request_id: str, response: RelayedResponse, why: str) -> NoReturn:
        """
        The relay gave up on a request before the local server answered it: end it so.

        @raise ConnectionClosedError: always; L{HttpListener} ends the request with an info line, and the
            access line shows no status.
        """
        self._unanswered.add(response)
        raise ConnectionClosedError(f"request {request_id} was given up: {why}")

    def access_line(self, request: RelayedRequest, response: RelayedResponse, seconds: float) -> None:
        """Log one finished request, saying so when it was not delivered."""
        remote = request.remote_endpoint.address if request.remote_endpoint else "-"
        unanswered = response in self._unanswered
        given_up = None
        if unanswered:
            given_up = self.GIVEN_UP_UNANSWERED
        elif response.lost is not None:
            given_up = self.GIVEN_UP_CUT if response.headers_sent else self.GIVEN_UP_UNSENT
        self.access(
            remote,
            request.method,
            request.path,
            request.query,
            None if unanswered else response.status_code,
            response.bytes_sent,
            seconds,
            given_up=given_up,
        )

    def access(
        self,
        remote: str,
        method: str,
        path: str,
        query: str,
        status: int | None,
        size: int,
        seconds: float,
        *,
        given_up: str | None = None,
    ) -> None:
        """
        Log one finished request from its parts (the quick lane has no request and response objects).

        @param status: the status of the answer, C{None} (shown as C{-}) when there was none.
        @param given_up: what became of a request that was not delivered (the relay gave up on it, or its
            answer was cut), appended after the duration.
        """
        self.log_line(
            f'{_now()} {remote} "{method} {path or "/"}{"?" + query if query else ""}" '
            f"{'-' if status is None else status} {size} {seconds * 1000:.1f}ms"
            + ("" if given_up is None else f" given up: {given_up}")
        )

    # -- WebSocket -------------------------------------------------------------------------------------

    async def accept(self, context: AcceptContext) -> Accept | Reject:
        """Connect to the local WebSocket first; accept the sender with what the local server chose."""
        if self.draining:
            self._ws_line(context, 503, "shutting down", 0.0)
            return Reject(503, "relay expose is shutting down")
        if self._opening + len(self._pending) + len(self.connections) >= self.max_websockets:
            self._ws_line(context, 503, "too many WebSocket connections", 0.0)
            return Reject(503, "Too many WebSocket connections through this listener")
        self._opening += 1
        try:
            return await self._open_local(context)
        finally:
            self._opening -= 1

    async def _open_local(self, context: AcceptContext) -> Accept | Reject:
        suffix = resolve_dots(context.suffix)
        if suffix is None:
            self._ws_line(context, 400, "bad request", 0.0)
            return Reject(400, f"Bad request: {DOTS_ABOVE}")
        url = self.url_for(suffix, context.query, websocket=True)
        headers = websocket_forward_headers(context)
        # Autobahn writes the handshake as given: what would break it must not reach it.
        offered = ("Sec-WebSocket-Protocol", ", ".join(context.offered_subprotocols))
        try:
            fields = [
                (name.encode("latin-1"), value.encode("utf-8")) for name, value in [*headers.items(), offered]
            ]
            problem = valid_request(self.local_target(suffix, context.query), fields)
        except UnicodeEncodeError as e:
            problem = f"{e.object[e.start : e.end]!r} cannot be sent as {e.encoding}"
        if problem is not None:
            self.log.warn(
                "connection {connection_id} not forwarded: {problem}",
                connection_id=context.connection_id,
                problem=problem,
            )
            self._ws_line(context, 400, "bad request", 0.0)
            return Reject(400, f"Bad request: {problem}"[:120])

        def receiver(protocol: RelayClientProtocol) -> HybridWebSocket:
            local = HybridWebSocket(protocol, tracking_id=context.connection_id, options=self.options)
            local.pause_reading()  # what the local server sends waits in TCP until the sender is here
            return local

        started = self.reactor.seconds()
        try:
            local = cast(
                HybridWebSocket,
                await open_websocket(
                    self.reactor,
                    url,
                    options=self._local_options,
                    make_receiver=receiver,
                    headers=headers,
                    subprotocols=context.offered_subprotocols,
                ),
            )
        except ConnectError as e:
            status = e.status_code if e.status_code and 400 <= e.status_code <= 599 else 502
            self._ws_line(context, status, "refused by the local server", 0.0)
            return Reject(status, f"The local server refused the WebSocket: {e.reason}"[:120])
        except CancelledError:  # the listener's accept window ended: it answers 504
            elapsed = self.reactor.seconds() - started
            self._ws_line(context, 504, "the local server did not answer the upgrade", elapsed)
            raise
        except Exception as e:
            self._ws_line(context, 502, "local server unreachable", 0.0)
            return Reject(502, f"The local server did not answer: {e}"[:120])
        # Keyed by the context object, not the connection id: a sender chooses its id, and two senders
        # with the same one must not get each other's local socket.
        self._pending[id(context)] = _Pending(local, self.reactor.seconds())
        return Accept(local.subprotocol)

    def accept_failed(self, context: AcceptContext) -> None:
        """An accepted sender never arrived (it left, or the relay's window closed): close its local socket."""
        pending = self._pending.pop(id(context), None)
        if pending is not None:
            pending.local.close(1001, "the sender went away")
            self._ws_line(context, 502, "sender gone before the rendezvous", 0.0)

    def connected(self, sender: HybridWebSocket) -> None:
        """The sender is accepted: relay messages both ways until either side closes."""
        context = sender.context
        pending = self._pending.pop(id(context), None) if context is not None else None
        if pending is None:
            sender.close(1011, "no local connection")
            return
        if self.draining:  # accepted before the stop, here after drain: closed as the others were
            sender.close(1001, _SHUTTING_DOWN)
            pending.local.close(1001, _SHUTTING_DOWN)
            if context is not None:
                self._ws_line(
                    context, 101, "closed 1001 (shutting down)", self.reactor.seconds() - pending.started
                )
            return
        task: Deferred[Any] = Deferred.fromCoroutine(self._splice(sender, pending))
        self.connections[task] = (sender, pending.local)
        task.addBoth(lambda result: self.connections.pop(task, None))

    def drain(self) -> None:
        """
        Expose stops: new requests and WebSocket senders get 503 from now on (L{draining}).

        Every WebSocket pair being relayed is closed with 1001 (going away), both sides at once.
        """
        self.draining = True
        for sender, local in list(self.connections.values()):
            sender.close(1001, _SHUTTING_DOWN)
            local.close(1001, _SHUTTING_DOWN)

    async def _splice(self, sender: HybridWebSocket, pending: _Pending) -> None:
        local = pending.local
        await DeferredList(
            [Deferred.fromCoroutine(_pipe(sender, local)), Deferred.fromCoroutine(_pipe(local, sender))],
            consumeErrors=True,
        )
        context = sender.context
        if context is not None:
            self._ws_line(
                context,
                101,
                f"closed {sender.close_code}",
                self.reactor.seconds() - pending.started,
            )

    def _ws_line(self, context: AcceptContext, status: int, what: str, seconds: float) -> None:
        remote = context.remote_endpoint.address if context.remote_endpoint else "-"
        target = (context.suffix or "/") + (f"?{context.query}" if context.query else "")
        self.log_line(f'{_now()} {remote} "WEBSOCKET {target}" {status} {what} {seconds * 1000:.1f}ms')


async def _pipe(source: HybridWebSocket, sink: HybridWebSocket) -> None:
    """
    Relay messages as their frames come until C{source} closes, then close C{sink} the same way.

    Nothing is assembled, whatever a message's size, and C{source} is not read while C{sink}'s write
    buffer is full. Once C{sink} is gone what C{source} still sends is discarded: the other direction's
    pipe closes C{source} with C{sink}'s close code.
    """
    await source.relay_to(sink)
    code = source.close_code or 1000
    if code == 1005:
        code = 1000
    elif code not in SENDABLE_CLOSE_CODES and not 3000 <= code <= 4999:
        code = 1001
    try:
        await sink.close(code, (source.close_reason or "")[:100])
    except Exception:
        sink.abort()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
