"""
Shared pieces of the end-to-end binding tests.

A real gateway on loopback with the bindings installed, real service hosts and channel factories, zeep run
in a thread, and waiting for sockets to go quiet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import requests
import zeep
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.http import HTTPChannel

from bindings.channels import ChannelFactory
from bindings.credentials import SasCredentials
from bindings.gateway import BindingsGateway, install
from bindings.host import ServiceHost
from bindings.settings import ENTITY_SECTIONS, Binding, RequestReplyBinding
from relay.listeners import IListenerChooser

from ..e2e.gateway import LISTEN_KEY, NAMESPACE_CONFIG, ROOT_KEY, SEND_KEY, RunningGateway, start_gateway

T = TypeVar("T")

CONFIG = (
    NAMESPACE_CONFIG
    + """  [[namespaces.requestreply]]
  name = "calc"
  request_timeout = 1.5

  [[namespaces.requestreply]]
  name = "open"
  client_auth = "anonymous"

  [[namespaces.requestreply]]
  name = "legacy"

  [[namespaces.oneway]]
  name = "events"

  [[namespaces.multicast]]
  name = "chat"
  max_queue_messages = 8
  max_queue_bytes = 262144
"""
)

__all__ = ["LISTEN_KEY", "ROOT_KEY", "SEND_KEY", "BindingsE2E"]


class BindingsE2E(TestCase):
    """A trial async test case with a real gateway (started by L{start}) and cleanup of every peer."""

    gateway: RunningGateway

    async def start(
        self,
        config: str = CONFIG,
        chooser: IListenerChooser | None = None,
        listen: str = "tcp:0:interface=127.0.0.1",
    ) -> RunningGateway:
        self.gateway = await start_gateway(
            self,
            config,
            extra_sections=ENTITY_SECTIONS,
            extensions=(install,),
            chooser=chooser,
            listen=listen,
        )
        self.addCleanup(self.http_quiet)
        return self.gateway

    @property
    def bindings(self) -> BindingsGateway:
        gateway: BindingsGateway = self.gateway.service.getServiceNamed("bindings").gateway
        return gateway

    def listener_count(self, name: str) -> int:
        """How many listeners a name has on the gateway."""
        store = self.gateway.service.store
        namespace = store.namespaces()[0]
        entity = store.get(namespace, name)
        return self.gateway.service.registry.count(namespace, entity) if entity is not None else 0

    def url(self, name: str) -> str:
        return f"{self.gateway.http_url}/{name}"

    def credentials(self, key_name: str = "root", key: str = ROOT_KEY, ttl: float = 3600) -> SasCredentials:
        return SasCredentials(key_name, key, ttl=ttl)

    async def host(
        self,
        service: object,
        interface: Any,
        name: str = "calc",
        binding: Binding | None = None,
        **kwargs: Any,
    ) -> ServiceHost:
        host = ServiceHost(
            service,
            interface,
            self.url(name),
            binding or RequestReplyBinding(),
            self.credentials(),
            reactor=reactor,
            **kwargs,
        )
        await host.open()
        self.addCleanup(host.close)
        return host

    def channel(
        self, interface: Any, name: str, binding: Binding | None = None
    ) -> tuple[ChannelFactory, Any]:
        factory = ChannelFactory(
            interface, self.url(name), binding or RequestReplyBinding(), self.credentials(), reactor=reactor
        )
        self.addCleanup(factory.close)
        return factory, factory.create_channel()

    def token(self, name: str, key_name: str = "root", key: str = ROOT_KEY) -> str:
        return self.gateway.token(name, key_name, key)

    def session(self, token: str | None = None) -> requests.Session:
        """A requests session that closes its connections after each call (so the reactor ends clean)."""
        session = requests.Session()
        session.headers["Connection"] = "close"
        if token is not None:
            session.headers["ServiceBusAuthorization"] = token
        return session

    def zeep_client(
        self, name: str, token: str | None = None, verify: str | None = None, **kwargs: Any
    ) -> zeep.Client:
        """A plain C{zeep.Client(url_of_wsdl)} (call only from a thread); C{verify}: a CA file for https."""
        session = self.session(token)
        if verify is not None:
            session.verify = verify
            session.trust_env = False  # else REQUESTS_CA_BUNDLE, when set, wins over the session's verify
        return zeep.Client(f"{self.url(name)}?wsdl", transport=zeep.Transport(session=session), **kwargs)

    def in_thread(self, function: Callable[[], T]) -> Deferred[T]:
        """Run blocking client code (zeep, requests) off the reactor thread; starts at once."""
        return threads.deferToThread(function)

    async def until(self, condition: Callable[[], object], timeout: float = 5.0) -> None:
        """Wait for something the reactor does in the background (a delivered datagram being processed)."""
        for _ in range(int(timeout / 0.01)):
            if condition():
                return
            await deferLater(reactor, 0.01, lambda: None)
        raise AssertionError("condition never became true")

    async def http_quiet(self) -> None:
        """Wait until the gateway has no plain HTTP connection left (clients close them)."""
        for _ in range(200):
            busy = [r for r in reactor.getReaders() if isinstance(getattr(r, "protocol", None), HTTPChannel)]
            if not busy:
                return
            await deferLater(reactor, 0.01, lambda: None)


def local(qname: str | None) -> str:
    """The local part of a prefixed fault code as zeep reports it (C{s:Client} -> C{Client})."""
    return (qname or "").rpartition(":")[2]
