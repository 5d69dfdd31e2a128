"""
The gateway's twisted.web request and channel: streamed bodies, bounded heads and bodies, one-send answers.

L{RelayRequest} decides, once a request's headers are in, whether its resource reads the body as a stream
or twisted.web buffers it (up to the site's C{max_buffered_body}), and refuses bodies that nothing would
read before reading them. L{RelayHTTPChannel} answers oversized and malformed heads precisely, and sends
each response head with the first body bytes in one C{send}. The site that ties them to the gateway's
limits is L{relay.web.RelaySite}; their log events carry its namespace (C{relay.web.RelaySite}), as they
did when all three lived in one module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from io import BytesIO
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import NO_BODY_CODES, RESPONSES, HTTPChannel, datetimeToString, parse_qs
from twisted.web.http_headers import Headers
from twisted.web.server import Request
from twisted.web.server import version as server_version
from typing_extensions import override

from relay.errors import ErrorKind, RelayError, new_tracking_id
from relay.httpbody import RequestBody
from relay.httphead import connection_options, valid_host
from relay.idletimer import OneIdleTimer
from relay.writes import plain_socket, write_now

if TYPE_CHECKING:
    from relay.web import RelaySite

StreamPolicy = Callable[[Request], bool]
Unrouted = Callable[[Request], RelayError | None]

DEFAULT_BUFFERED_BODY = 64 * 1024

SERVER_HEADER = b"relay"

_site_log = Logger(namespace="relay.web.RelaySite")
"""Refusals and drops are logged as the site's events, whichever object notices them."""


class RelayRequest(Request):
    """
    A request that can be handled while its body is still arriving.

    @ivar body: the streamed body, or C{None} when twisted.web buffered it in C{content} as usual.
    """

    channel: Any
    body: RequestBody | None = None
    _max_buffered: int | None = None  # the site's C{max_buffered_body}, for a body buffered in C{content}
    _buffered = 0  # body bytes buffered in C{content} so far
    _body_refused = False
    _finish_pending = False
    _linger: IDelayedCall | None = None

    @override
    def setHeader(self, name: str | bytes, value: str | bytes) -> None:
        """
        Name the server as the WebSocket handshakes do: C{relay}, without twisted.web's version.

        twisted.web sets C{Server: TwistedWeb/<version>} on every request before rendering; telling
        scanners the exact server version helps nobody running a relay.
        """
        if value is server_version and (name.lower() in (b"server", "server")):
            value = SERVER_HEADER
        super().setHeader(name, value)

    _extra_fields: bytes = b""
    _when_done: list[Callable[[Failure | None], object]] | None = None

    def when_done(self, callback: Callable[[Failure | None], object]) -> None:
        """
        Call C{callback} once the request is over: C{None} when it finished, else why the connection was lost.

        C{notifyFinish} without its L{Deferred}: the relay's two watchers of every relayed request (the
        exchange and the request counter) cost two Deferreds and their callback runs per request.
        """
        if self._when_done is None:
            self._when_done = []
        self._when_done.append(callback)

    def _done(self, result: Failure | None) -> None:
        callbacks, self._when_done = self._when_done, None
        for callback in callbacks or ():
            try:
                callback(result)
            except Exception:
                _site_log.failure("a request's completion callback failed")

    @override
    def _cleanup(self) -> None:
        super()._cleanup()
        if self._when_done is not None:
            self._done(None)

    def add_fields(self, fields: Sequence[tuple[str, str]]) -> None:
        """
        Add header fields to the response, already checked (token names, no CR, LF or NUL in values).

        On the gateway's channel they go into the response head as they are, encoded once (names are
        ASCII tokens, values UTF-8; L{RelayHTTPChannel.writeHeaders}): twisted.web's C{Headers} would encode
        and sanitize each name and value again, and keep them in a table that only the head is made from
        (a listener's answer has half a dozen fields or more).
        """
        if isinstance(self.channel, HeadHoldingChannel):
            self._extra_fields += "".join([f"{name}: {value}\r\n" for name, value in fields]).encode("utf-8")
        else:
            for name, value in fields:
                self.responseHeaders.addRawHeader(name.encode("ascii"), value.encode("utf-8"))
            self._added_names += tuple(name.encode("ascii") for name, _ in fields)

    def drop_default_fields(self) -> None:
        """Leave out the C{Server} and C{Date} fields twisted.web sets on every response (a relayed one)."""
        headers = self.responseHeaders
        headers.removeHeader(b"server")
        headers.removeHeader(b"date")

    def restore_default_fields(self) -> None:
        """Put back what L{drop_default_fields} left out: the relay answers itself after all."""
        headers = self.responseHeaders
        headers.setRawHeaders(b"server", [SERVER_HEADER])
        headers.setRawHeaders(b"date", [datetimeToString()])

    # The fields L{add_fields} put in C{responseHeaders} (on other sites' channels).
    _added_names: tuple[bytes, ...] = ()

    def clear_fields(self) -> None:
        """
        Drop the fields L{add_fields} added, before the head was sent: an error answers instead.

        That answer is the relay's own, so it says C{Server} and C{Date} as the relay's answers do.
        """
        self._extra_fields = b""
        for name in self._added_names:
            self.responseHeaders.removeHeader(name)
        self.restore_default_fields()

    @override
    def write(self, data: bytes) -> None:
        """Write as twisted.web does; a response head the channel still holds goes out now (one C{send})."""
        channel = self.channel
        if not isinstance(channel, HeadHoldingChannel):  # other sites' plain channels send heads themselves
            super().write(data)
            return
        if not self.startedWriting:
            channel.extra_fields = self._extra_fields
        super().write(data)
        channel.send_response_head()

    def write_whole(self, body: bytes) -> None:
        """
        Write the response with its whole body and a C{Content-Length} for it (the caller then finishes it).

        On the gateway's channels the head and the body go out in one write made here, byte for byte what
        C{setHeader}, twisted.web's C{write} and L{HeadHoldingChannel.writeHeaders} would make: those cost
        each relayed answer more than the write itself. Anything beyond a plain answer (a head already
        sent, C{HEAD}, a status without a body, fields twisted.web adds itself, default fields still to
        come) takes twisted.web's way.
        """
        channel = self.channel
        if (
            not isinstance(channel, HeadHoldingChannel)
            or self.startedWriting
            or self.finished
            or self._disconnected
            or self.method == b"HEAD"
            or self.code in NO_BODY_CODES
            or getattr(self, "_default_fields", False)  # a lean request's Server and Date, made when written
            or self.lastModified is not None
            or self.etag is not None
            or self.cookies
            or self._encoder is not None
            or self._inFakeHead
            or self.responseHeaders.hasHeader(b"content-length")
        ):
            self.setHeader(b"content-length", b"%d" % len(body))
            if body:
                self.write(body)
            return
        self.startedWriting = 1
        self.sentLength = len(body)
        fields = [
            b"%s: %s\r\n" % (name, value)
            for name, values in self.responseHeaders.getAllRawHeaders()
            for value in values
        ]
        head = b"%s %d %s\r\n%sContent-Length: %d\r\n%s\r\n" % (
            self.clientproto,
            self.code,
            self.code_message,
            b"".join(fields),
            len(body),
            self._extra_fields,
        )
        channel.write(head + body)

    @override
    def gotLength(self, length: int | None) -> None:
        """
        Decide, with the headers in, whether to handle the request now and stream its body.

        Refuse, before a body byte is read, an upgrade with a body (400), a chunked or larger than
        C{buffered_body} body for a request nothing serves (the site's C{unrouted} refusal: an unknown host
        or name), and a body to be buffered whose C{Content-Length} is above C{max_buffered_body} (413).
        """
        site = self.channel.site
        gateway = isinstance(self.channel, RelayHTTPChannel)  # other sites' plain channels: as twisted does
        if gateway and length != 0 and self.requestHeaders.hasHeader(b"upgrade"):
            self._refuse_body(
                ErrorKind.BAD_REQUEST, "A WebSocket upgrade request must not have a body", length
            )
            return
        policy: StreamPolicy | None = getattr(site, "stream_policy", None)
        buffered = getattr(site, "buffered_body", DEFAULT_BUFFERED_BODY)
        if policy is not None and length != 0 and (length is None or length > buffered):
            self._read_request_line()
            if policy(self):
                self.content = BytesIO()
                self.body = RequestBody(self, length)
                self.process()
                self._after_handling()
                return
        unrouted: Unrouted | None = getattr(site, "unrouted", None) if gateway else None
        if unrouted is not None and (length is None or length > buffered):  # small ones: read, keep alive
            self._read_request_line()
            error = unrouted(self)
            if error is not None:  # nothing would read the body: say so before it is read
                self._refuse_body(error.kind, error.message, length)
                return
        limit: int | None = getattr(site, "max_buffered_body", None) if gateway else None
        if limit is not None and length is not None and length > limit:
            self._refuse_body(
                ErrorKind.PAYLOAD_TOO_LARGE, f"The request body is larger than {limit} bytes", length
            )
            return
        self._max_buffered = limit
        super().gotLength(length)

    def _refuse_body(self, kind: ErrorKind, message: str, length: int | None) -> None:
        """Answer with an error before (the rest of) the body is read, and close the connection."""
        self._body_refused = True
        self._read_request_line()
        self.channel.refuse_body(self, kind, message, length)

    def _read_request_line(self) -> None:
        # What requestReceived() would set; the channel keeps the request line until the body is read.
        channel = self.channel
        self.method, self.uri, self.clientproto = channel._command, channel._path, channel._version
        path, _, query = self.uri.partition(b"?")
        self.path = path
        # twisted.web's parse_qs, as requestReceived uses: urllib's raises on escapes such as %C3%A9
        self.args = parse_qs(query, 1) if query else {}

    def _after_handling(self) -> None:
        """An upgrade took the connection over (WebSocket): the channel's idle timer has no more use."""
        channel = getattr(self, "channel", None)  # twisted drops it once a request is finished
        if isinstance(channel, RelayHTTPChannel) and channel.transport is None:
            channel.taken_over()

    @override
    def handleContentChunk(self, data: bytes) -> None:
        """Stream the chunk, or buffer it as twisted.web does, up to the site's C{max_buffered_body}."""
        if self.body is not None:
            self.body.feed(data)
            return
        if self._body_refused:
            return  # the rest of what the chunked decoder had in hand
        limit = self._max_buffered
        if limit is not None:
            self._buffered += len(data)
            if self._buffered > limit:  # only a chunked body: twisted reads no more than a Content-Length
                self._refuse_body(
                    ErrorKind.PAYLOAD_TOO_LARGE, f"The request body is larger than {limit} bytes", None
                )
                return
        super().handleContentChunk(data)

    @override
    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """The body is complete: end the stream of a request already being handled, or handle it now."""
        if self.body is None:
            if not self._body_refused:  # a chunked body can be refused in the read that also ends it
                super().requestReceived(command, path, version)
                self._after_handling()
            return
        self.body.end()
        if self._finish_pending:
            self._finish_pending = False
            self._stop_linger()
            super().finish()

    @override
    def finish(self) -> None:
        """Finish now, or once the rest of a streamed body has been read and dropped."""
        body = self.body
        if body is not None and not body.complete and not self._disconnected:
            if not self._finish_pending:
                self._finish_pending = True
                self._end_response_now()
                body.discard()
                linger = float(getattr(self.channel.site, "linger_timeout", 10.0))
                reactor: IReactorTime = self.channel.site.reactor
                self._linger = reactor.callLater(linger, self._linger_expired)
            return
        super().finish()

    def _end_response_now(self) -> None:
        """
        Send the whole response now, its last chunk included, while twisted.web's finish waits for the body.

        A client that stops uploading when an answer comes early (curl does) waits for the answer's end.
        """
        if not self.startedWriting:
            self.write(b"")
        if self.chunked:
            self.channel.write(b"0\r\n\r\n")
            self.chunked = 0  # twisted.web's finish, once the body is read, writes no second end

    def _linger_expired(self) -> None:
        self._linger = None
        channel = self.channel
        if channel is not None and channel.transport is not None:
            _site_log.info(
                "dropping {peer}: it kept sending a request body for {timeout}s after the response",
                peer=str(channel.transport.getPeer()),
                timeout=getattr(channel.site, "linger_timeout", 10.0),
            )
            channel.transport.abortConnection()

    def _stop_linger(self) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None

    @override
    def connectionLost(self, reason: Failure) -> None:
        """Tell a streamed body's consumer that the rest will never come."""
        self._stop_linger()
        if self.body is not None:
            self.body.fail(reason)
        super().connectionLost(reason)
        if self._when_done is not None:
            self._done(reason)


class HeadHoldingChannel:
    """
    The response side of the gateway's HTTP channels: the head held for the first body bytes, one C{send}.

    Shared by twisted.web's channel (L{RelayHTTPChannel}) and the lean one (L{relay.leanchannel}); a
    L{RelayRequest} on either sends its head with its first bytes and its checked fields as they are.
    """

    transport: Any
    extra_fields: bytes = b""  # a relayed response's own header lines (L{RelayRequest.add_fields})
    _response_head: bytes | None = None

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:  # noqa: N802 - twisted.web calls it
        """
        Make the response head one C{bytes} and hold it for the first body bytes (L{write}).

        twisted.web hands the transport a list of four pieces per header line, which the transport checks
        one by one and queues for the reactor's next turn, bypassing L{write}: a tenth of the gateway's
        CPU per relayed request. The request sends a head left alone (no body yet, or none at all) as soon
        as its C{write} returns (L{RelayRequest.write}).
        """
        if not isinstance(headers, Headers):
            HTTPChannel.writeHeaders(self, version, code, reason, headers)  # type: ignore[arg-type]
            return
        lines = [b"%s %s %s\r\n" % (version, code, reason)]
        lines += [
            b"%s: %s\r\n" % (name, value) for name, values in headers.getAllRawHeaders() for value in values
        ]
        lines += (self.extra_fields, b"\r\n")
        self.extra_fields = b""
        self._response_head = b"".join(lines)

    def send_response_head(self) -> None:
        """Send a response head that no body bytes followed."""
        if self._response_head is not None:
            self.write(b"")

    def write(self, data: bytes) -> None:
        """
        Response bytes go to the kernel at once when nothing is queued (L{relay.writes.write_now}).

        A response head the channel holds (L{writeHeaders}) goes first, in the same C{send}. The gateway
        answers relayed requests in batches (every response a listener's control channel delivered in
        one read); with Twisted's queued writes the first sender heard nothing until the whole batch was
        handled.
        """
        head = self._response_head
        if head is not None:
            self._response_head = None
            data = head + data
        transport = self.transport
        if transport is not None and data:
            write_now(transport, data, plain_socket(transport))

    def writeSequence(self, iovec: list[bytes]) -> None:  # noqa: N802 - twisted.web calls it
        """A response head and its first bytes, written as one (L{write})."""
        self.write(b"".join(iovec))


class RelayHTTPChannel(OneIdleTimer, HeadHoldingChannel, HTTPChannel):
    """
    An HTTP/1.1 connection with precise refusals of oversized heads and pausable body reads.

    @ivar when_lost: callables run once when the connection is gone (the HTTP relay closes the sender's
        rendezvous sockets this way).
    @ivar affinity: per-connection state other layers keep (the HTTP relay's reusable rendezvous).
    @ivar gone: whether the connection was lost (a rendezvous is no longer kept for it).
    """

    site: RelaySite
    transport: Any

    def __init__(self) -> None:
        super().__init__()
        self.when_lost: list[Callable[[], None]] = []
        self.affinity: dict[Any, Any] = {}
        self._body_paused = False
        self._in_head = False
        self._head_bytes = 0
        self._head_count = 0
        self._refused = False
        self._host: Any = None
        self._pipeline_held = False  # pipelined requests wait for the sender to read (requestDone)
        self.gone = False

    @override
    def getHost(self) -> Any:
        """
        The connection's local address, read once.

        twisted.web asks for it with every request (C{Request.__init__}), and the TCP transport makes a
        C{getsockname} system call and a new address object each time; it cannot change.
        """
        host = self._host
        if host is None:
            host = self._host = super().getHost()
        return host

    @override
    def connectionMade(self) -> None:
        """Apply the site's limits, which twisted's own checks must never undercut."""
        site = self.site
        self.MAX_LENGTH = max(site.max_request_line, site.max_header_bytes) + 2
        self.totalHeadersSize = site.max_request_line + site.max_header_bytes + 4
        self.maxHeaders = site.max_headers + 1
        super().connectionMade()

    @override
    def lineReceived(self, line: bytes) -> None:
        """Count the head before twisted parses it, and refuse what is too large."""
        if self._refused:
            return
        if not self._in_head:
            if line:
                if len(line) > self.site.max_request_line:
                    self._refuse(ErrorKind.URI_TOO_LONG, "The request line is too long")
                    return
                self._in_head = True
                self._head_bytes = 0
                self._head_count = 0
        elif line:
            self._head_bytes += len(line) + 2
            self._head_count += 1
            if self._head_bytes > self.site.max_header_bytes or self._head_count > self.site.max_headers:
                self._refuse(
                    ErrorKind.HEADERS_TOO_LARGE,
                    f"Request header fields are too large (at most {self.site.max_header_bytes} bytes "
                    f"in {self.site.max_headers} fields)",
                )
                return
        else:
            self._in_head = False
        super().lineReceived(line)

    @override
    def allHeadersReceived(self) -> None:
        """
        Take a request target in absolute form as origin form, its authority as the host (RFC 9112 §3.2.2).

        A server must accept C{GET http://host/path}; twisted.web took the whole URL for the path (404).

        An HTTP/1.1 request without C{Host}, any request with more than one or with an invalid one, is refused
        with 400 (RFC 9112 §3.2): it was routed as if it named no host (a 404, or a wildcard namespace
        served it). A target's authority replaces C{Host}, so it must be a valid host and port as well.
        """
        if self.requests:
            headers = self.requests[-1].requestHeaders
            hosts = headers.getRawHeaders(b"host")  # values stripped of spaces and tabs by twisted.web
            if hosts is None:
                if self._version == b"HTTP/1.1":
                    self._refuse(ErrorKind.BAD_REQUEST, "An HTTP/1.1 request must have a Host header field")
                    return
            elif len(hosts) > 1:
                self._refuse(ErrorKind.BAD_REQUEST, "A request must not have more than one Host header field")
                return
            elif not valid_host(hosts[0]):
                self._refuse(ErrorKind.BAD_REQUEST, "The Host header field is not a valid host and port")
                return
            scheme, separator, rest = self._path.partition(b"://")
            if separator and scheme.lower() in (b"http", b"https"):
                end = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
                authority, path = rest[:end].rpartition(b"@")[2], rest[end:]
                if not valid_host(authority):  # it replaces the Host field: the same rule holds
                    self._refuse(
                        ErrorKind.BAD_REQUEST, "The request target's host is not a valid host and port"
                    )
                    return
                self._path = path if path.startswith(b"/") else b"/" + path
                if end:
                    headers.setRawHeaders(b"host", [authority])
        super().allHeadersReceived()

    @override
    def allContentReceived(self) -> None:
        """Nothing more for a request refused with its head (L{allHeadersReceived}): it is never handled."""
        if not self._refused:
            super().allContentReceived()

    @override
    def checkPersistence(self, request: Any, version: bytes) -> bool:
        """
        Close after the answer, and say so, when C{Connection} lists C{close} anywhere (RFC 9110 §7.6.1).

        twisted.web splits the first C{Connection} field on spaces, so C{close, TE} or C{close,TE} kept the
        connection open and the answer did not say C{Connection: close}.
        """
        if version == b"HTTP/1.1" and asks_to_close(request.requestHeaders.getRawHeaders(b"connection")):
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            return False
        return bool(super().checkPersistence(request, version))

    @override
    def lineLengthExceeded(self, line: bytes) -> None:
        """A line without end that is longer than any allowed one."""
        if self._in_head:
            self._refuse(ErrorKind.HEADERS_TOO_LARGE, "A request header field is too large")
        else:
            self._refuse(ErrorKind.URI_TOO_LONG, "The request line is too long")

    @override
    def rawDataReceived(self, data: bytes) -> None:
        """Ignore whatever follows a refusal."""
        if not self._refused:
            super().rawDataReceived(data)

    @override
    def _respondToBadRequestAndDisconnect(self) -> None:
        """twisted.web's answer to malformed requests, with a body, a tracking id and a log event."""
        self._refuse(ErrorKind.BAD_REQUEST, "Malformed HTTP request")

    def refuse_body(self, request: RelayRequest, kind: ErrorKind, message: str, length: int | None) -> None:
        """
        Refuse C{request} for its body (L{RelayRequest.gotLength}), reading no more of the connection.

        @param length: the announced C{Content-Length}, C{None} for a chunked body.
        """
        method, path = request.method.decode("latin-1"), request.path.decode("latin-1")[:200]
        self._refuse(
            kind, message, f"{method} {path} (body unread)", method=method, path=path, content_length=length
        )

    def _refuse(self, kind: ErrorKind, message: str, what: str = "a request", **fields: Any) -> None:
        """Log, answer with the cause and a tracking id, and close the connection (once)."""
        if self._refused:
            return
        tracking_id = new_tracking_id()
        peer = str(self.transport.getPeer()) if self.transport is not None else "-"
        _site_log.info(
            "refused {what} from {peer}: {kind} {reason}",
            what=what,
            peer=peer,
            kind=kind.name,
            reason=message,
            tracking_id=tracking_id,
            **fields,
        )
        self._refused = True
        self.setRawMode()
        if self.requests and self.requests[-1].startedWriting:
            # A response is under way: a status line now would corrupt it.
            self.transport.abortConnection()
            return
        status = kind.status
        body = (RelayError(kind, message).describe(tracking_id) + "\n").encode("utf-8")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nServer: %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, _phrase(status), SERVER_HEADER, len(body), body)
        )
        self.loseConnection()

    @override
    def _send100Continue(self) -> None:
        """Only while no response has started (a request handled early may have been refused already)."""
        if self._refused or (self.requests and self.requests[-1].startedWriting):
            return
        super()._send100Continue()

    @property
    def writing_paused(self) -> bool:
        """Whether the sender's socket buffer is full (responses are waiting for it to drain)."""
        return bool(self._waitingForTransport)

    def pause_body(self) -> None:
        """Stop reading from the sender: the body's consumer is full."""
        if not self._body_paused:
            self._body_paused = True
            self._networkProducer.pauseProducing()
            self.hold_idle()

    def resume_body(self) -> None:
        """Read the body again."""
        if self._body_paused:
            self._body_paused = False
            self.release_idle()
            if not self._waitingForTransport and not self._handlingRequest:
                self._networkProducer.resumeProducing()

    @override
    def pauseProducing(self) -> None:
        """
        The sender's socket is full: pause the answer's producer, and stop reading the sender.

        twisted.web kept reading while a request was in hand, and buffered what came without a bound once
        its socket was full (its read-ahead limit only counts while the socket is not): a sender that
        took none of a download and kept sending had all of it held.
        """
        self._waitingForTransport = True
        if self._requestProducer is not None:
            self._requestProducer.pauseProducing()
        if self.transport is not None:  # else an upgrade took the connection over: its protocol reads
            self._networkProducer.pauseProducing()

    @override
    def resumeProducing(self) -> None:
        """
        The sender drained our responses: the requests it pipelined meanwhile are read, then the socket.

        Reading resumes unless a body's consumer still holds the sender back, or a request in hand has
        as much read ahead as twisted.web buffers (C{_optimisticEagerReadSize}).
        """
        self._waitingForTransport = False
        if self._requestProducer is not None:
            self._requestProducer.resumeProducing()
        if self.transport is None:
            return  # an upgrade took the connection over (it stays the transport's producer): not ours
        if self._pipeline_held:
            self._pipeline_held = False
            self._handlingRequest = False
            data = b"".join(self._dataBuffer)
            self._dataBuffer = []
            self.setLineMode(data)
            if self.transport is None or self._waitingForTransport:
                return  # gone, or the next answer filled the socket again
        if self._body_paused:
            return
        if not self._handlingRequest or sum(map(len, self._dataBuffer)) <= self._optimisticEagerReadSize:
            self._networkProducer.resumeProducing()

    @override
    def requestDone(self, request: Any) -> None:
        """
        A request finished; its body pause (if any) ends with it.

        When its answer left the sender's socket full, the requests the sender pipelined behind it wait
        until it reads (L{resumeProducing}): twisted.web went on to them at once, and each answer was
        queued in the gateway, however many a sender that reads nothing had sent ahead.
        """
        self._body_paused = False
        self._idle_held = False
        if not (self._waitingForTransport and self.persistent and any(self._dataBuffer)):
            super().requestDone(request)
            return
        held, self._dataBuffer = self._dataBuffer, []
        super().requestDone(request)  # line mode, with nothing to parse yet
        self._handlingRequest = True  # whatever else arrives is held with them, as while one is in hand
        self.setRawMode()
        self._dataBuffer = held + self._dataBuffer
        self._pipeline_held = True

    @override
    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Run the C{when_lost} callbacks after the requests learnt about the loss."""
        super().connectionLost(reason)
        self.gone = True
        self.stop_idle_timer()
        callbacks, self.when_lost = self.when_lost, []
        for callback in callbacks:
            callback()


def asks_to_close(values: Sequence[bytes] | None) -> bool:
    """Whether C{Connection} field values list the option C{close} (L{connection_options}' reading)."""
    if not values:
        return False
    return "close" in connection_options(value.decode("latin-1") for value in values)


_PHRASES = {
    400: b"Bad Request",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}


def _phrase(status: int) -> bytes:
    """The reason phrase of a refusal written without twisted.web (RFC 9110's names first)."""
    return _PHRASES.get(status) or RESPONSES.get(status) or b"Error"
