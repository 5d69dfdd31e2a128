"""
The gateway's twisted.web request: streamed bodies, bounded buffered ones, whole answers in one write.

L{RelayRequest} decides, once a request's headers are in, whether its resource reads the body as a stream
or twisted.web buffers it (up to the site's C{max_buffered_body}), and refuses bodies that nothing would
read before reading them. On the gateway's channels (L{relay.webchannel}) its response head goes out with
its first body bytes, and a whole answer as one write (L{RelayRequest.write_whole}).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from io import BytesIO
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.web.http import NO_BODY_CODES, datetimeToString, parse_qs
from twisted.web.server import Request
from twisted.web.server import version as server_version
from typing_extensions import override

from relay.errors import ErrorKind, RelayError
from relay.httpbody import RequestBody
from relay.webchannel import SERVER_HEADER, HeadHoldingChannel, RelayHTTPChannel, _site_log

StreamPolicy = Callable[[Request], bool]
Unrouted = Callable[[Request], RelayError | None]

DEFAULT_BUFFERED_BODY = 64 * 1024


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

    # Server and Date still to be made as the head is written (a lean request's: L{relay.leanchannel}).
    _default_fields = False
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
            or self._default_fields
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
