"""
The Autobahn client protocol under every connection the client opens, and how it is dialled.

One protocol class serves the control channel, rendezvous and sender connections alike: it completes
the opening handshake, reports a refused upgrade as a L{ConnectError} with the HTTP status, and then
hands messages and the close to an L{IWebSocketReceiver} (a L{HybridWebSocket} or the listener's
control channel). Keeping Autobahn's callbacks here keeps the rest of the package free of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from typing_extensions import override
from zope.interface import Attribute, Interface

from relay.client.errors import ConnectError
from relay.client.options import WebSocketOptions
from relay.wsdata import BoundedPongs, QuietSendData
from relay.wsfast import FastMessageReader


class IWebSocketReceiver(Interface):
    """What an open connection delivers its traffic to."""

    def message_received(payload: bytes, is_binary: bool) -> None:
        """A complete message arrived (text payloads are UTF-8 bytes, already validated)."""

    def connection_closed(was_clean: bool, code: int | None, reason: str | None) -> None:
        """
        The connection is gone.

        @param was_clean: whether the closing handshake completed.
        @param code: the peer's close code, or 1006 when there was no closing handshake.
        """


class IStreamingReceiver(IWebSocketReceiver):
    """
    A receiver that takes messages frame by frame instead of whole.

    Nothing is assembled and no message size limit applies: an HTTP body of any size is one WebSocket
    message on a rendezvous. C{message_received} is never called for such a receiver.
    """

    def message_begin(is_binary: bool) -> None:
        """A message starts."""

    def message_data(payload: bytes) -> None:
        """A piece of the current message (text payloads are UTF-8 bytes, validated as they come)."""

    def message_end() -> None:
        """The current message is complete."""


class IRelayingReceiver(IWebSocketReceiver):
    """
    A receiver that takes messages whole, or frame by frame while its C{streaming} attribute is true.

    While streaming, a message read whole by the fast path (a small frame that came in one read) still
    arrives through C{message_received}; the others come frame by frame, and nothing is assembled. The
    choice is made as each message begins, so one in progress when C{streaming} turns true ends the
    way it began.
    """

    streaming = Attribute("Whether messages that are not read whole come frame by frame now.")

    def message_begin(is_binary: bool) -> None:
        """A message starts (while streaming)."""

    def message_data(payload: bytes) -> None:
        """A piece of the current message (text payloads are UTF-8 bytes, validated as they come)."""

    def message_end() -> None:
        """The current message is complete."""


ReceiverFactory = Callable[["RelayClientProtocol"], IWebSocketReceiver]


def _status_from_line(line: str) -> tuple[int | None, str]:
    parts = line.split(None, 2)
    # Three ASCII digits: int() alone also reads "+404", "4_04" and "0404".
    if len(parts) < 2 or len(parts[1]) != 3 or not (parts[1].isascii() and parts[1].isdigit()):
        return None, line
    return int(parts[1]), parts[2] if len(parts) > 2 else ""


class RelayClientProtocol(BoundedPongs, QuietSendData, WebSocketClientProtocol):  # type: ignore[misc]
    """
    A client WebSocket whose opening result is a L{Deferred} and whose traffic goes to a receiver.

    @ivar opened: fires with the receiver once the upgrade succeeded, or fails with L{ConnectError}.
        Cancelling it aborts the connection attempt.
    @ivar subprotocol: the subprotocol the server selected, if any.
    @ivar response_headers: the 101 response headers (names lower-cased by Autobahn).
    """

    factory: RelayClientFactory

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[IWebSocketReceiver] = Deferred(self._cancel_open)
        self.receiver: IWebSocketReceiver | None = None
        self.subprotocol: str | None = None
        self.response_headers: dict[str, str] = {}
        self._refusal: ConnectError | None = None
        self._reader = FastMessageReader(self, masked=False, binary=True)
        self._streamed: Any = None  # where the frames of the message being read go, if it is streamed

    def can_send(self) -> bool:
        """
        Whether messages still leave.

        Once a close frame came or went, Autobahn drops frames without a word (C{beginMessage},
        C{sendMessageFrame}, C{endMessage}) while the TCP connection may linger for seconds.
        """
        return bool(self.state == self.STATE_OPEN)

    def _cancel_open(self, _: Deferred[IWebSocketReceiver]) -> None:
        if self.transport is not None:
            self.dropConnection(abort=True)

    @override
    def onConnect(self, response: Any) -> None:
        self.subprotocol = response.protocol or None
        self.response_headers = dict(response.headers)

    @override
    def onOpen(self) -> None:
        self.receiver = self.factory.make_receiver(self)
        if not self.opened.called:
            self.opened.callback(self.receiver)

    @override
    def dataReceived(self, data: bytes) -> None:
        # Whole messages to a receiver that takes them whole (control channels, senders and listeners'
        # connections, relayed ones too: the fast path reads only small frames that came whole) are read
        # without Autobahn's frame machinery (relay.wsfast); the rest goes to
        # Autobahn's framework-neutral entry point, not to its Twisted adapter's dataReceived, which
        # formats a debug message per read (a cost that shows on 200 MB transfers).
        if self.receiver is not None and not IStreamingReceiver.providedBy(self.receiver):
            self._reader.data_received(data)
        else:
            self._dataReceived(data)

    @override
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.receiver is not None:
            self.receiver.message_received(payload, isBinary)

    def _streaming(self) -> Any:
        receiver = self.receiver
        if IStreamingReceiver.providedBy(receiver):
            return receiver
        if IRelayingReceiver.providedBy(receiver) and receiver.streaming:  # type: ignore[union-attr]
            return receiver
        return None

    @override
    def onMessageBegin(self, isBinary: bool) -> None:
        self._streamed = streaming = self._streaming()
        if streaming is not None:
            streaming.message_begin(isBinary)
        else:
            super().onMessageBegin(isBinary)

    @override
    def onMessageFrameBegin(self, length: int) -> None:
        if self._streamed is None:
            super().onMessageFrameBegin(length)

    @override
    def onMessageFrameData(self, payload: bytes) -> None:
        streaming = self._streamed
        if streaming is not None:
            streaming.message_data(payload)
        else:
            super().onMessageFrameData(payload)

    @override
    def onMessageFrameEnd(self) -> None:
        if self._streamed is None:
            super().onMessageFrameEnd()

    @override
    def onMessageEnd(self) -> None:
        streaming, self._streamed = self._streamed, None
        if streaming is not None:
            streaming.message_end()
        else:
            super().onMessageEnd()

    @override
    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.receiver is not None:
            self.receiver.connection_closed(wasClean, code, reason)
        elif not self.opened.called:
            failure = self._refusal or ConnectError(None, reason or "connection closed during the handshake")
            self.opened.errback(failure)

    @override
    def processHandshake(self) -> None:
        # Autobahn decodes the answer's head as UTF-8 for a debug line before reading it as latin-1: a
        # non-UTF-8 byte (a latin-1 reason phrase) raised out of dataReceived and the status was lost.
        end = self.data.find(b"\r\n\r\n")
        if end >= 0:
            try:
                self.data[:end].decode("utf-8")
            except UnicodeDecodeError:
                self.http_status_line = self.data[:end].split(b"\r\n", 1)[0].decode("latin-1").strip()
                self.failHandshake("the handshake answer is not UTF-8 text")
                return
        super().processHandshake()

    @override
    def failHandshake(self, reason: str) -> None:
        """Remember the HTTP status of a refused upgrade before Autobahn drops the connection."""
        line = getattr(self, "http_status_line", None)
        if line:
            status, phrase = _status_from_line(line)
            if status is not None and status != 101:
                self._refusal = ConnectError.from_status(status, phrase)
        if self._refusal is None:
            self._refusal = ConnectError(None, reason)
        super().failHandshake(reason)


class RelayClientFactory(WebSocketClientFactory):  # type: ignore[misc]
    """Carries one connection's URL, headers, options and receiver factory to its protocol."""

    protocol = RelayClientProtocol  # type: ignore[assignment]

    def __init__(
        self,
        url: str,
        *,
        reactor: IReactorTime,
        headers: Mapping[str, str],
        subprotocols: Sequence[str],
        options: WebSocketOptions,
        make_receiver: ReceiverFactory,
    ) -> None:
        extra = {name: value for name, value in headers.items() if name.lower() != "user-agent"}
        agents = [value for name, value in headers.items() if name.lower() == "user-agent"]
        super().__init__(
            url=url,
            reactor=reactor,
            headers=extra,
            protocols=list(subprotocols),
            # Autobahn writes its own User-Agent line besides any header: a caller's replaces it.
            useragent=agents[-1] if agents else options.user_agent,
        )
        self.make_receiver = make_receiver
        self.setProtocolOptions(
            openHandshakeTimeout=options.open_timeout,
            closeHandshakeTimeout=options.close_timeout,
            maxMessagePayloadSize=options.max_message_size,
            autoPingInterval=options.ping_interval,
            autoPingTimeout=options.ping_timeout,
        )


def endpoint_for(reactor: Any, url: str, options: WebSocketOptions) -> IStreamClientEndpoint:
    """
    The Twisted endpoint that reaches C{url}: TCP for C{ws}, TLS over TCP for C{wss}.

    The TLS host name (certificate check and SNI) is the URL's host, so rendezvous addresses on another
    host than the control channel are verified for the right name.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host, port, timeout=options.open_timeout)
    if secure:
        endpoint = wrapClientTLS(options.tls_creator(host), endpoint)
    return endpoint


async def open_websocket(
    reactor: Any,
    url: str,
    *,
    options: WebSocketOptions,
    make_receiver: ReceiverFactory,
    headers: Mapping[str, str] | None = None,
    subprotocols: Sequence[str] = (),
) -> IWebSocketReceiver:
    """
    Dial C{url}, complete the WebSocket upgrade and return the receiver built for the connection.

    @raise ConnectError: when the server refuses the upgrade (with its status) or the handshake fails.
    @raise Exception: Twisted's connection errors (refused, DNS, TLS) when no HTTP exchange happened.
    """
    factory = RelayClientFactory(
        url,
        reactor=reactor,
        headers=headers or {},
        subprotocols=subprotocols,
        options=options,
        make_receiver=make_receiver,
    )
    try:
        connected = await endpoint_for(reactor, url, options).connect(factory)
    except ConnectingCancelledError:
        # Endpoints report cancellation their own way; callers see one kind of cancellation.
        raise CancelledError() from None
    return await cast(RelayClientProtocol, connected).opened
