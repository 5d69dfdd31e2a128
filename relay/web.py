"""
The gateway's HTTP server: twisted.web with streamed request bodies and header limits that answer precisely.

twisted.web reads a whole request body into C{request.content} before a resource sees the request. That
is fine for small bodies and for the layers that want the whole body, but a relay must pass a 200 MB
upload through without holding it. So a L{RelaySite} asks its C{stream_policy} once the headers are in:
for requests it says yes to (and whose body is not small enough to just buffer), the resource renders
at once and reads the body through L{RequestBody} as it arrives, pausing the sender's socket when the
other side cannot keep up.

A resource may answer such a request before its body is complete (an error, or a listener that does not
read the upload). Twisted's channel cannot finish a request whose body is still arriving, so
L{RelayRequest.finish} waits: the rest of the body is read and dropped, then the request finishes and the
connection stays usable. A sender that keeps sending past the linger time is disconnected.

Every other body is buffered whole by twisted.web (in memory, or a temporary file beyond 100 KB) before
any resource, token check included, sees the request. The site bounds that: a C{Content-Length} above its
C{max_buffered_body} gets 413 at once, and a chunked body gets 413 as soon as it passes the limit. A
WebSocket upgrade (any request with an C{Upgrade} field) that announces a body gets 400 before a body byte
is read: no upgrade the gateway serves has one, and the body would otherwise be buffered whole first.

Oversized heads get 414 (request line) or 431 (header fields), malformed ones 400, each with a short
body naming the cause and a tracking id, and a log event, instead of twisted's bare 400. The refused
bodies above get the same kind of answer, and the connection is closed after it.

The request and channel that do this are in L{relay.webchannel}; this module holds the site and its limits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.web import http
from twisted.web.resource import IResource
from twisted.web.server import Site
from typing_extensions import override

from relay.firstread import FirstRead
from relay.httphead import RequestHead
from relay.leanchannel import LeanChannel, LeanHandler, lean_request
from relay.logger import Logger
from relay.webchannel import RelayHTTPChannel
from relay.webrequest import DEFAULT_BUFFERED_BODY, RelayRequest, StreamPolicy, Unrouted

DEFAULT_MAX_BUFFERED_BODY = 64 * 1024 * 1024  # the largest max_message_bytes a SOAP binding name may have
DEFAULT_MAX_REQUEST_LINE = 16 * 1024
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_HEADERS = 500


class HeadTaker(Protocol):
    """
    Answers some requests straight from their head, without twisted.web (see L{RelaySite.head_taker}).

    @ivar target_prefix: the targets it may take (L{FirstRead} parses no other head itself).
    """

    target_prefix: bytes

    def take_head(self, channel: FirstRead, head: RequestHead) -> bool:
        """
        Handle the request if it is one it answers, taking the connection (L{FirstRead.release_transport}).

        @return: whether it did; when not, twisted.web handles the request as usual.
        """


class RelaySite(Site):
    """
    The gateway's site.

    @ivar stream_policy: tells, for a request whose headers are in, whether its resource reads the body
        as a stream (the request is then handled at once); C{None}: never.
    @ivar buffered_body: bodies with a C{Content-Length} up to this size are buffered even for streaming
        resources (they fit a control-channel message).
    @ivar max_buffered_body: the largest body buffered whole for a resource that does not stream it (413
        beyond); C{None}: no limit.
    @ivar unrouted: for a request whose headers are in, the refusal it will get because nothing serves it
        (unknown host or name), or C{None}; a request with a body gets it before the body is read.
    @ivar linger_timeout: seconds a sender may keep sending a body that nobody reads after the response.
    @ivar max_request_line: longest request line (414 beyond).
    @ivar max_header_bytes: total size of the header fields (431 beyond).
    @ivar max_headers: number of header fields (431 beyond).
    @ivar head_taker: answers some requests from their head alone, before twisted.web builds anything
        for the connection (the C{$hc} sender and rendezvous upgrades, offered by L{FirstRead});
        C{None}: none, every connection gets a twisted.web channel at once.
    @ivar lean_handler: answers the plain C{GET}s it routes on a L{LeanChannel} instead of twisted.web's
        channel (relayed HTTP requests; L{relay.leanchannel}); C{None}: none.
    @ivar log_target: a request's target as twisted.web's access log may show it (secrets in the query
        hidden); C{None}: as it came.
    """

    logger = Logger()  # HTTPFactory.log is twisted's access-log method
    protocol = RelayHTTPChannel  # type: ignore[assignment]
    requestFactory = RelayRequest  # noqa: N815 - twisted's name

    def __init__(
        self,
        resource: IResource,
        *,
        reactor: IReactorTime | None = None,
        timeout: float = 120.0,
        stream_policy: StreamPolicy | None = None,
        buffered_body: int = DEFAULT_BUFFERED_BODY,
        max_buffered_body: int | None = DEFAULT_MAX_BUFFERED_BODY,
        linger_timeout: float = 10.0,
        max_request_line: int = DEFAULT_MAX_REQUEST_LINE,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_headers: int = DEFAULT_MAX_HEADERS,
    ) -> None:
        # A form body is the listener's to read: twisted.web's parser refused an empty FormData (400) and
        # raised on a name*= field; nothing here reads form fields from request.args.
        super().__init__(resource, timeout=timeout, reactor=reactor, parsePOSTFormSubmission=False)
        self.stream_policy = stream_policy
        self.buffered_body = buffered_body
        self.max_buffered_body = max_buffered_body
        self.unrouted: Unrouted | None = None
        self.linger_timeout = linger_timeout
        self.max_request_line = max_request_line
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.head_taker: HeadTaker | None = None
        self.lean_handler: LeanHandler | None = None
        self.log_target: Callable[[bytes], bytes] | None = None
        self.displayTracebacks = False

    @override
    def buildProtocol(self, addr: Any) -> Any:
        """A L{FirstRead} when a head taker or the lean channel may answer the first request, else twisted.web's channel."""
        if self.head_taker is not None or self.lean_handler is not None:
            return FirstRead(self, addr)
        return self.build_channel(addr)

    def take_lean(self, first: FirstRead, data: bytes) -> bool:
        """
        Give the connection to a L{LeanChannel} if C{data} is one plain head that the lean handler routes.

        @return: whether it did; when not, C{first} hands the connection to twisted.web.
        """
        start = lean_request(self, data)
        if start is None:
            return False
        LeanChannel(self, first.addr).start(first.release_transport(), start)
        return True

    def build_channel(self, addr: Any) -> RelayHTTPChannel:
        """twisted.web's channel for a connection, set up for this site."""
        return super().buildProtocol(addr)  # type: ignore[no-any-return]

    @override
    def log(self, request: http.Request) -> None:
        """
        twisted's access log line, except for requests the relay logged itself.

        A relayed HTTP request gets one line with its tracking id, status, size and client when it
        completes (L{relay.hybrid.httpexchange}); a second line per request in the access log format cost as much
        CPU as relaying a small request's headers.
        """
        if getattr(request, "relay_logged", False):
            return
        shown = self.log_target
        if shown is not None:
            target = shown(request.uri)
            referer = request.getHeader(b"referer")
            shown_referer = shown(referer) if referer is not None else None
            if target is not request.uri or shown_referer is not referer:
                request = _ShownTarget(request, target, shown_referer)  # type: ignore[assignment]
        super().log(request)


class _ShownTarget:
    """
    A request as the access log reads it, with its target as the log may show it (C{log_target}).

    The C{Referer} too: a browser's page opened with a token in its query names that URL in the
    requests it makes next.
    """

    def __init__(self, request: http.Request, uri: bytes, referer: bytes | None) -> None:
        self._request = request
        self.uri = uri
        self._referer = referer

    def getHeader(self, name: bytes) -> bytes | None:  # noqa: N802 - twisted's name
        """The request's header, the C{Referer} as the log may show it."""
        if name.lower() == b"referer":
            return self._referer
        return self._request.getHeader(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)
