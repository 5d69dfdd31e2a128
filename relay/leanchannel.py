"""
A lean HTTP/1.1 channel for plain requests that a handler answers through a twisted.web request.

twisted.web's channel parses a head line by line (several calls per field), builds its request through a
body-length negotiation, looks the resource up in the site's tree and keeps a queue of requests per
connection: about two thirds of what twisted.web costs a relayed request (C{benchmarks/webcost.py}). On a
keep-alive connection whose requests are plain C{GET}s, L{LeanChannel} reads each head with the strict
reader (L{relay.httphead.read_head}) and gives it to its handler, which answers through a
L{LeanRequest}: a L{RelayRequest} built from the head, so the response (status line, fields, framing,
C{HEAD}, the access log) is twisted.web's own.

It hands the connection to twisted.web's channel, with every byte not yet handled, as soon as a head is
anything else: not plain (a body, C{Expect}, a repeated field, another method or version, pipelined
bytes after it), not taken by the handler, or asking to close (C{Connection} other than C{keep-alive}).
twisted.web then answers from there as if it had had the connection from the start; the lean channel only
ever had one request at a time, and nothing of it is left. Its idle timeout is twisted.web's: the
channel hands over and twisted.web times the connection out, with its log line.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString, parse_qs
from twisted.web.http_headers import Headers

from relay.firstread import attach
from relay.httphead import RequestHead, read_head
from relay.idletimer import OneIdleTimer
from relay.webchannel import SERVER_HEADER, HeadHoldingChannel
from relay.webrequest import RelayRequest

if TYPE_CHECKING:
    from relay.web import RelaySite

_PENDING_LIMIT = 64 * 1024
"""Bytes read ahead of a request in hand before the channel stops reading (a pipelining sender)."""


class LeanHandler(Protocol):
    """Answers some plain heads (L{LeanChannel}); the site's C{lean_handler}."""

    def lean_route(self, head: RequestHead) -> Any:
        """
        What will answer C{head} on the lean channel (passed back to L{answer}), or C{None}.

        Called before the request exists: C{None} leaves the request (and the connection) to twisted.web.
        """

    def answer(self, request: LeanRequest, route: Any) -> None:
        """Answer C{request} (its response goes out through twisted.web's request methods)."""


class LeanStart(NamedTuple):
    """A request the lean channel serves: its head, the handler and the handler's route for it."""

    head: RequestHead
    handler: LeanHandler
    route: Any


def lean_request(site: RelaySite, data: bytes) -> LeanStart | None:
    """
    What serves C{data} on the lean channel: one plain head that the site's lean handler routes.

    C{None} leaves C{data} to twisted.web's channel: anything else, or no handler (none while the
    gateway stops, so that twisted.web answers 503).
    """
    handler = site.lean_handler
    if handler is None:
        return None
    head = lean_head(data, site)
    if head is None:
        return None
    route = handler.lean_route(head)
    return None if route is None else LeanStart(head, handler, route)


def lean_head(data: bytes, site: RelaySite) -> RequestHead | None:
    """The plain head C{data} holds, alone, if the lean channel may serve it; else C{None}."""
    if not data.startswith(b"GET /"):
        return None
    head = read_head(
        data,
        max_request_line=site.max_request_line,
        max_header_bytes=site.max_header_bytes,
        max_headers=site.max_headers,
    )
    if head is None:
        return None
    for name, values in head.headers:
        # A "close" option among any others is the gateway's twisted.web channel's to honour (it closes after
        # the answer and says so: RelayHTTPChannel.checkPersistence); only a plain keep-alive is lean
        if name == b"connection" and values[0].strip().lower() != b"keep-alive":
            return None
    return head


class LeanRequest(RelayRequest):
    """A request made from a plain head, without twisted.web's parser (see the module docstring)."""

    def __init__(self, channel: LeanChannel, head: RequestHead) -> None:
        super().__init__(channel, False)
        self.method = head.method
        self.uri = target = head.target
        self.clientproto = head.version
        path, _, query = target.partition(b"?")
        self.path = path
        self.args = parse_qs(query, 1) if query else {}
        headers = self.requestHeaders
        for name, values in head.headers:
            headers.setRawHeaders(name, values)
        self.content = BytesIO()

    _default_fields = True

    def run(self, handler: LeanHandler, route: Any) -> None:
        """
        What twisted.web's C{process} does before the resource renders, but the default fields.

        C{Server} and C{Date} are put first in the head when it is written (L{write}) unless a relayed
        answer dropped them (L{drop_default_fields}): made and then removed, they cost every relayed
        request a date string and four header-table operations.
        """
        self.site = self.channel.site
        self.prepath = []
        self.postpath = []
        try:
            handler.answer(self, route)
        except BaseException:
            self.processingFailed(Failure())

    def drop_default_fields(self) -> None:
        """A relayed answer has neither C{Server} nor C{Date}: they are never made."""
        self._default_fields = False

    def restore_default_fields(self) -> None:
        """The relay answers itself after all: its head gets C{Server} and C{Date} when it is written."""
        self._default_fields = True

    def write(self, data: bytes) -> None:
        """The head gets twisted.web's default fields first, as C{process} would have set them."""
        if self._default_fields and not self.startedWriting:
            self._default_fields = False
            fields = Headers()
            fields.setRawHeaders(b"Server", [SERVER_HEADER])
            fields.setRawHeaders(b"Date", [datetimeToString()])
            for name, values in self.responseHeaders.getAllRawHeaders():
                fields.setRawHeaders(name, values)
            self.responseHeaders = fields
        super().write(data)


class LeanChannel(OneIdleTimer, HeadHoldingChannel, TwistedProtocol):
    """One keep-alive connection's plain requests, one at a time (see the module docstring)."""

    timeOut: float | None = None  # noqa: N815 - OneIdleTimer's (twisted's) name

    def __init__(self, site: RelaySite, addr: Any) -> None:
        self.site = self.factory = site
        self._addr = addr
        self._request: LeanRequest | None = None
        self._pending = b""
        self._peer: Any = None
        self._host: Any = None
        self._secure = False
        self._request_producer: Any = None
        self._write_blocked = False
        self._reading_paused = False

    # -- the connection ------------------------------------------------------------------------------

    def start(self, transport: Any, first: LeanStart) -> None:
        """Take the connection from L{relay.firstread.FirstRead} with its first request."""
        attach(transport, self)
        self._begin(first)

    def connectionMade(self) -> None:
        """Be told when writes back up, so that a sender that does not read is not read either."""
        self._peer = self.transport.getPeer()
        self._host = self.transport.getHost()
        self._secure = ISSLTransport(self.transport, None) is not None
        self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        """A request head, or bytes read ahead of the request in hand."""
        if self._request is not None:
            self._pending += data
            if len(self._pending) > _PENDING_LIMIT:
                self._update_reading()
            return
        data = self._pending + data if self._pending else data
        self._pending = b""
        start = lean_request(self.site, data)
        if start is None:
            self._hand_over().dataReceived(data)
            return
        self._begin(start)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Tell the request in hand."""
        self.stop_idle_timer()
        request, self._request = self._request, None
        if request is not None:
            request.connectionLost(reason)

    def _begin(self, start: LeanStart) -> None:
        self.setTimeout(None)  # a request in hand: its own deadlines apply
        request = self._request = LeanRequest(self, start.head)
        self._update_reading()
        request.run(start.handler, start.route)

    def _hand_over(self) -> Any:
        """twisted.web's channel takes the connection (as if it had had it from the start); it is returned."""
        self.stop_idle_timer()
        transport, self.transport = self.transport, None
        transport.unregisterProducer()
        if self._reading_paused:
            self._reading_paused = False
            transport.resumeProducing()
        channel = self.site.build_channel(self._addr)
        attach(transport, channel)
        return channel

    def timeoutConnection(self) -> None:  # noqa: N802 - OneIdleTimer's (twisted's) name
        """Idle too long: twisted.web's channel times the connection out, with its log line."""
        if self.transport is not None:
            self._hand_over().timeoutConnection()

    def callLater(self, delay: float, call: Callable[..., Any], *args: Any) -> Any:  # noqa: N802
        """The site's reactor's (for L{OneIdleTimer})."""
        return self.site.reactor.callLater(delay, call, *args)

    # -- what twisted.web's request asks of its channel ------------------------------------------------

    def getPeer(self) -> Any:  # noqa: N802 - twisted.web's names, here and below
        """The sender's address, read once."""
        return self._peer

    def getHost(self) -> Any:  # noqa: N802
        """The gateway's address, read once."""
        return self._host

    def isSecure(self) -> bool:  # noqa: N802
        """Whether the connection is TLS (twisted.web's test, made once)."""
        return self._secure

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """A response's producer (a relayed download): paused while the sender's socket is full."""
        self._request_producer = producer
        if self._write_blocked:
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        """The response's producer is done."""
        self._request_producer = None

    @property
    def writing_paused(self) -> bool:
        """Whether the sender's socket buffer is full."""
        return self._write_blocked

    def requestDone(self, request: Any) -> None:  # noqa: N802
        """The response is complete: the next request, or the idle timeout."""
        if request is not self._request:
            return
        self._request = None
        self._request_producer = None
        if self.transport is None:
            return
        self._update_reading()
        pending, self._pending = self._pending, b""
        if pending:
            self.dataReceived(pending)
        else:
            self.setTimeout(self.site.timeOut)

    def loseConnection(self) -> None:  # noqa: N802
        """Close the connection once what was written is sent."""
        if self.transport is not None:
            self.transport.loseConnection()

    # -- back-pressure: the transport's producer ---------------------------------------------------------

    def pauseProducing(self) -> None:
        """The sender's socket is full: stop the response's producer and stop reading requests."""
        self._write_blocked = True
        if self._request_producer is not None:
            self._request_producer.pauseProducing()
        self._update_reading()

    def resumeProducing(self) -> None:
        """The sender's socket drained: resume the response's producer and reading."""
        self._write_blocked = False
        if self._request_producer is not None:
            self._request_producer.resumeProducing()
        self._update_reading()

    def stopProducing(self) -> None:
        """The connection is going: its loss tells the request."""

    def _update_reading(self) -> None:
        paused = self._write_blocked or (self._request is not None and len(self._pending) > _PENDING_LIMIT)
        if paused != self._reading_paused and self.transport is not None:
            self._reading_paused = paused
            if paused:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()
