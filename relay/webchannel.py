"""
The gateway's twisted.web channel: bounded heads and bodies, precise refusals, one-send answers.

L{RelayHTTPChannel} answers oversized and malformed heads precisely, and sends each response head with the
first body bytes in one C{send} (L{HeadHoldingChannel}, shared with the lean channel). Its requests are
L{relay.webrequest.RelayRequest}s. The site that ties them to the gateway's limits is
L{relay.web.RelaySite}; their log events carry its namespace (C{relay.web.RelaySite}), as they did when
all three lived in one module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.http_headers import Headers
from typing_extensions import override

from relay.errors import ErrorKind, RelayError, new_tracking_id
from relay.httphead import connection_options, valid_host
from relay.idletimer import OneIdleTimer
from relay.logger import Logger
from relay.writes import plain_socket, write_now

if TYPE_CHECKING:
    from relay.web import RelaySite
    from relay.webrequest import RelayRequest

SERVER_HEADER = b"relay"

_site_log = Logger(namespace="relay.web.RelaySite")
"""Refusals and drops are logged as the site's events, whichever object notices them."""


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
