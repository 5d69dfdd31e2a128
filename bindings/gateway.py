"""
The SOAP relay bindings on the shared gateway: what L{install} adds to a running L{relay} gateway.

L{install} is a gateway extension (C{GatewayService(..., extensions=(install,))}). It registers the C{$wcf}
WebSocket endpoint for listeners and senders (L{bindings.wcf}), the plain HTTP SOAP endpoint for the three
entity kinds (L{bindings.httpsoap}), the Atom service registry at the namespace root, and a child service
that closes binding connections with 1001 when the gateway stops.

L{BindingsGateway.deliver} is the one place where a prepared message meets its router, for WebSocket and
HTTP senders alike: a datagram settles with L{Delivered}, a request with the listener's L{Reply}.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.application.service import IServiceCollection, Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from typing_extensions import override

from bindings.httpsoap import SoapResourceFactory
from bindings.inbound import Prepared
from bindings.instruments import BindingInstruments
from bindings.multicast import MulticastRouter
from bindings.names import BoundName, NameTable
from bindings.oneway import Delivered, OneWayRouter
from bindings.outlet import RoutedMessage
from bindings.registryfeed import RegistryResourceFactory
from bindings.requestreply import Reply
from bindings.settings import BINDING_KINDS
from bindings.wcf import WcfFactory, WcfResource
from relay.connectionquota import NamespaceConnections
from relay.listeners import IListenerChooser, ListenerRegistry
from relay.logger import Logger
from relay.metrics import Registry
from relay.store import IGatewayStore

SERVICE_NAME = "bindings"
GOING_AWAY = 1001


class GatewayHost(Protocol):
    """What L{install} needs from the gateway service (structural, so bindings never import its module)."""

    @property
    def store(self) -> IGatewayStore:
        """Namespaces and entities."""

    @property
    def reactor(self) -> Any:
        """The reactor everything runs on."""

    @property
    def root(self) -> Any:
        """The L{relay.resource.GatewayRoot} layers register with."""

    @property
    def settings(self) -> Any:
        """The gateway settings (limits)."""

    @property
    def public_url(self) -> str | None:
        """The gateway's public URL, known once it listens."""

    @property
    def registry(self) -> Any:
        """The gateway's listener registry (its chooser is shared)."""

    @property
    def metrics(self) -> Registry:
        """The gateway's metrics registry (shared with hybrid connections)."""

    @property
    def connections(self) -> NamespaceConnections:
        """The gateway's count of open connections per namespace (shared with hybrid connections)."""

    @property
    def drain_sources(self) -> list[Callable[[], int]]:
        """Counts of work under way that a stopping gateway waits for while it drains."""

    @property
    def draining(self) -> bool:
        """Whether the gateway is stopping: no new work is taken, what is under way goes on."""


class BindingsGateway:
    """
    The bindings' collaborators on one gateway.

    @ivar names: binding names, admission and policies.
    @ivar clock: the reactor's time.
    @ivar instruments: the bindings' metrics.
    @ivar limits: gateway-wide limits (ping interval, close handshake timeout, C{trace_messages}: log
        every routed message at debug level, off unless set to 1).
    @ivar stopping: whether the gateway is stopping (draining): senders' new messages are refused then.
    """

    log = Logger()

    def __init__(
        self,
        store: IGatewayStore,
        clock: IReactorTime,
        chooser: IListenerChooser,
        public_base: Callable[[], str],
        limits: Mapping[str, float],
        registry: ListenerRegistry[Any] | None = None,
        metrics: Registry | None = None,
        connections: NamespaceConnections | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.trace = bool(limits.get("trace_messages", 0))
        self.stopping = stopping
        self.connections = connections if connections is not None else NamespaceConnections()
        self.instruments = BindingInstruments(metrics)
        self.names = NameTable(
            store, clock, chooser, public_base, registry, trace=self.trace, instruments=self.instruments
        )
        self.instruments.watch_queues(self.names.queues)
        self.clock = clock
        self.limits = limits
        self.public_base = public_base
        self.websocket_factory = WcfFactory(self)
        self.websocket_resource = WcfResource(self.websocket_factory)
        self.soap_resource = SoapResourceFactory(self)
        self.registry_resource = RegistryResourceFactory(self)

    def deliver(
        self, bound: BoundName, prepared: Prepared, tracking_id: str, flow: Any = None
    ) -> Deferred[Delivered | Reply]:
        """
        Hand a prepared message to its name's router.

        @param flow: the sender's L{bindings.outlet.ISenderFlow}, held back while the listener's queue is full.
        @return: a Deferred firing with L{Delivered} (datagrams; count of listeners reached) or the
            listener's L{Reply} (requests), or failing with L{bindings.faultcodes.RelayFaultError}.
            Cancelling it (the sender went away) withdraws the message.
        """
        message = RoutedMessage(prepared.payload, prepared.message_id, tracking_id)
        self.instruments.accepted(bound.entity.name, bound.kind, message.size)
        if self.trace:
            self._accepted(bound, prepared, message)
        router = bound.router
        result: Deferred[Delivered | Reply]
        if isinstance(router, MulticastRouter):
            result = router.publish(message).addCallback(Delivered)
        elif isinstance(router, OneWayRouter):
            result = router.send(message, flow)  # type: ignore[assignment]
        elif prepared.one_way:
            result = router.send_one_way(message, flow)  # type: ignore[assignment]
        else:
            result = router.request(message, flow)  # type: ignore[assignment]
        return result

    def _accepted(self, bound: BoundName, prepared: Prepared, message: RoutedMessage) -> None:
        self.log.debug(
            "accepted {message_id} ({size} bytes, action {action}) for {entity}",
            message_id=prepared.message_id,
            size=message.size,
            action=prepared.action,
            entity=bound.entity.name,
            tracking_id=message.tracking_id,
        )


class BindingsService(Service):
    """Closes binding connections with 1001 when the gateway stops, and waits for them to go."""

    name = SERVICE_NAME

    def __init__(self, gateway: BindingsGateway) -> None:
        self.gateway = gateway

    @override
    def stopService(self) -> Deferred[None]:
        """Tell listeners and senders the gateway is going away; wait for their sockets to close."""
        super().stopService()
        factory = self.gateway.websocket_factory
        factory.close_all(GOING_AWAY, "Server shutting down")
        timeout = float(self.gateway.limits.get("close_handshake_timeout", 5.0)) + 1.0
        return DeferredList([factory.drain(timeout)], consumeErrors=True).addCallback(lambda _: None)


def install(service: GatewayHost) -> None:
    """
    Add the SOAP relay bindings to a gateway service (a L{relay.service.GatewayService} extension).

    Registers C{/$wcf}, the HTTP SOAP resource for the C{oneway}, C{requestreply} and C{multicast} kinds,
    and the service registry at the namespace root. The L{BindingsGateway} is reachable as
    C{service.getServiceNamed("bindings").gateway}.
    """
    gateway = BindingsGateway(
        service.store,
        service.reactor,
        service.registry.chooser,
        lambda: service.public_url or "http://localhost",
        service.settings.limits,
        service.registry,
        service.metrics,
        service.connections,
        lambda: service.draining,
    )
    service.root.register_prefix("$wcf", gateway.websocket_resource)
    for kind in BINDING_KINDS:
        # streamed: a body over the name's limit is refused as it comes, not once buffered (64 MiB at most)
        service.root.register_kind(kind, gateway.soap_resource, streams_body=True)
    service.root.register_namespace_root(gateway.registry_resource)
    service.drain_sources.append(gateway.names.under_way)
    BindingsService(gateway).setServiceParent(IServiceCollection(service))
