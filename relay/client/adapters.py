"""
Serve existing web applications through a hybrid connection: a twisted.web resource or a WSGI app.

Both turn into an L{HttpApp} for L{relay.client.http.HttpListener}. The application sees the path below
the hybrid connection (a request to C{https://relay/hyco/api?x=1} arrives as C{/api?x=1}), the sender's
headers, and C{https} as scheme when the sender used TLS (from C{X-Forwarded-Proto}).

twisted.web resources read the body from C{request.content}, so it is spooled first (in memory up to
C{spool_size}, then in a temporary file); responses stream with back-pressure, including resources that
register producers (C{static.File}). WSGI applications run in a thread pool; a streamed request body is
spooled first so that C{CONTENT_LENGTH} can be given (or, with C{stream_input}, C{wsgi.input} streams it),
and every write blocks the thread until the relay can take more, so responses are not buffered.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from tempfile import SpooledTemporaryFile
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet import threads
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers as TwistedHeaders
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from relay.client.http import HttpApp
from relay.client.httprequest import RelayedRequest, RequestBody
from relay.client.httpresponse import RelayedResponse
from relay.hybrid.headers import HOP_BY_HOP
from relay.logger import Logger

_log = Logger()


def _call_in_reactor(reactor: Any, function: Callable[..., Any], *args: Any) -> Any:
    """Twisted's C{blockingCallFromThread}, typed loosely (our callables return Deferreds of values)."""
    return threads.blockingCallFromThread(reactor, function, *args)


def _server_address(request: RelayedRequest) -> tuple[str, int, bool]:
    """Host name, port and whether TLS was used, as the sender addressed the relay."""
    secure = request.headers.get("X-Forwarded-Proto", "http").lower() == "https"
    host = request.headers.get("Host", "localhost")
    name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    if not name:
        name, port = host, ""
    return name, int(port) if port.isascii() and port.isdigit() else (443 if secure else 80), secure


def _local_target(request: RelayedRequest) -> str:
    return (request.path or "/") + (f"?{request.query}" if request.query else "")


class _RelayedChannel:
    """What a twisted.web request needs from its channel, backed by a relayed response."""

    log = Logger()

    def __init__(self, site: Site, request: RelayedRequest, response: RelayedResponse, reactor: Any) -> None:
        self.site = site
        self.factory = None
        self.transport = None
        self.request: Request | None = None
        self.done: Deferred[None] = Deferred()
        self._relayed = request
        self._response = response
        self._reactor = reactor
        self._producer: Any = None
        self._streaming = False

    def getPeer(self) -> IPv4Address:  # noqa: N802 - twisted's name
        remote = self._relayed.remote_endpoint
        return IPv4Address("TCP", remote.address if remote else "0.0.0.0", remote.port if remote else 0)  # noqa: S104

    def getHost(self) -> IPv4Address:  # noqa: N802 - twisted's name
        name, port, _ = _server_address(self._relayed)
        return IPv4Address("TCP", name, port)

    def isSecure(self) -> bool:  # noqa: N802 - twisted's name
        return _server_address(self._relayed)[2]

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: TwistedHeaders) -> None:  # noqa: N802
        if self.request is not None:
            self.request.chunked = 0  # the relay frames the body itself
        response = self._response
        try:
            response.status_code = int(code)
            response.status_description = reason.decode("latin-1")
        except ValueError as e:
            # twisted.web has started writing: its error page would go out under the default 200.
            self.log.error(
                "request {request_id}: the resource's response is sent as 500: {error}",
                request_id=self._relayed.id,
                error=str(e),
            )
            response.status_code = 500
            response.status_description = None
        for name, values in headers.getAllRawHeaders():
            text = name.decode("latin-1")
            if text.lower() in HOP_BY_HOP:
                continue
            decoded = [v.decode("latin-1") for v in values]
            response.headers[text] = decoded[0] if len(decoded) == 1 else decoded

    def write(self, data: bytes) -> None:
        if not data:
            return
        writable = self._response.write(data)
        producer = self._producer
        if producer is not None and self._streaming:
            if not writable.called:
                producer.pauseProducing()
                writable.addCallback(lambda _: self._resume(producer))
        elif producer is not None:
            writable.addCallback(lambda _: self._reactor.callLater(0, self._pull, producer))
        writable.addErrback(self._write_failed)

    def writeSequence(self, data: Iterable[bytes]) -> None:  # noqa: N802 - twisted's name
        self.write(b"".join(data))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer
        self._streaming = bool(streaming)
        if not streaming:
            self._reactor.callLater(0, self._pull, producer)

    def unregisterProducer(self) -> None:
        self._producer = None

    def _resume(self, producer: Any) -> None:
        if self._producer is producer:
            producer.resumeProducing()

    def _pull(self, producer: Any) -> None:
        if self._producer is producer:
            producer.resumeProducing()

    def _write_failed(self, failure: Failure) -> None:
        self.lost(failure.value)

    def lost(self, reason: object) -> None:
        """
        The response can no longer be delivered (a write failed, or the relay gave up on the exchange).

        The resource hears it as twisted.web tells of a client that went away: its producer is stopped
        and C{notifyFinish()} fails, so a long poll or an event stream stops instead of holding the
        request (and one of the listener's C{max_concurrent} slots) for good.
        """
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()
        if self.request is not None and not self.request.finished:
            self.request.connectionLost(Failure(ConnectionDone("the relayed response was cut off")))
        if not self.done.called:
            self.done.callback(None)

    def requestDone(self, request: Request) -> None:  # noqa: N802 - twisted's name
        finished = self._response.finish()
        finished.addErrback(
            lambda failure: self.log.info("response cut off: {error}", error=str(failure.value))
        )
        finished.addBoth(lambda _: None if self.done.called else self.done.callback(None))

    def loseConnection(self) -> None:  # noqa: N802 - twisted's name
        self._response.abort()
        if not self.done.called:
            self.done.callback(None)

    def _respondToBadRequestAndDisconnect(self) -> None:  # noqa: N802 - twisted's name
        response = self._response
        if not response.headers_sent:
            response.status_code = 400
            response.headers.clear()
            response.finish(b"Bad request\n").addErrback(lambda _: None)
        if not self.done.called:
            self.done.callback(None)


async def _spool(request: RelayedRequest, spool_size: int) -> Any:
    """The request's body, read to its end: in memory up to C{spool_size} bytes, then in a temporary file."""
    spooled = SpooledTemporaryFile(max_size=spool_size)
    async for chunk in request.body:
        spooled.write(chunk)
    spooled.seek(0)
    return spooled


def resource_app(resource: IResource, *, reactor: Any = None, spool_size: int = 1024 * 1024) -> HttpApp:
    """
    An L{HttpApp} that serves C{resource} as twisted.web would.

    @param spool_size: request bodies up to this size are held in memory, larger ones in a temporary file.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    site = Site(resource, reactor=reactor)
    site.displayTracebacks = False

    async def app(request: RelayedRequest, response: RelayedResponse) -> None:
        content = await _spool(request, spool_size)
        if response.finished:  # the relay gave up while the body was spooled: nobody to answer
            content.close()
            return
        channel = _RelayedChannel(site, request, response, reactor)
        twisted_request = Request(channel)
        channel.request = twisted_request
        response.when_lost().addCallback(channel.lost)
        for name, value in request.headers.items():
            twisted_request.requestHeaders.addRawHeader(name.encode("latin-1"), value.encode("utf-8"))
        twisted_request.content = content
        twisted_request.requestReceived(
            request.method.encode("latin-1"), _local_target(request).encode("latin-1"), b"HTTP/1.1"
        )
        await channel.done

    return app


class _WsgiInput:
    """
    C{wsgi.input} over a streamed body: reads it from a worker thread.

    Unread bytes sit in one C{bytearray} taken from the front, so reading a large body whole (C{read()}) or
    line by line costs time in proportion to its size: appending to and slicing C{bytes} made a whole
    read of 30 MB take ten seconds.
    """

    def __init__(self, body: RequestBody, reactor: Any) -> None:
        self._body = body
        self._reactor = reactor
        self._buffer = bytearray()
        self._no_newline = 0  # how much of the buffer's front is known to hold no newline
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        data: bytes = _call_in_reactor(self._reactor, self._body.read)
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._no_newline = max(0, self._no_newline - size)
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buffer))
        while len(self._buffer) < size and self._fill():
            pass
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else None
        while True:
            newline = self._buffer.find(b"\n", self._no_newline)
            if newline >= 0:
                end = newline + 1
                break
            self._no_newline = len(self._buffer)
            if (limit is not None and len(self._buffer) >= limit) or not self._fill():
                end = len(self._buffer)
                break
        return self._take(end if limit is None else min(end, limit))

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


def _native(text: str) -> str:
    """
    C{text} as PEP 3333 wants it in the environ: its UTF-8 bytes, each as one character (a "native string").

    Applications recover the bytes with C{.encode("latin-1")} (Werkzeug and Django do); the text itself
    failed that for characters past U+00FF and gave the wrong bytes for the others.
    """
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


def _environ(request: RelayedRequest, reactor: Any, spooled: Any = None) -> dict[str, Any]:
    name, port, secure = _server_address(request)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(request.path or "/").decode("latin-1"),
        "QUERY_STRING": _native(request.query),
        "SERVER_NAME": _native(name),
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": request.remote_endpoint.address if request.remote_endpoint else "",
        "REMOTE_PORT": str(request.remote_endpoint.port) if request.remote_endpoint else "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https" if secure else "http",
        "wsgi.input": _WsgiInput(request.body, reactor) if spooled is None else spooled,
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for header, value in request.headers.items():
        if "_" in header:
            # HTTP_X_FORWARDED_PROTO would stand for X_Forwarded_Proto and X-Forwarded-Proto alike, and the
            # one a sender put last would win over the relay's own (as Django, gunicorn and waitress do).
            _log.info(
                "request {request_id}: header {name} dropped for the WSGI application (an underscore in "
                "its name would make it pass for another)",
                request_id=request.id,
                name=header,
            )
            continue
        key = header.upper().replace("-", "_")
        value = _native(value)
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key == "CONTENT_LENGTH":
            environ["CONTENT_LENGTH"] = value
        elif key not in ("HTTP_PROXY",):
            environ["HTTP_" + key] = value
    if (request.body.complete or spooled is not None) and "CONTENT_LENGTH" not in environ:
        environ["CONTENT_LENGTH"] = str(request.body.received)
    return environ


def wsgi_app(
    application: Callable[..., Iterable[bytes]],
    *,
    reactor: Any = None,
    threadpool: Any = None,
    stream_input: bool = False,
    spool_size: int = 1024 * 1024,
) -> HttpApp:
    """
    An L{HttpApp} that runs a WSGI (PEP 3333) application in a thread pool.

    The relay does not pass a request's C{Content-Length} on (the protocol frames bodies itself), and
    bodies over 64 kB arrive streamed. WSGI applications that read only C{CONTENT_LENGTH} bytes (Django
    does) would see such a body as empty, so by default it is spooled first, as waitress does: in memory
    up to C{spool_size}, then in a temporary file, and C{CONTENT_LENGTH} is set.

    Request headers named with an underscore are not passed on: in the environ they would pass for the
    same name with a hyphen (a sender's C{X_Forwarded_Proto} for the relay's C{X-Forwarded-Proto}).

    @param threadpool: where the application runs; the reactor's pool by default.
    @param stream_input: give a streamed body to the application as it arrives instead, without
        C{CONTENT_LENGTH} (C{wsgi.input_terminated} is set: read it to its end), for applications that
        honour that convention (Werkzeug and Flask do) and take uploads too large to spool.
    @param spool_size: spooled bodies up to this size are held in memory, larger ones in a temporary file.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor

    async def app(request: RelayedRequest, response: RelayedResponse) -> None:
        pool = threadpool if threadpool is not None else reactor.getThreadPool()
        spooled: Any = None
        if not stream_input and not request.body.complete:
            spooled = await _spool(request, spool_size)
        try:
            await deferToThreadPool(
                reactor, pool, _run_wsgi, application, request, response, reactor, spooled
            )
        finally:
            if spooled is not None:
                spooled.close()

    return app


def _run_wsgi(
    application: Callable[..., Iterable[bytes]],
    request: RelayedRequest,
    response: RelayedResponse,
    reactor: Any,
    spooled: Any = None,
) -> None:
    """Run one request in a worker thread; every reactor interaction goes through blockingCallFromThread."""
    head: list[Any] = []
    sent = False

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and sent:
            raise exc_info[1].with_traceback(exc_info[2])
        head[:] = [status, headers]
        return send

    def apply_head() -> None:
        status, headers = head
        code, _, reason = status.partition(" ")
        response.status_code = int(code)
        response.status_description = reason or None
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                response.headers.add(name, value)

    def send(data: bytes) -> None:
        nonlocal sent
        if not head:
            raise AssertionError("write() before start_response()")
        if not sent:
            sent = True
            _call_in_reactor(reactor, apply_head)
        if data:
            _call_in_reactor(reactor, response.write, data)

    result = application(_environ(request, reactor, spooled), start_response)
    try:
        for data in result:
            send(data)
        if not sent:
            send(b"")
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    _call_in_reactor(reactor, response.finish)
