"""
The client end of the C{$wcf} WebSocket channel, shared by service hosts, channel factories and the bridge.

L{connect} opens one WebSocket (subprotocol C{soap}, token in the C{ServiceBusAuthorization} header) through
an endpoint, so tests can run it over in-memory transports; its Deferred fires once the handshake is done,
or fails with L{HandshakeRefused} carrying the gateway's status and reason. L{SoapClientProtocol} hands
every text frame to its owner (an L{IChannelOwner}) and renews the connection's token before it lapses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.python.failure import Failure
from typing_extensions import override
from zope.interface import Interface

from bindings.addressing import new_message_id
from bindings.control import renew_token_envelope
from bindings.credentials import SasCredentials, ServiceAddress
from bindings.settings import REQUEST_REPLY, delivery_cap
from relay.logger import Logger
from relay.writes import WriteGate
from relay.wsdata import BoundedPongs, QuietSendData
from relay.wsfast import FastMessageReader
from relay.wsframes import masked_frame

SUBPROTOCOL: Final = "soap"
TOKEN_HEADER: Final = "ServiceBusAuthorization"  # noqa: S105 - a header name
PERMANENT_STATUSES: Final = frozenset({400, 401, 403, 404})
HEARTBEAT_INTERVAL: Final = 5.0
"""
Seconds between unsolicited pongs while the owner reads nothing (RFC 6455 5.5.3: a one-way heartbeat).

The gateway's pings wait unread then; it takes what it hears meanwhile as a sign of life instead of the
pong (L{bindings.wcf.WcfProtocol.onAutoPingTimeout}). Well within its pong timeout (twice its
C{control_ping_interval}, 60 s by default).
"""

EndpointFactory = Callable[[ServiceAddress], IStreamClientEndpoint]


class HandshakeRefused(Exception):
    """
    The gateway refused the WebSocket upgrade, or the connection ended before it opened.

    @ivar status: the HTTP status of the refusal, or C{None} when the connection failed.
    @ivar reason: the gateway's reason phrase (names the cause and a tracking id) or the close reason.
    """

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(f"{status} {reason}" if status is not None else reason)
        self.status = status
        self.reason = reason

    @property
    def permanent(self) -> bool:
        """Whether trying again cannot help (bad request, token, name); a full name may free up later."""
        return self.status in PERMANENT_STATUSES and "quota" not in self.reason.lower()


class IChannelOwner(Interface):
    """Whoever uses one client WebSocket: receives its envelopes and learns when it closes."""

    def envelope_received(protocol: SoapClientProtocol, payload: bytes) -> None:
        """One text frame (a SOAP 1.2 envelope) arrived."""

    def connection_closed(protocol: SoapClientProtocol, code: int | None, reason: str | None) -> None:
        """The connection is gone (after it had opened)."""


def default_endpoint(reactor: Any, trust_root: Any = None) -> EndpointFactory:
    """
    Endpoints for real sockets: TCP, wrapped in TLS for secure addresses.

    @param trust_root: what to trust for TLS (a C{twisted.internet.ssl.Certificate} of a private CA, say);
        the platform's certificate authorities when C{None}.
    """

    def endpoint(address: ServiceAddress) -> IStreamClientEndpoint:
        tcp = TCP4ClientEndpoint(reactor, address.host, address.port, timeout=30)
        if address.secure:
            return wrapClientTLS(optionsForClientTLS(address.host, trustRoot=trust_root), tcp)
        return tcp

    return endpoint


class SoapClientProtocol(BoundedPongs, QuietSendData, WebSocketClientProtocol):  # type: ignore[misc]
    """
    One client WebSocket: frames go to the owner; the token is renewed on a timer.

    L{QuietSendData} turns Nagle's algorithm off (Autobahn's own attempt fails); envelopes are written
    through Twisted's queue, a reactor turn's worth at a time.

    Simple text frames from the gateway (unmasked) are read by L{FastMessageReader}, the rest by Autobahn.

    @ivar opened: fires with the protocol when the handshake is done, or fails with L{HandshakeRefused};
        cancelling it drops the connection.
    """

    logger = Logger()
    factory: SoapClientFactory
    transport: Any

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[SoapClientProtocol] = Deferred(self._abandon)
        self._abandoned = False
        self._renewal: IDelayedCall | None = None
        self._reader = FastMessageReader(self, masked=False)
        # Registered on the transport once it opens: a caller waits on it while the write buffer is full.
        self.write_gate = WriteGate()
        self._reading_held = False
        self._heartbeat: IDelayedCall | None = None

    @property
    def reading_held(self) -> bool:
        """
        Whether the owner reads nothing now (set by it): a pong may wait unread (L{onAutoPingTimeout}).

        Meanwhile the gateway hears a heartbeat every L{HEARTBEAT_INTERVAL}: its own pings wait unread too.
        """
        return self._reading_held

    @reading_held.setter
    def reading_held(self, held: bool) -> None:
        self._reading_held = held
        if held and self._heartbeat is None:
            self._heartbeat = self.factory.clock.callLater(HEARTBEAT_INTERVAL, self._beat)
        elif not held:
            self._stop_heartbeat()

    def _beat(self) -> None:
        self._heartbeat = None
        if self._reading_held and self.state == self.STATE_OPEN:
            self.sendPong(b"")
            self._heartbeat = self.factory.clock.callLater(HEARTBEAT_INTERVAL, self._beat)

    def _stop_heartbeat(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None and heartbeat.active():
            heartbeat.cancel()

    def _abandon(self, opened: Deferred[SoapClientProtocol]) -> None:
        """The owner gave the connection up before it opened (its C{close()}): drop it, and tell it nothing."""
        self._abandoned = True
        self.close_with(1000, "abandoned")

    @override
    def dataReceived(self, data: bytes) -> None:
        """Simple text frames are read by L{FastMessageReader}; everything else by Autobahn's parser."""
        self._heard_since_ping = True
        self._reader.data_received(data)

    @override
    def onOpen(self) -> None:
        """Handshake done."""
        if self._abandoned:  # pragma: no cover - dropped before the handshake's answer was read
            return
        self.transport.registerProducer(self.write_gate, True)
        self._schedule_renewal()
        self.opened.callback(self)

    @override
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Text frames are envelopes; the gateway never sends binary frames."""
        if not isBinary:
            self.factory.owner.envelope_received(self, payload)

    @override
    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """Fail the opening Deferred, or tell the owner."""
        self.write_gate.stop()
        self._stop_heartbeat()
        if self._renewal is not None and self._renewal.active():
            self._renewal.cancel()
        self._renewal = None
        if not self.opened.called:
            line = getattr(self, "http_status_line", None) or ""
            parts = line.split(" ", 2)
            if len(parts) >= 2 and parts[1].isascii() and parts[1].isdigit():
                self.opened.errback(HandshakeRefused(int(parts[1]), parts[2] if len(parts) > 2 else ""))
            else:
                self.opened.errback(
                    HandshakeRefused(None, reason or "the connection closed before it opened")
                )
            return
        if not self._abandoned:
            self.factory.owner.connection_closed(self, code, reason)

    @override
    def onAutoPingTimeout(self) -> None:
        """
        Drop a connection whose pong did not come in time, and that was silent meanwhile: the gateway is gone.

        The pong may be late behind a large message (the gateway skips pongs for a peer with more than
        1 MiB unsent), or wait unread while the owner holds reading (a listener running its
        C{max_concurrent} calls): then it is given the time again. Anything read means the gateway is there.
        """
        heard = self.heard_since_ping()
        if (self.reading_held or heard) and self.state == self.STATE_OPEN:
            self.wait_for_pong_again()
            return
        self.logger.info("no pong from {url} in time: dropping the connection", url=self.factory.url)
        super().onAutoPingTimeout()

    def send_bytes(self, payload: bytes) -> bool:
        """
        Write one envelope as one masked text frame; C{False} when the socket is no longer open.

        The frame goes straight to the transport (L{relay.wsframes}) unless Autobahn has frames queued.
        """
        if self.state != self.STATE_OPEN:
            return False
        if self.send_queue:
            self.sendMessage(payload, isBinary=False)
        else:
            self.transport.write(masked_frame(payload))
        return True

    def close_with(self, code: int = 1000, reason: str = "") -> None:
        """Close (any valid code), or drop a connection that is not open."""
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)
        elif self.state != self.STATE_CLOSED:
            self.dropConnection(abort=True)

    def _schedule_renewal(self) -> None:
        credentials = self.factory.credentials
        if credentials is not None:
            self._renewal = self.factory.clock.callLater(credentials.renew_after, self._renew)

    def _renew(self) -> None:
        self._renewal = None
        credentials = self.factory.credentials
        if credentials is None:  # pragma: no cover - only scheduled with credentials
            return
        token = credentials.token(self.factory.address.http_url, self.factory.clock.seconds())
        self.logger.debug("renewing the token of {url}", url=self.factory.url)
        self.send_bytes(renew_token_envelope(token, new_message_id()).to_bytes())
        self._schedule_renewal()


class SoapClientFactory(WebSocketClientFactory):
    """Carries owner, address, credentials and clock to the protocol."""

    def __init__(
        self,
        url: str,
        address: ServiceAddress,
        owner: Any,
        credentials: SasCredentials | None,
        clock: IReactorTime,
        headers: dict[str, str],
        ping_interval: float = 0.0,
        ping_timeout: float = 0.0,
    ) -> None:
        """
        The factory of one connection to C{url}.

        @param ping_interval: seconds between pings to the gateway (0: none), so that a connection that
            went silent without closing is noticed.
        @param ping_timeout: seconds a ping's pong may take before the connection is dropped.
        """
        super().__init__(url, protocols=[SUBPROTOCOL], headers=headers, reactor=clock)
        self.address = address
        self.owner = owner
        self.credentials = credentials
        self.clock = clock
        self.setProtocolOptions(
            openHandshakeTimeout=30,
            closeHandshakeTimeout=5,
            # what a listener is delivered may be larger than any name's limit (see delivery_cap)
            maxMessagePayloadSize=delivery_cap(REQUEST_REPLY),
            autoPingInterval=ping_interval,
            autoPingTimeout=ping_timeout,
            perMessageCompressionOffers=[],
        )


SoapClientFactory.protocol = SoapClientProtocol


def connect(
    address: ServiceAddress,
    action: str,
    owner: Any,
    credentials: SasCredentials | None,
    clock: IReactorTime,
    endpoint: IStreamClientEndpoint,
    client_id: str | None = None,
    *,
    ping_interval: float = 0.0,
    ping_timeout: float = 0.0,
) -> Deferred[SoapClientProtocol]:
    """
    Open the WebSocket for C{action} (C{listen} or C{send}) with a freshly signed token.

    @param ping_interval: seconds between pings to the gateway (0: none; see L{SoapClientFactory}).
    @param ping_timeout: seconds a pong may take before the connection is dropped.

    @return: a Deferred firing with the open protocol, or failing with L{HandshakeRefused} (or the
        endpoint's connection error).
    """
    headers = {}
    if credentials is not None:
        headers[TOKEN_HEADER] = credentials.token(address.http_url, clock.seconds())
    url = address.websocket_url(action, client_id)
    factory = SoapClientFactory(url, address, owner, credentials, clock, headers, ping_interval, ping_timeout)
    connecting: Deferred[Any] = endpoint.connect(factory)

    def opened(protocol: SoapClientProtocol) -> Deferred[SoapClientProtocol]:
        return protocol.opened

    return connecting.addCallback(opened)


def describe_failure(failure: Failure) -> str:
    """A one-line description of why a connection attempt failed, for logs."""
    error = failure.value
    return str(error) or type(error).__name__
