"""
The gateway service tree: store, listener registry, routers, the web root, and one server per endpoint.

Everything is built from a L{GatewaySettings} value and a reactor, so tests can assemble a gateway on a
C{MemoryReactorClock} or on real loopback ports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.resource import WebSocketResource
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import ILogObserver
from twisted.python.components import Componentized
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from typing_extensions import override

from relay.admin import admin_site
from relay.auth import Rights, SharedAccessRule
from relay.config import GatewayConfig, default_limits
from relay.connectionquota import NamespaceConnections
from relay.connstr import ConnectionString
from relay.endpointcheck import serves_on_a_port
from relay.entities import HYBRID_CONNECTION, Entity, Namespace
from relay.errors import CloseCode, ErrorKind, RelayError
from relay.eventloop import lean_dispatch, on_second_signal
from relay.hybrid.addressing import hide_reserved_values, websocket_base
from relay.hybrid.direct import DirectUpgrades
from relay.hybrid.http import HttpRelay
from relay.hybrid.instruments import HybridInstruments
from relay.hybrid.native import which as native_splice_in_use
from relay.hybrid.router import HybridConnectionRouter, IListenerChannel, SenderContext
from relay.hybrid.sockets import keep_read_buffers
from relay.hybrid.websocket import HybridConnectionFactory
from relay.listeners import IListenerChooser, ListenerRegistry
from relay.logger import Logger
from relay.metrics import Labels, Registry, status_class
from relay.resource import EntityResourceFactory, ErrorResource, GatewayRoot
from relay.shutdown import (
    SHUTTING_DOWN,
    ShuttingDownResource,
    refuse_requests,
    restore_requests,
    wait_until_idle,
)
from relay.state import (
    DEVELOPMENT_KEY_FILE,
    DEVELOPMENT_KEY_NAME,
    ENDPOINT_FILE,
    development_key,
    readable_by_others,
    write_endpoint,
)
from relay.store import MemoryGatewayStore
from relay.throttle import FailureThrottle
from relay.web import RelaySite

DEFAULT_LISTEN = "tcp:9080:interface=127.0.0.1"
SERVER_NAME = "relay"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """
    What the gateway is asked to do: the configuration file merged with the command line.

    @ivar listen: endpoint strings (C{tcp:9080}, C{ssl:443:privateKey=...}).
    @ivar public_url: base of rendezvous addresses; derived from the first tcp, tcp6 or ssl endpoint when
        C{None} (and left C{None} when there is none: addresses then say C{ws://localhost}).
    @ivar state_dir: where the development key and the last endpoint are kept.
    @ivar config: the configuration file's content (empty: the development namespace only).
    @ivar admin: endpoint string of the admin endpoint (C{/metrics}, C{/healthz}); none when C{None}.
    """

    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    public_url: str | None = None
    admin: str | None = None
    state_dir: Path = field(default_factory=lambda: Path("relay-state"))
    config: GatewayConfig = field(default_factory=GatewayConfig)

    @property
    def limits(self) -> Mapping[str, float]:
        """Gateway-wide limits, with defaults for what the file does not set."""
        return {**default_limits(), **self.config.limits}


def development_namespace(key: str) -> tuple[Namespace, tuple[Entity, ...]]:
    """The embedded default: any host, hybrid connections created by their first listener, one root rule."""
    rule = SharedAccessRule(DEVELOPMENT_KEY_NAME, key, Rights.LISTEN | Rights.SEND | Rights.MANAGE)
    return Namespace(name="development", hosts=("*",), rules=(rule,), auto_create=True), ()


def is_tls_endpoint(description: str) -> bool:
    """Whether an endpoint string serves TLS."""
    return description.split(":", 1)[0].lower() in ("ssl", "tls")


def public_url_for(description: str, port: IListeningPort) -> str:
    """Derive a public URL from a listening endpoint: its interface (or C{localhost}) and bound port."""
    address = port.getHost()
    host = getattr(address, "host", "localhost")
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - detecting the wildcard, not binding it
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    scheme = "https" if is_tls_endpoint(description) else "http"
    number = getattr(address, "port", 0)
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + ("" if number == default else f":{number}")


class HybridConnectionResource(Resource):
    """
    C{/$hc/...}: WebSocket upgrades; anything else is a client error.

    Senders' and rendezvous upgrades are answered without Autobahn when they are plainly valid
    (L{DirectUpgrades}); listeners' control channels, HTTP rendezvous and everything else go to Autobahn.
    """

    isLeaf = True

    def __init__(self, factory: HybridConnectionFactory) -> None:
        super().__init__()
        self._websocket = WebSocketResource(factory)
        self.direct = DirectUpgrades(factory)

    @override
    def render(self, request: IRequest) -> Any:
        """Hand upgrades to the direct path or Autobahn, refuse the rest with 400."""
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        if upgrade != b"websocket":
            error = RelayError(ErrorKind.BAD_REQUEST, "The $hc endpoint only accepts WebSocket upgrades")
            return ErrorResource(error).render(request)
        if self.direct.take(request):
            return NOT_DONE_YET
        return self._websocket.render(request)


def metered_requests(factory: EntityResourceFactory, instruments: HybridInstruments) -> EntityResourceFactory:
    """
    Wrap the HTTP relaying resource factory so each request is counted when it ends.

    Counting at the resource boundary sees every answer (relayed, refused, failed) without reaching into
    the relaying code: the status class once the request finished, C{aborted} when its connection ended
    first. Bytes are counted by the relaying code (L{relay.hybrid.http.HttpRelay.done}), for requests that
    went to a listener only: a refused upload and the relay's own error bodies are not relayed bytes.
    """

    def resource(request: IRequest, namespace: Namespace, match: Any) -> Any:
        entity = match.entity.name

        def ended(failure: Any) -> None:
            code = int(getattr(request, "code", 200))
            instruments.http_requests.inc(entity, "aborted" if failure is not None else status_class(code))

        request.when_done(ended)  # type: ignore[attr-defined]  # the gateway's requests are RelayRequests
        return factory(request, namespace, match)

    return resource


class GatewayService(MultiService):
    """
    The whole gateway as one service.

    @ivar store: namespaces and entities.
    @ivar registry: live listeners.
    @ivar hybrid: the hybrid connection router.
    @ivar root: the web root other layers register with.
    @ivar ports: listening ports once started, in C{listen} order.
    @ivar metrics: the one metrics registry (hybrid connections and the bindings register on it).
    @ivar admin_port: the admin endpoint's port once started, when one was asked for.
    @ivar log_observer: the observer offered to the application this service joins (twistd takes it in
        place of its own; L{relay.logtext.twistd_observer}), or L{None}.
    """

    log = Logger()
    _restore_dispatch: Callable[[], None] | None = None
    _serving: dict[str, Any] | None = None  # what the site served with before it refused requests
    draining = False
    """Whether the gateway is stopping (C{/readyz} answers 503 from then on)."""
    hurry_on_signal = False
    """Whether a SIGINT or SIGTERM during a drain ends it (L{hurry}); C{twistd relay} sets it."""
    _drain_wait: Deferred[bool] | None = None
    _hurried = False
    on_listen_failure: Callable[[str], object] | None = None
    """
    Called with one line when an endpoint cannot be bound (port taken, privileged); C{twistd relay} exits
    with it. Without it the L{CannotListenError} is raised, as from any Twisted service.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        reactor: Any = None,
        chooser: IListenerChooser | None = None,
        extensions: Sequence[Callable[[GatewayService], None]] = (),
        log_observer: ILogObserver | None = None,
    ) -> None:
        super().__init__()
        self.log_observer = log_observer
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor = reactor
        # Where it is now: twistd changes to its --rundir before the endpoint is recorded at start.
        settings = replace(settings, state_dir=settings.state_dir.absolute())
        self.settings = settings
        limits = settings.limits
        namespaces = [(n.namespace, n.entities) for n in settings.config.namespaces]
        self.development_key: str | None = None
        if not namespaces:
            self.development_key = development_key(settings.state_dir)
            exposed = readable_by_others(settings.state_dir / DEVELOPMENT_KEY_FILE)
            if exposed is not None:
                self.log.warn(
                    "the development key {path} can be read or written by other users ({exposed}): they "
                    "hold full rights on the development namespace; run 'chmod 600 {path}'",
                    path=str(settings.state_dir / DEVELOPMENT_KEY_FILE),
                    exposed=exposed,
                )
            namespaces.append(development_namespace(self.development_key))
        self.store = MemoryGatewayStore(namespaces, max_entities=int(limits["max_entities_per_namespace"]))
        self.registry: ListenerRegistry[IListenerChannel] = ListenerRegistry(chooser)
        self.connections = NamespaceConnections(int(limits["max_connections_per_namespace"]))
        self.metrics = Registry(max_entities=int(limits["metrics_max_entities"]))
        self.metrics.reserve(e.name for n in self.store.namespaces() for e in self.store.entities(n))
        self.instruments = HybridInstruments(self.metrics)
        self.throttle = FailureThrottle(
            reactor,
            base=limits["listener_failure_delay"],
            maximum=limits["listener_failure_max_delay"],
        )
        self.hybrid = HybridConnectionRouter(
            self.store,
            self.registry,
            reactor,
            websocket_base(settings.public_url or "http://localhost"),
            rendezvous_timeout=limits["rendezvous_timeout"],
            instruments=self.instruments,
            connections=self.connections,
        )
        self.hybrid_factory = HybridConnectionFactory(
            self.hybrid, self.throttle, reactor, limits, SERVER_NAME
        )
        self.http = HttpRelay(
            self.hybrid,
            reactor,
            rendezvous_timeout=limits["rendezvous_timeout"],
            rendezvous_idle_timeout=limits["http_rendezvous_idle_timeout"],
            sender_stall_timeout=limits["http_idle_timeout"],
        )
        self.hybrid_factory.request_rendezvous = self.http.request_rendezvous
        self.root = GatewayRoot(self.store)
        hybrid_resource = HybridConnectionResource(self.hybrid_factory)
        self.root.register_prefix("$hc", hybrid_resource)
        self.root.register_kind(
            HYBRID_CONNECTION, metered_requests(self.http.resource, self.instruments), streams_body=True
        )
        self.metrics.sampled(
            "relay_active_listeners",
            "Listeners online per entity, hybrid connections and binding names alike (Azure: ActiveListeners).",
            ("entity",),
            self._listener_levels,
        )
        self.metrics.sampled(
            "relay_active_connections",
            "Relayed WebSocket pairs open per hybrid connection (Azure: ActiveConnections).",
            ("entity",),
            self._connection_levels,
        )
        self.metrics.sampled(
            "relay_namespace_connections",
            "Connections open per namespace, counted against max_connections_per_namespace: listeners, "
            "WebSocket senders, relayed HTTP requests and SOAP calls.",
            ("namespace",),
            self._namespace_levels,
        )
        self.metrics.sampled(
            "relay_native_splice_pairs",
            "Relayed WebSocket pairs whose data frames the native thread relays now (the rest: in Python).",
            (),
            self._native_levels,
        )
        site = RelaySite(
            self.root,
            reactor=reactor,
            timeout=limits["http_idle_timeout"],
            stream_policy=self.root.streams_body,
            max_buffered_body=int(limits["http_max_buffered_body"]),
            linger_timeout=limits["http_linger_timeout"],
            max_request_line=int(limits["http_max_request_line"]),
            max_header_bytes=int(limits["http_max_header_bytes"]),
        )
        # Senders' and rendezvous upgrades are answered from their head, without a twisted.web Request.
        site.head_taker = hybrid_resource.direct
        if limits.get("http_lean_channel", 1.0):  # plain relayed GETs without twisted.web's channel
            self.root.offer_lean(HYBRID_CONNECTION)
            site.lean_handler = self.root
        site.unrouted = self.root.unrouted  # a body for an unknown host or name is refused unread
        site.log_target = hide_reserved_values  # tokens and rendezvous keys stay out of the access log
        self.site: Site = site
        self.public_url = settings.public_url
        self.ports: list[IListeningPort] = []
        self._endpoint_services: list[StreamServerEndpointService] = []
        self._descriptions: dict[StreamServerEndpointService, str] = {}
        for description in settings.listen:
            service = StreamServerEndpointService(serverFromString(reactor, description), self.site)
            service._raiseSynchronously = True
            service.setServiceParent(self)
            self._endpoint_services.append(service)
            self._descriptions[service] = description
        self.admin_port: IListeningPort | None = None
        self._admin_service: StreamServerEndpointService | None = None
        if settings.admin is not None:
            admin = StreamServerEndpointService(
                serverFromString(reactor, settings.admin),
                admin_site(self.metrics, reactor, ready=lambda: not self.draining),
            )
            admin._raiseSynchronously = True
            admin.setServiceParent(self)
            self._admin_service = admin
            self._descriptions[admin] = f"{settings.admin} (admin)"
        self.drain_sources: list[Callable[[], int]] = []  # extensions' work under way (SOAP requests)
        for extend in extensions:
            extend(self)

    def _listener_levels(self) -> list[tuple[Labels, float]]:
        return [
            ((entity.name,), self.registry.count(namespace, entity))
            for namespace in self.store.namespaces()
            for entity in self.store.entities(namespace)
        ]

    def _connection_levels(self) -> list[tuple[Labels, float]]:
        levels: list[tuple[Labels, float]] = [
            ((entity.name,), 0)
            for namespace in self.store.namespaces()
            for entity in self.store.entities(namespace)
            if entity.kind == HYBRID_CONNECTION
        ]
        levels.extend(((splice.entity,), 1) for splice in self.hybrid_factory.splices)
        return levels

    def _namespace_levels(self) -> list[tuple[Labels, float]]:
        return [
            ((namespace.name,), float(self.connections.count(namespace.name)))
            for namespace in self.store.namespaces()
        ]

    def _native_levels(self) -> list[tuple[Labels, float]]:
        native = self.hybrid_factory.native
        return [((), float(len(native) if native is not None else 0))]

    @override
    def setServiceParent(self, parent: Any) -> None:
        """
        Join C{parent}; offer it L{log_observer} first.

        twistd adds the plugin's service to its application before it starts logging, and asks the
        application for an C{ILogObserver} component before it builds its own.
        """
        if self.log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    @override
    def privilegedStartService(self) -> None:
        """Bind every endpoint (twistd does this before it drops privileges), naming one that cannot be."""
        for service in self:
            try:
                service.privilegedStartService()
            except (CannotListenError, OSError) as e:
                # A UNIX socket in a missing directory fails in Twisted's lock file with a bare OSError.
                if self.on_listen_failure is not None:
                    where = self._descriptions.get(service, "an endpoint")  # type: ignore[call-overload]
                    error = e.socketError if isinstance(e, CannotListenError) else e
                    reason = getattr(error, "strerror", None) or error
                    self.on_listen_failure(f"cannot listen on {where}: {reason}")
                raise

    @override
    def startService(self) -> None:
        """Listen on every endpoint, then announce where the gateway can be reached."""
        self._accept_requests()
        keep_read_buffers(int(self.settings.limits["splice_buffer_bytes"]))
        self._restore_dispatch = lean_dispatch(self.reactor)
        super().startService()
        services = [*self._endpoint_services]
        if self._admin_service is not None:
            services.append(self._admin_service)
        services = [svc for svc in services if svc._waitingForPort is not None]
        self._waiting_services = services
        waiting: list[Deferred[Any]] = [svc._waitingForPort for svc in services]  # type: ignore[misc]
        self.ready: Deferred[Any] = DeferredList(waiting, fireOnOneErrback=True, consumeErrors=True)
        self.ready.addCallback(self._listening)
        self.ready.addErrback(self._not_started)

    def _listening(self, results: list[tuple[bool, IListeningPort]]) -> GatewayService:
        ports = [(svc, port) for svc, (_, port) in zip(self._waiting_services, results, strict=True)]
        self.ports = [port for svc, port in ports if svc is not self._admin_service]
        for svc, port in ports:
            if svc is self._admin_service:
                self.admin_port = port
                self.log.info(
                    "admin endpoint (/metrics, /healthz, /readyz) on {endpoint} ({address})",
                    endpoint=self.settings.admin,
                    address=str(port.getHost()),
                )
        if self.public_url is None:
            self.public_url = self._derived_public_url()
        if self.public_url is not None:
            self.hybrid.websocket_base = websocket_base(self.public_url)
        for description, port in zip(self.settings.listen, self.ports, strict=False):
            self.log.info(
                "relay listening on {endpoint} ({address})", endpoint=description, address=str(port.getHost())
            )
        self.log.info("public URL (rendezvous addresses): {public_url}", public_url=self.public_url)
        self.log.info(
            "WebSocket pairs are relayed {splice}",
            splice=native_splice_in_use(bool(self.settings.limits.get("native_splice", 1.0))),
        )
        connection_string = self.connection_string()
        if connection_string is not None:
            self._record_endpoint()
            self.log.info(
                "development namespace (any host name, hybrid connections created on first listen); "
                "connection string: {connection_string}",
                connection_string=connection_string,
            )
        return self

    def _not_started(self, failure: Failure) -> Failure:
        """
        Say in one line that the start did not finish (no start lines, rendezvous addresses unset).

        Under twistd nothing waits on L{ready}: without this line the failure stayed in it unseen. It is
        passed on, for whoever does wait (tests, an embedding program).
        """
        error = failure.value
        self.log.error(
            "the gateway did not finish starting: {problem}", problem=f"{type(error).__name__}: {error}"
        )
        return failure

    def _derived_public_url(self) -> str | None:
        """The public URL of the first endpoint with a host and a port: a UNIX socket's path is no URL."""
        for description, port in zip(self.settings.listen, self.ports, strict=False):
            if serves_on_a_port(description):
                return public_url_for(description, port)
        return None

    def _record_endpoint(self) -> None:
        """
        Write the endpoint for C{relay connection-string}, or warn that it could not be written.

        A state directory that cannot take it (read-only, full) must not keep the gateway from saying
        it is ready: C{ready} would fail before the connection string is logged, and nothing said why.
        """
        plain = not self._serves_tls()
        try:
            write_endpoint(self.settings.state_dir, self._endpoint(), plain)
        except OSError as e:
            self.log.warn(
                "cannot record the endpoint in {path}: {reason}; 'relay connection-string' will need "
                "--endpoint",
                path=str(self.settings.state_dir / ENDPOINT_FILE),
                reason=e.strerror or e,
            )

    def _serves_tls(self) -> bool:
        """Whether the public URL is TLS (C{https} or C{wss}, in any case), as its rendezvous addresses are."""
        return websocket_base(self.public_url or "http://localhost").startswith("wss:")

    def _endpoint(self) -> str:
        netloc = urlsplit(self.public_url or "http://localhost").netloc
        return f"sb://{netloc}/"

    def connection_string(self) -> str | None:
        """The development namespace's connection string, or C{None} when a configuration file is in use."""
        if self.development_key is None:
            return None
        plain = not self._serves_tls()
        return ConnectionString(
            endpoint=self._endpoint(), key_name=DEVELOPMENT_KEY_NAME, key=self.development_key, plain=plain
        ).format()

    def _accept_requests(self) -> None:
        """Serve requests again (a stopped service started anew)."""
        serving, self._serving = self._serving, None
        restore_requests(self.site, serving)
        self.draining = False

    def in_flight(self) -> int:
        """Relayed pairs, HTTP requests and what extensions report under way: what a drain waits for."""
        extended = sum(source() for source in self.drain_sources)
        return len(self.hybrid_factory.splices) + len(self.http.exchanges) + extended

    @override
    def stopService(self) -> Deferred[None] | None:
        """
        Refuse new requests (503) and fail waiting senders; drain; then end the rest (1001 to listeners).

        With C{drain_timeout} above 0, pairs, HTTP requests and what extensions report (L{in_flight}) go on
        for up to that long (the listeners stay connected to answer them, the ports open to answer
        newcomers 503, C{/readyz} says 503), and the rest ends as soon as none is left.
        """
        self.draining = True
        timeout = self.settings.limits["drain_timeout"]
        if self._serving is None:
            self._serving = refuse_requests(self.site, rendezvous=timeout > 0)
        self.hybrid.rendezvous.fail_all(SHUTTING_DOWN, lambda t: isinstance(t.context, SenderContext))
        left = self.in_flight()
        if timeout <= 0 or not left:
            return self._end()
        self.log.info(
            "draining: {count} relayed pairs, requests and messages under way, for up to {timeout:g} s",
            count=left,
            timeout=timeout,
        )
        drained = self._drain_wait = wait_until_idle(self.reactor, self.in_flight, timeout)
        if self.hurry_on_signal:
            on_second_signal(self.reactor, self.hurry)
        drained.addCallback(self._drained, timeout)
        return drained.addCallback(lambda _: self._end())

    def hurry(self) -> None:
        """End a drain under way now, as if C{drain_timeout} had passed (a second SIGINT or SIGTERM)."""
        wait, self._drain_wait = self._drain_wait, None
        if wait is not None and not wait.called:
            self.log.info(
                "stopping now: ending {count} pairs, requests and messages under way", count=self.in_flight()
            )
            self._hurried = True
            wait.cancel()

    def _drained(self, emptied: bool, timeout: float) -> None:
        if emptied:
            self.log.info("drained: nothing is under way any more")
        elif self._hurried:
            return
        else:
            self.log.info(
                "drain_timeout ({timeout:g} s) passed with {count} pairs, requests and messages under way; "
                "ending them",
                timeout=timeout,
                count=self.in_flight(),
            )

    def _end(self) -> Deferred[None]:
        """Tell listeners the gateway is going away (1001), end pairs and requests, close the ports."""
        gate = self.site.resource
        if isinstance(gate, ShuttingDownResource):
            gate.passthrough = None  # no rendezvous upgrades any more either
        self.http.stopping = True  # nor addresses kept for late answers
        self.hybrid.rendezvous.fail_all(SHUTTING_DOWN)
        for namespace in self.store.namespaces():
            for entity in self.store.entities(namespace):
                for channel in self.registry.listeners(namespace, entity):
                    close = getattr(channel, "close", None)
                    if close is not None:
                        close(CloseCode.GOING_AWAY, "Server shutting down")
        for splice in list(self.hybrid_factory.splices):
            splice.shutdown(CloseCode.GOING_AWAY, "Server shutting down")
        self.http.shutdown()
        stopped = super().stopService()
        drained = self.hybrid_factory.drain(self.settings.limits["close_handshake_timeout"] + 1.0)
        waits = [d for d in (stopped, drained) if isinstance(d, Deferred)]
        done: Deferred[None] = DeferredList(waits, consumeErrors=True).addCallback(self._stopped)
        return done

    def _stopped(self, result: object) -> None:
        """Stop the splice's native thread; give the reactor its own event dispatch back (tests go on)."""
        native = self.hybrid_factory.native
        if native is not None:
            native.close()
        restore = self._restore_dispatch
        self._restore_dispatch = None
        if restore is not None:
            restore()
