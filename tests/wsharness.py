"""
Deterministic WebSocket test rig: a gateway and Autobahn clients joined by in-memory transports.

No sockets and no real time: every connection is an L{iosim} pump, all timers (ours and Autobahn's, via
txaio) run on one L{Clock}, and L{Network.flush} moves bytes until every connection is quiet.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Factory
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from relay.auth import Rights, SharedAccessRule, make_token
from relay.certs import issue_server_certificate
from relay.config import GatewayConfig, NamespaceConfig, default_limits
from relay.entities import HYBRID_CONNECTION, Entity, HybridConnectionSettings, Namespace
from relay.listeners import RoundRobinChooser
from relay.service import GatewayService, GatewaySettings

KEY = "test-key-0123456789abcdefghijkl"
HOST = "relay.test"
_ports = itertools.count(40000)


class RecordingClient(WebSocketClientProtocol):
    """An Autobahn client that records everything that happens to it."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = False
        self.messages: list[tuple[bytes, bool]] = []
        self.closed: tuple[bool, int | None, str | None] | None = None
        self.on_message: Any = None

    def onOpen(self) -> None:
        self.opened = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))
        if self.on_message is not None:
            self.on_message(self, payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed = (wasClean, code, reason)

    @property
    def status(self) -> int | None:
        """The HTTP status of the upgrade response, once received."""
        line = getattr(self, "http_status_line", None)
        return int(line.split()[1]) if line else None

    @property
    def status_line(self) -> str:
        """The whole status line of the upgrade response."""
        return getattr(self, "http_status_line", "") or ""

    @property
    def response_protocol(self) -> str | None:
        """The subprotocol the server chose."""
        return self.websocket_protocol_in_use


@implementer(IPushProducer, IConsumer)
class RecordingTransport(iosim.FakeTransport):
    """
    A server-side L{iosim.FakeTransport} that remembers whether reading was paused and aborts.

    It says it is a push producer, as TCP transports are, so twisted.web pauses it (not a stand-in).
    """

    reading_paused = False
    aborted = False
    pause_count = 0

    def pauseProducing(self) -> None:
        self.reading_paused = True
        self.pause_count += 1

    def resumeProducing(self) -> None:
        self.reading_paused = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class TLSPair:
    """
    Server and client TLS settings from a development CA (L{relay.certs}), for in-memory TLS connections.

    The gateway's TLS endpoints wrap every connection in L{TLSMemoryBIOProtocol}, whose close waits for a
    registered producer to go away; plain in-memory transports hide that, so TLS tests run the real layer.
    """

    def __init__(self, directory: Path, host: str = HOST) -> None:
        files = issue_server_certificate(directory, [host])
        server = PrivateCertificate.loadPEM(files.key_path.read_text() + files.cert_path.read_text())
        trust = Certificate.loadPEM(files.ca_path.read_text())
        self.server_factory = TLSMemoryBIOFactory(server.options(), False, Factory())
        self.client_factory = TLSMemoryBIOFactory(optionsForClientTLS(host, trust), True, Factory())

    def wrap(self, server: Any, client: Any) -> tuple[TLSMemoryBIOProtocol, TLSMemoryBIOProtocol]:
        return (
            TLSMemoryBIOProtocol(self.server_factory, server),
            TLSMemoryBIOProtocol(self.client_factory, client),
        )


class Network:
    """All in-memory connections of one test, pumped together."""

    def __init__(self, site: Any, clock: Clock, tls: TLSPair | None = None) -> None:
        self.site = site
        self.clock = clock
        self.tls = tls
        self.pumps: list[iosim.IOPump] = []

    def connect(
        self,
        url: str,
        headers: dict[str, str] | None = None,
        protocols: list[str] | None = None,
        source: str = "10.0.0.1",
    ) -> RecordingClient:
        """Open a WebSocket client connection to the gateway."""
        factory = WebSocketClientFactory(
            url, headers=headers or {}, protocols=protocols or [], reactor=self.clock
        )
        factory.protocol = RecordingClient
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=5)
        client = factory.buildProtocol(None)
        self.attach(client, source)
        return client

    def attach(self, client: Any, source: str = "10.0.0.1") -> Any:
        """Connect any client protocol to the gateway's site; C{client.server_transport} is its far end."""
        port = next(_ports)
        server = self.site.buildProtocol(IPv4Address("TCP", source, port))
        if self.tls is not None:  # real TLS (OpenSSL in memory) between the two ends
            server, client = self.tls.wrap(server, client)
        server_transport = RecordingTransport(
            server, True, IPv4Address("TCP", "127.0.0.1", 443), IPv4Address("TCP", source, port)
        )
        client_transport = iosim.FakeTransport(
            client, False, IPv4Address("TCP", source, port), IPv4Address("TCP", "127.0.0.1", 443)
        )
        pump = iosim.connect(
            server, server_transport, client, client_transport, greet=False, clock=self.clock
        )
        if self.tls is not None:
            server, client = server.wrappedProtocol, client.wrappedProtocol
        client.pump = pump
        client.server_transport = server_transport
        self.pumps.append(pump)
        self.flush()
        return client

    def flush(self) -> None:
        """Move bytes on every connection until all are quiet."""
        for _ in range(1000):
            moved = False
            for pump in list(self.pumps):
                if pump.pump(advanceClock=False):
                    moved = True
            if not moved:
                return
        raise AssertionError("network never settled")

    def advance(self, seconds: float) -> None:
        """Settle the network, let time pass, then settle it again."""
        self.flush()
        self.clock.advance(seconds)
        self.flush()


class GatewayTestCase(SynchronousTestCase):
    """A gateway with namespace C{relay.test}: C{hyco} (2 listeners max), C{open} (anonymous senders)."""

    use_tls = False  # True: every connection runs through real in-memory TLS (L{TLSPair})

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        old_loop = txaio.config.loop
        txaio.config.loop = self.clock
        self.addCleanup(setattr, txaio.config, "loop", old_loop)
        rule = SharedAccessRule("root", KEY, Rights.LISTEN | Rights.SEND | Rights.MANAGE)
        listen_only = SharedAccessRule("listen-only", KEY[::-1], Rights.LISTEN)
        namespace = Namespace("test", self.namespace_hosts(), (rule, listen_only))
        entities = self.entities()
        limits = {
            **default_limits(),
            "listener_failure_delay": 1.0,
            "listener_failure_max_delay": 4.0,
            **self.limits(),
        }
        settings = GatewaySettings(
            listen=(),
            public_url=f"https://{HOST}",
            state_dir=Path(self.mktemp()),
            config=GatewayConfig(namespaces=(NamespaceConfig(namespace, entities),), limits=limits),
        )
        self.gateway = GatewayService(settings, reactor=self.clock, chooser=RoundRobinChooser())
        tls = TLSPair(Path(self.mktemp())) if self.use_tls else None
        self.net = Network(self.gateway.site, self.clock, tls)

    def namespace_hosts(self) -> tuple[str, ...]:
        """The host names of the test namespace (C{("*",)}: the wildcard, as the development namespace)."""
        return (HOST,)

    def entities(self) -> tuple[Entity, ...]:
        """The hybrid connections of the test namespace."""
        return (
            Entity("hyco", HYBRID_CONNECTION, settings=HybridConnectionSettings(max_listeners=2)),
            Entity(
                "open",
                HYBRID_CONNECTION,
                settings=HybridConnectionSettings(requires_client_authorization=False),
            ),
        )

    def limits(self) -> dict[str, float]:
        """Gateway limits that differ from the defaults."""
        return {}

    def token(self, path: str = "hyco", key_name: str = "root", key: str = KEY, ttl: float = 3600) -> str:
        return make_token(f"http://{HOST}/{path}", key_name, key, ttl=ttl, now=self.clock.seconds())

    def listen(self, path: str = "hyco", token: str | None = None, **kwargs: Any) -> RecordingClient:
        headers = {"ServiceBusAuthorization": token if token is not None else self.token(path)}
        return self.net.connect(f"wss://{HOST}/$hc/{path}?sb-hc-action=listen", headers=headers, **kwargs)

    def send(
        self,
        path: str = "hyco",
        query: str = "",
        token: str | None = None,
        headers_extra: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> RecordingClient:
        headers = {"ServiceBusAuthorization": token if token is not None else self.token(path.split("/")[0])}
        headers.update(headers_extra or {})
        sep = "&" if query else ""
        return self.net.connect(
            f"wss://{HOST}/$hc/{path}?{query}{sep}sb-hc-action=connect", headers=headers, **kwargs
        )
