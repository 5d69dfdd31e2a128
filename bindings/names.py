"""
The binding names a gateway serves: admission, listener policy, dynamic names, routers and the registry view.

A L{BoundName} exists for every C{oneway}, C{requestreply} or C{multicast} entity that has had a listener
(or a sender) on this gateway; it owns the entity's router and the contract its listeners registered.
L{NameTable} decides who may listen or send (SAS tokens, spec 10), whether a new listener's policy matches
the others (C{client_auth}, C{discovery}, contract hash: spec 10.3, C{AddressInUse} otherwise), creates
dynamic names on a first registration when the namespace auto-creates names and removes them when their
last listener leaves (spec 2). Quotas use the shared L{ListenerRegistry}. Nothing here touches a socket or
an XML document: the contract is kept as an opaque value with its hash.

For the service registry it keeps an index of the binding names below every prefix, updated as the store
adds and removes entities, so that a path naming nothing is told apart in as many steps as it has
segments (not by walking every name), and a version of what the registry shows, for caching its feeds.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.interfaces import IReactorTime

from bindings.faultcodes import RelayFault, RelayFaultError
from bindings.instruments import BindingInstruments
from bindings.multicast import MulticastRouter
from bindings.oneway import ListenerSet, OneWayRouter
from bindings.outlet import IListenerConnection, Outlet
from bindings.requestreply import RequestReplyRouter
from bindings.settings import (
    BINDING_KINDS,
    MULTICAST,
    ONEWAY,
    BindingEntitySettings,
    ClientAuth,
    Discovery,
    settings_for,
)
from relay.auth import Grant, Rights, validate_any
from relay.entities import Entity, EntityMatch, EntityNameError, Namespace, split_name
from relay.errors import ErrorKind
from relay.listeners import IListenerChooser, ListenerRegistry, QuotaExceeded
from relay.logger import Logger
from relay.store import EntityConflict, EntityQuotaExceeded, IGatewayStore

Router = OneWayRouter | RequestReplyRouter | MulticastRouter
_URL_CACHE_SIZE = 20_000
"""Public URLs remembered (every message needs its name's C{wsa:To}); twice the default names per namespace."""


@dataclass(frozen=True, slots=True)
class ListenerPolicy:
    """
    What a registering listener asks for (from its C{r:Register}).

    @ivar kind: the entity kind it serves.
    @ivar contract: the transport's parsed contract (WSDL and operations), opaque here; C{None} for a
        multicast listener that sent no WSDL.
    @ivar contract_hash: the portType hash of that contract, compared between listeners.
    """

    kind: str
    client_auth: ClientAuth
    discovery: Discovery
    display_name: str | None
    contract: Any = field(default=None, repr=False, compare=False)
    contract_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Listing:
    """One name in the service registry (spec 13): built into an Atom entry by the transport."""

    url: str
    display_name: str
    updated: datetime.datetime
    kind: str
    public: bool


@dataclass(slots=True)
class _Below:
    """The binding names at or below one prefix (the registry index), in the order they were added."""

    names: dict[str, Entity] = field(default_factory=dict)
    public: int = 0


def prefix_segments(prefix: str) -> tuple[str, ...]:
    """The segments of a registry prefix as names are matched: lower case, empty ones dropped."""
    return tuple(s.lower() for s in prefix.split("/") if s)


class BoundName:
    """
    One binding name routed by this gateway.

    @ivar namespace: its namespace.
    @ivar entity: the entity (persistent or dynamic).
    @ivar router: the router of its kind.
    @ivar contract: the contract the current listeners registered (kept after they leave, for C{?wsdl}).
    @ivar contract_hash: the hash of that contract.
    @ivar listeners_hash: the contract hash the current listeners registered with (C{None}: no WSDL),
        which a new listener must match; set anew by the first listener after the name had none.
    @ivar display_name: the registry title.
    @ivar updated: when the registration last changed.
    @ivar listeners: the registered listener connections, oldest first.
    """

    def __init__(
        self,
        namespace: Namespace,
        entity: Entity,
        clock: IReactorTime,
        chooser: IListenerChooser,
        *,
        trace: bool = False,
        instruments: BindingInstruments | None = None,
    ) -> None:
        self.namespace = namespace
        self.entity = entity
        settings: BindingEntitySettings = entity.settings
        self.settings = settings
        self.router: Router
        if entity.kind == MULTICAST:
            slow = instruments.slow_cell(entity.name) if instruments is not None else None
            dropped = instruments.dropped_cell(entity.name) if instruments is not None else None
            self.router = MulticastRouter(
                entity.name, settings, clock, trace=trace, slow_disconnects=slow, dropped_copies=dropped
            )
        elif entity.kind == ONEWAY:
            self.router = OneWayRouter(ListenerSet(entity.name, settings, clock, trace=trace), chooser)
        else:
            self.router = RequestReplyRouter(ListenerSet(entity.name, settings, clock, trace=trace), chooser)
        self.contract: Any = None
        self.contract_hash: str | None = None
        self.listeners_hash: str | None = None
        self.display_name = settings.title(entity.name)
        self.updated = datetime.datetime.fromtimestamp(clock.seconds(), datetime.UTC)
        self.listeners: list[IListenerConnection] = []

    @property
    def kind(self) -> str:
        """The entity kind."""
        return self.entity.kind

    def attach(self, connection: IListenerConnection) -> Outlet:
        """Route to a listener; the transport registers the returned outlet as its socket's producer."""
        self.listeners.append(connection)
        if isinstance(self.router, MulticastRouter):
            return self.router.subscribe(connection)
        return self.router.add_listener(connection)

    def outlets(self) -> list[Outlet]:
        """The listeners' outlets (for queue metrics)."""
        router = self.router
        find = router.outlet if isinstance(router, MulticastRouter) else router.listeners.outlet
        return [outlet for outlet in map(find, self.listeners) if outlet is not None]

    def detach(self, connection: IListenerConnection) -> bool:
        """Stop routing to a listener (its pending requests fail with C{ListenerGone})."""
        if connection not in self.listeners:
            return False
        self.listeners.remove(connection)
        if isinstance(self.router, MulticastRouter):
            self.router.unsubscribe(connection)
        else:
            self.router.remove_listener(connection)
        return True


def _fault_for_denial(kind: ErrorKind) -> RelayFault:
    return RelayFault.FORBIDDEN if kind is ErrorKind.FORBIDDEN else RelayFault.UNAUTHORIZED


class NameTable:
    """
    Every binding name of every namespace this gateway serves.

    @ivar registry: listener connections per entity, for quotas; the gateway's own registry, shared with
        hybrid connections (a name has one kind, so neither side ever sees the other's listeners).
    @ivar trace: whether routers log every routed message at debug level (L{bindings.oneway.ListenerSet}).
    """

    log = Logger()

    def __init__(
        self,
        store: IGatewayStore,
        clock: IReactorTime,
        chooser: IListenerChooser,
        public_base: Callable[[], str],
        registry: ListenerRegistry[Any] | None = None,
        *,
        trace: bool = False,
        instruments: BindingInstruments | None = None,
    ) -> None:
        self.store = store
        self.instruments = instruments
        self.trace = trace
        self.clock = clock
        self.chooser = chooser
        self.registry: ListenerRegistry[Any] = registry if registry is not None else ListenerRegistry(chooser)
        self._public_base = public_base
        self._bound: dict[tuple[str, str], BoundName] = {}
        self._started = datetime.datetime.fromtimestamp(clock.seconds(), datetime.UTC)
        self._urls: dict[tuple[str, tuple[str, ...], str], str] = {}
        self._below: dict[str, dict[tuple[str, ...], _Below]] = {}  # namespace -> prefix -> names
        self._versions: dict[str, tuple[int, datetime.datetime]] = {}  # namespace -> registry version
        store.watch(self._entity_changed)
        for namespace in store.namespaces():
            for entity in store.entities(namespace):
                if entity.kind in BINDING_KINDS:
                    self._index(namespace, entity, True)

    # -- lookup ---------------------------------------------------------------------------------------

    def namespace(self, host: str) -> Namespace:
        """
        The namespace a host selects.

        @raise RelayFaultError: C{NoSuchEntity} when no namespace is served under that host.
        """
        namespace = self.store.namespace_for_host(host)
        if namespace is None:
            raise RelayFaultError(RelayFault.NO_SUCH_ENTITY, "No namespace is served under this host name")
        return namespace

    def resolve(self, host: str, path: str) -> tuple[Namespace, EntityMatch]:
        """
        The namespace and binding entity a sender addresses.

        @raise RelayFaultError: C{NoSuchEntity} for an unknown name or one of another kind.
        """
        namespace = self.namespace(host)
        match = self.store.match(namespace, path)
        if match is None:
            raise RelayFaultError(RelayFault.NO_SUCH_ENTITY, "No entity with this name")
        if match.entity.kind not in BINDING_KINDS:
            raise RelayFaultError(
                RelayFault.NO_SUCH_ENTITY, f"{match.entity.name!r} is not a SOAP relay binding name"
            )
        return namespace, match

    def listener_target(self, host: str, path: str) -> tuple[Namespace, str, Entity | None]:
        """
        Where a listener wants to register: the namespace, the name, and the entity if it exists.

        A listener addresses a name exactly (no suffix). An unknown name is acceptable only where the
        namespace creates names on first registration (C{auto_create}, spec 2: dynamic names).

        @raise RelayFaultError: C{NoSuchEntity}.
        """
        namespace = self.namespace(host)
        try:
            name = "/".join(split_name(path))
        except EntityNameError as e:
            raise RelayFaultError(RelayFault.NO_SUCH_ENTITY, str(e)) from None
        entity = self.store.get(namespace, name)
        if entity is None:
            match = self.store.match(namespace, path)
            if match is not None and match.entity.kind not in BINDING_KINDS:
                raise RelayFaultError(
                    RelayFault.NO_SUCH_ENTITY, f"{match.entity.name!r} is not a SOAP relay binding name"
                )
            if not namespace.auto_create:
                raise RelayFaultError(RelayFault.NO_SUCH_ENTITY, "No entity with this name")
            return namespace, name, None
        if entity.kind not in BINDING_KINDS:
            raise RelayFaultError(
                RelayFault.NO_SUCH_ENTITY, f"{entity.name!r} is not a SOAP relay binding name"
            )
        return namespace, entity.name, entity

    def bound(self, namespace: Namespace, entity: Entity) -> BoundName:
        """The routing state of a binding entity, made on first use."""
        key = (namespace.name, entity.key)
        bound = self._bound.get(key)
        if bound is None or bound.entity is not entity:
            bound = BoundName(
                namespace, entity, self.clock, self.chooser, trace=self.trace, instruments=self.instruments
            )
            self._bound[key] = bound
            self._registry_changed(namespace)  # its entry's time is now the BoundName's
        return bound

    def existing(self, namespace: Namespace, entity: Entity) -> BoundName | None:
        """The routing state of an entity if this gateway has any, without making it."""
        bound = self._bound.get((namespace.name, entity.key))
        return bound if bound is not None and bound.entity is entity else None

    def public_url(self, namespace: Namespace, name: str) -> str:
        """
        The public URL of a name: C{{scheme}://{host}[:port]/{name}}.

        Scheme and port come from the gateway's public URL; the host too, unless the namespace is reached
        under other host names (then its first one is used, as Azure names a namespace by its host).
        """
        public_base = self._public_base()
        key = (public_base, namespace.hosts, name)
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            url = self._urls[key] = self._public_url(public_base, namespace, name)
        return url

    @staticmethod
    def _public_url(public_base: str, namespace: Namespace, name: str) -> str:
        base = urlsplit(public_base)
        host = base.hostname or "localhost"
        hosts = [h for h in namespace.hosts if h != "*"]
        if hosts and host not in hosts:
            host = hosts[0]
        netloc = f"[{host}]" if ":" in host else host
        if base.port is not None:
            netloc += f":{base.port}"
        return f"{base.scheme}://{netloc}{base.path.rstrip('/')}/{name}"

    # -- authorization --------------------------------------------------------------------------------

    def authorize(
        self,
        namespace: Namespace,
        name: str,
        rules: Sequence[Any],
        host: str,
        tokens: Sequence[str],
        needed: Rights,
        anonymous_ok: bool = False,
    ) -> Grant | None:
        """
        Check presented tokens for C{needed} on a name (spec 10.1).

        @param anonymous_ok: a sender of a C{client_auth=anonymous} name may present nothing; a token it
            does present must still be valid (no silent downgrade of a bad credential).
        @return: the grant, or C{None} for an anonymous sender.
        @raise RelayFaultError: C{Unauthorized} (401) or C{Forbidden} (403).
        """
        if anonymous_ok and not tokens:
            return None
        decision = validate_any(
            tokens,
            rules=(*namespace.rules, *rules),
            namespace_hosts=namespace.audience_hosts(host),
            entity_path=name,
            needed=needed,
            now=self.clock.seconds(),
        )
        if isinstance(decision, Grant):
            return decision
        raise RelayFaultError(_fault_for_denial(decision.kind), decision.reason)

    def check_quota(self, namespace: Namespace, entity: Entity | None) -> None:
        """
        Refuse a listener's handshake early when its name is full.

        @raise RelayFaultError: C{QuotaExceeded} (403).
        """
        if entity is None:
            return
        settings: BindingEntitySettings = entity.settings
        if self.registry.count(namespace, entity) >= settings.max_listeners:
            raise RelayFaultError(
                RelayFault.QUOTA_EXCEEDED,
                f"Quota exceeded: {entity.name!r} allows {settings.max_listeners} listeners",
            )

    # -- registration ---------------------------------------------------------------------------------

    def register(
        self,
        namespace: Namespace,
        name: str,
        policy: ListenerPolicy,
        connection: IListenerConnection,
    ) -> tuple[BoundName, Outlet]:
        """
        Register a listener whose C{r:Register} asked for C{policy} (spec 10.3).

        @return: the name's routing state and the outlet the transport registers as producer.
        @raise RelayFaultError: C{AddressInUse} when the policy differs from the name's, C{QuotaExceeded},
            C{NoSuchEntity} when the name vanished or cannot be created.
        """
        entity = self.store.get(namespace, name)
        if entity is None:
            entity = self._create(namespace, name, policy)
        if entity.kind not in BINDING_KINDS:
            raise RelayFaultError(
                RelayFault.NO_SUCH_ENTITY, f"{entity.name!r} is not a SOAP relay binding name"
            )
        bound = self.bound(namespace, entity)
        problem = self._policy_problem(bound, policy)
        if problem is not None:
            self.log.info(
                "listener {listener_id} refused on {entity}: {problem}",
                listener_id=connection.listener_id,
                entity=entity.name,
                problem=problem,
            )
            raise RelayFaultError(RelayFault.ADDRESS_IN_USE, problem)
        try:
            self.registry.add(namespace, entity, connection, bound.settings.max_listeners)
        except QuotaExceeded:
            raise RelayFaultError(
                RelayFault.QUOTA_EXCEEDED,
                f"Quota exceeded: {entity.name!r} allows {bound.settings.max_listeners} listeners",
            ) from None
        if not bound.listeners:
            bound.listeners_hash = policy.contract_hash  # what the next listeners must match
            if policy.contract_hash is not None:
                bound.contract, bound.contract_hash = policy.contract, policy.contract_hash
        if not bound.settings.display_name and policy.display_name:
            bound.display_name = policy.display_name
        bound.updated = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)
        self._registry_changed(namespace)
        outlet = bound.attach(connection)
        self.log.info(
            "listener {listener_id} registered on {kind} {entity} ({count} listeners)",
            listener_id=connection.listener_id,
            kind=entity.kind,
            entity=entity.name,
            count=len(bound.listeners),
        )
        return bound, outlet

    def _create(self, namespace: Namespace, name: str, policy: ListenerPolicy) -> Entity:
        if not namespace.auto_create:
            raise RelayFaultError(RelayFault.NO_SUCH_ENTITY, "No entity with this name")
        settings = settings_for(
            policy.kind,
            client_auth=policy.client_auth,
            discovery=policy.discovery,
            display_name=policy.display_name,
        )
        try:
            entity = self.store.add(
                namespace, Entity(name=name, kind=policy.kind, settings=settings, dynamic=True)
            )
        except EntityConflict as e:
            raise RelayFaultError(RelayFault.NO_SUCH_ENTITY, str(e)) from None
        except EntityQuotaExceeded as e:
            raise RelayFaultError(RelayFault.QUOTA_EXCEEDED, str(e)) from None
        self.log.info(
            "created dynamic {kind} name {entity} in {namespace} for its first listener",
            kind=policy.kind,
            entity=entity.name,
            namespace=namespace.name,
        )
        return entity

    def _policy_problem(self, bound: BoundName, policy: ListenerPolicy) -> str | None:
        settings = bound.settings
        if policy.kind != bound.kind:
            return f"{bound.entity.name!r} is a {bound.kind} name, not {policy.kind}"
        if policy.client_auth is not settings.client_auth:
            return f"the name requires client_auth={settings.client_auth.value}"
        if policy.discovery is not settings.discovery:
            return f"the name requires discovery={settings.discovery.value}"
        if bound.listeners and policy.contract_hash != bound.listeners_hash:
            return "the contract differs from the one the name's listeners registered"
        return None

    def unregister(self, bound: BoundName, connection: IListenerConnection) -> None:
        """A listener left: stop routing to it; a dynamic name goes away with its last listener."""
        if not bound.detach(connection):
            return
        self.registry.remove(bound.namespace, bound.entity, connection)
        bound.updated = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)
        self._registry_changed(bound.namespace)
        self.log.info(
            "listener {listener_id} left {entity} ({count} listeners)",
            listener_id=connection.listener_id,
            entity=bound.entity.name,
            count=len(bound.listeners),
        )
        if not bound.listeners and bound.entity.dynamic:
            if self.store.get(bound.namespace, bound.entity.name) is bound.entity:
                self.store.remove(bound.namespace, bound.entity.name)
            self._bound.pop((bound.namespace.name, bound.entity.key), None)
            self.log.info("removed dynamic name {entity} with its last listener", entity=bound.entity.name)

    def queues(self) -> list[tuple[str, int, int]]:
        """C{(entity, queued messages, queued bytes)} per listener outlet, for queue metrics."""
        return [
            (bound.entity.name, outlet.queued_messages, outlet.queued_bytes)
            for bound in list(self._bound.values())
            for outlet in bound.outlets()
        ]

    def under_way(self) -> int:
        """
        Requests awaiting their replies and messages queued for listeners, on every name.

        What a stopping gateway waits for while it drains (C{drain_timeout}) before it closes listeners.
        """
        total = 0
        for bound in list(self._bound.values()):
            if isinstance(bound.router, RequestReplyRouter):
                total += bound.router.in_flight()
            total += sum(outlet.queued_messages for outlet in bound.outlets())
        return total

    def connections(self) -> list[IListenerConnection]:
        """Every registered listener connection (for shutdown)."""
        return [c for bound in list(self._bound.values()) for c in bound.listeners]

    # -- registry -------------------------------------------------------------------------------------

    def _entity_changed(self, namespace: Namespace, entity: Entity, added: bool) -> None:
        if entity.kind in BINDING_KINDS:
            self._index(namespace, entity, added)
            self._registry_changed(namespace)

    def _index(self, namespace: Namespace, entity: Entity, added: bool) -> None:
        """Add a binding entity to (or remove it from) the index at every prefix of its name, itself included."""
        table = self._below.setdefault(namespace.name, {})
        segments = prefix_segments(entity.name)
        public = entity.settings.discovery is Discovery.PUBLIC
        for depth in range(len(segments) + 1):
            prefix = segments[:depth]
            below = table.get(prefix)
            if added:
                if below is None:
                    below = table[prefix] = _Below()
                if entity.key not in below.names:
                    below.names[entity.key] = entity
                    below.public += public
            elif below is not None and below.names.get(entity.key) is entity:
                del below.names[entity.key]
                below.public -= public
                if not below.names:
                    del table[prefix]

    def _registry_changed(self, namespace: Namespace) -> None:
        version, _ = self._versions.get(namespace.name, (0, self._started))
        now = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)
        self._versions[namespace.name] = (version + 1, now)

    def registry_version(self, namespace: Namespace) -> tuple[int, datetime.datetime]:
        """
        A number that changes whenever what the registry shows of a namespace changes, and when it last did.

        Names added or removed, listeners registered or gone: a feed rendered at one version is valid as
        long as the version is the same (the time is the gateway's start until the first change).
        """
        return self._versions.get(namespace.name, (0, self._started))

    def names_below(self, namespace: Namespace, prefix: str) -> tuple[int, int]:
        """How many binding names are at or below C{prefix}, and how many of them are public; no walk."""
        below = self._below.get(namespace.name, {}).get(prefix_segments(prefix))
        return (len(below.names), below.public) if below is not None else (0, 0)

    def listings(self, namespace: Namespace, prefix: str = "") -> list[Listing]:
        """
        The binding names of a namespace below C{prefix} for the service registry (spec 13).

        Persistent names are listed whether or not they are listened on; dynamic names exist only while
        they are. Visibility (public, or a Manage token) is the caller's filter. The cost is the names
        listed, not the names of the namespace.
        """
        below = self._below.get(namespace.name, {}).get(prefix_segments(prefix))
        listings: list[Listing] = []
        for entity in below.names.values() if below is not None else ():
            settings: BindingEntitySettings = entity.settings
            bound = self.existing(namespace, entity)
            listings.append(
                Listing(
                    url=self.public_url(namespace, entity.name),
                    display_name=bound.display_name if bound is not None else settings.title(entity.name),
                    updated=bound.updated if bound is not None else self._started,
                    kind=entity.kind,
                    public=settings.discovery is Discovery.PUBLIC,
                )
            )
        return listings
