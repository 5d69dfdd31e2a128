"""
A gateway with the SOAP bindings installed, on in-memory transports and one test clock.

Everything runs through L{tests.wsharness.Network}: raw Autobahn clients for protocol tests, and
L{MemoryEndpoint} so that our own service hosts and channel factories connect without sockets.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import txaio
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from bindings.addressing import addressing_headers, new_message_id
from bindings.contracts import contract_of
from bindings.control import Registration, register_envelope
from bindings.credentials import SasCredentials, ServiceAddress
from bindings.gateway import BindingsGateway, install
from bindings.settings import MULTICAST, ONEWAY, REQUEST_REPLY, BindingEntitySettings, ClientAuth, Discovery
from bindings.soap import Envelope, SoapVersion
from bindings.wsdl import generate_wsdl
from relay.auth import Rights, SharedAccessRule, make_token
from relay.config import GatewayConfig, NamespaceConfig, default_limits
from relay.entities import HYBRID_CONNECTION, Entity, HybridConnectionSettings, Namespace
from relay.listeners import RoundRobinChooser
from relay.service import GatewayService, GatewaySettings

from ..wsharness import Network, RecordingClient, TLSPair
from .calculator import ICalculator, IChat

KEY = "test-key-0123456789abcdefghijkl"
LISTEN_KEY = "listen-key-0123456789abcdefghij"
SEND_KEY = "send-key-0123456789abcdefghijklm"
HOST = "relay.test"
PUBLIC = f"https://{HOST}"
_ports = itertools.count(50000)


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """Connects client factories to the gateway's site through the test network."""

    def __init__(self, network: Network, source: str = "10.0.0.9") -> None:
        self.network = network
        self.source = source
        self.refuse: Exception | None = None
        self.attempts = 0

    def __call__(self, address: ServiceAddress) -> MemoryEndpoint:
        return self

    def connect(self, factory: Any) -> Deferred[Any]:
        self.attempts += 1
        if self.refuse is not None:
            from twisted.internet.defer import fail

            return fail(self.refuse)
        port = next(_ports)
        client = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 443))
        server = self.network.site.buildProtocol(IPv4Address("TCP", self.source, port))
        server_transport = iosim.FakeTransport(
            server, True, IPv4Address("TCP", "127.0.0.1", 443), IPv4Address("TCP", self.source, port)
        )
        client_transport = iosim.FakeTransport(
            client, False, IPv4Address("TCP", self.source, port), IPv4Address("TCP", "127.0.0.1", 443)
        )
        pump = iosim.connect(
            server, server_transport, client, client_transport, greet=False, clock=self.network.clock
        )
        client.pump = pump
        self.network.pumps.append(pump)
        return succeed(client)


def entities() -> tuple[Entity, ...]:
    """The names every test gateway has."""

    def entity(name: str, kind: str, **settings: Any) -> Entity:
        return Entity(name, kind, settings=BindingEntitySettings(kind=kind, **settings))

    return (
        entity(
            "calc", REQUEST_REPLY, request_timeout=5.0, discovery=Discovery.PUBLIC, display_name="Calculator"
        ),
        entity("events", ONEWAY, max_message_bytes=4096, send_timeout=2.0, max_queue_messages=2),
        entity("chat", MULTICAST, max_queue_messages=3),
        entity("open", REQUEST_REPLY, client_auth=ClientAuth.ANONYMOUS),
        entity("small", REQUEST_REPLY, max_listeners=1, max_message_bytes=2048),
        Entity("hyco", HYBRID_CONNECTION, settings=HybridConnectionSettings()),
    )


class BindingsTestCase(SynchronousTestCase):
    """A gateway on namespace C{relay.test} with the binding names of L{entities}; dynamic names allowed."""

    use_tls = False  # True: every connection runs through real in-memory TLS

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        old_loop = txaio.config.loop
        txaio.config.loop = self.clock
        self.addCleanup(setattr, txaio.config, "loop", old_loop)
        rules = (
            SharedAccessRule("root", KEY, Rights.LISTEN | Rights.SEND | Rights.MANAGE),
            SharedAccessRule("listen-only", LISTEN_KEY, Rights.LISTEN),
            SharedAccessRule("send-only", SEND_KEY, Rights.SEND),
        )
        namespace = Namespace("test", self.namespace_hosts(), rules, auto_create=True)
        limits = {**default_limits(), "listener_failure_delay": 0.0, **self.limits()}
        settings = GatewaySettings(
            listen=(),
            public_url=PUBLIC,
            state_dir=Path(self.mktemp()),
            config=GatewayConfig(namespaces=(NamespaceConfig(namespace, entities()),), limits=limits),
        )
        self.service = GatewayService(
            settings, reactor=self.clock, chooser=RoundRobinChooser(), extensions=(install,)
        )
        self.bindings: BindingsGateway = self.service.getServiceNamed("bindings").gateway
        self.namespace = namespace
        tls = TLSPair(Path(self.mktemp())) if self.use_tls else None
        self.net = Network(self.service.site, self.clock, tls)
        self.endpoint = MemoryEndpoint(self.net)

    def limits(self) -> dict[str, float]:
        """Gateway limits that differ from the defaults."""
        return {}

    def namespace_hosts(self) -> tuple[str, ...]:
        """The host names of the test namespace (C{("*",)}: the wildcard, as the development namespace)."""
        return (HOST,)

    def token(self, path: str, key_name: str = "root", key: str = KEY, ttl: float = 3600) -> str:
        return make_token(f"http://{HOST}/{path}", key_name, key, ttl=ttl, now=self.clock.seconds())

    def credentials(self, key_name: str = "root", key: str = KEY, ttl: float = 3600) -> SasCredentials:
        return SasCredentials(key_name, key, ttl=ttl)

    def wcf(
        self,
        path: str,
        action: str,
        token: str | None = "",
        protocols: list[str] | None = None,
        query: str = "",
    ) -> RecordingClient:
        headers = {}
        if token == "":
            token = self.token(path)
        if token is not None:
            headers["ServiceBusAuthorization"] = token
        return self.net.connect(
            f"wss://{HOST}/$wcf/{path}?sb-wcf-action={action}{query}",
            headers=headers,
            protocols=["soap"] if protocols is None else protocols,
        )

    def register(
        self, client: RecordingClient, kind: str = REQUEST_REPLY, interface: Any = ICalculator, **options: Any
    ) -> str:
        """Send r:Register for a contract (policy of the configured name unless given); returns its MessageID."""
        path = client.factory.url.split("/$wcf/", 1)[1].split("?", 1)[0]
        entity = self.service.store.get(self.namespace, path)
        if entity is not None:
            options.setdefault("client_auth", entity.settings.client_auth.value)
            options.setdefault("discovery", entity.settings.discovery.value)
        wsdl = generate_wsdl(contract_of(interface), "sb://elsewhere/x") if interface is not None else None
        message_id = new_message_id()
        registration = Registration(kind=kind, wsdl=wsdl, **options)
        client.sendMessage(register_envelope(registration, message_id).to_bytes(), isBinary=False)
        self.net.flush()
        return message_id

    def listener(
        self, path: str = "calc", kind: str = REQUEST_REPLY, interface: Any = ICalculator
    ) -> RecordingClient:
        client = self.wcf(path, "listen")
        self.register(client, kind, interface)
        return client

    def paused_listener(self, path: str, kind: str, interface: Any) -> tuple[RecordingClient, Any]:
        """A listener whose queue does not drain (its outlet is paused), and that outlet."""
        client = self.listener(path, kind, interface)
        entity = self.service.store.get(self.namespace, path)
        (outlet,) = self.bindings.names.existing(self.namespace, entity).outlets()  # type: ignore[arg-type,union-attr]
        outlet.pauseProducing()
        return client, outlet


def envelope_bytes(
    body: Any,
    *,
    action: str | None,
    message_id: str | None = None,
    reply_to: bool = False,
    to: str | None = None,
) -> bytes:
    """A SOAP 1.2 request with addressing headers."""
    headers = addressing_headers(to=to, action=action, message_id=message_id, reply_to_anonymous=reply_to)
    return Envelope(SoapVersion.SOAP12, headers, (body,)).to_bytes()


__all__ = [
    "HOST",
    "KEY",
    "LISTEN_KEY",
    "PUBLIC",
    "SEND_KEY",
    "BindingsTestCase",
    "IChat",
    "MemoryEndpoint",
    "envelope_bytes",
]
