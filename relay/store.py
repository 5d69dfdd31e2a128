"""
The gateway store: namespaces and their entities.

One implementation lives in memory (the embedded default); the interface is the seam a shared store for
several gateways plugs into. Lookups are synchronous because every gateway keeps the entity table it
serves from in memory; a shared store keeps that table in step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from zope.interface import Interface, implementer

from relay.entities import MAX_ENTITIES_PER_NAMESPACE, Entity, EntityMatch, Namespace, match_entity


class EntityConflict(ValueError):
    """A name is already taken by an entity of another kind."""


class EntityQuotaExceeded(ValueError):
    """A namespace already holds as many entities as it may: no dynamic one is added."""


EntityObserver = Callable[[Namespace, Entity, bool], object]
"""Told C{(namespace, entity, added)} after an entity was added (C{True}) or removed (C{False})."""


class IGatewayStore(Interface):
    """Where namespaces and entity definitions live."""

    def namespaces() -> list[Namespace]:
        """All namespaces."""

    def namespace_for_host(host: str) -> Namespace | None:
        """The namespace a request with this C{Host} (no port, any case) belongs to, or C{None}."""

    def match(namespace: Namespace, path: str) -> EntityMatch | None:
        """The entity with the longest name that prefixes C{path} (raw, no C{$hc}), and the suffix."""

    def entities(namespace: Namespace) -> list[Entity]:
        """All entities of a namespace."""

    def get(namespace: Namespace, name: str) -> Entity | None:
        """The entity with exactly this name (any case), or C{None}."""

    def add(namespace: Namespace, entity: Entity) -> Entity:
        """
        Add an entity, or return the existing one of the same kind and name.

        @raise EntityConflict: when the name belongs to an entity of another kind.
        @raise EntityQuotaExceeded: for a dynamic entity, when the namespace is full.
        """

    def remove(namespace: Namespace, name: str) -> Entity | None:
        """Remove an entity by name and return it, or C{None} if there was none."""

    def watch(observer: EntityObserver) -> None:
        """
        Tell C{observer} of every entity added or removed from now on (not of an existing one C{add} returns).

        For views kept beside the store (the service registry's index of names by prefix).
        """


@implementer(IGatewayStore)
class MemoryGatewayStore:
    """
    Namespaces and entities held in this process.

    Host lookup is exact (case-insensitive) first, then the wildcard namespace, if any.
    """

    def __init__(
        self,
        namespaces: Iterable[tuple[Namespace, Iterable[Entity]]] = (),
        *,
        max_entities: int = MAX_ENTITIES_PER_NAMESPACE,
    ) -> None:
        self.max_entities = max_entities  # per namespace; configured entities may go past it, dynamic not
        self._namespaces: dict[str, Namespace] = {}
        self._by_host: dict[str, Namespace] = {}
        self._wildcard: Namespace | None = None
        self._entities: dict[str, dict[str, Entity]] = {}
        self._observers: list[EntityObserver] = []
        for namespace, entities in namespaces:
            self.add_namespace(namespace)
            for entity in entities:
                self.add(namespace, entity)

    def add_namespace(self, namespace: Namespace) -> None:
        """
        Add a namespace; its name and its hosts must not belong to another one.

        Entity tables and live listeners are keyed by the namespace's name, so a second namespace of the
        same name would take over the first one's table: the first one's hosts and keys would reach the
        second one's entities and listeners.

        @raise ValueError: when the name or a host is taken.
        """
        if namespace.name in self._namespaces:
            raise ValueError(f"namespace name {namespace.name!r} is used by two namespaces")
        for host in namespace.hosts:
            if host == "*":
                if self._wildcard is not None:
                    raise ValueError("only one namespace may use the host '*'")
                self._wildcard = namespace
            elif host in self._by_host:
                raise ValueError(f"host {host!r} already belongs to namespace {self._by_host[host].name!r}")
            else:
                self._by_host[host] = namespace
        self._namespaces[namespace.name] = namespace
        self._entities[namespace.name] = {}

    def namespaces(self) -> list[Namespace]:
        """All namespaces."""
        return list(self._namespaces.values())

    def namespace_for_host(self, host: str) -> Namespace | None:
        """The namespace for a host name, falling back to the wildcard namespace."""
        return self._by_host.get(host.lower(), self._wildcard)

    def match(self, namespace: Namespace, path: str) -> EntityMatch | None:
        """Longest-segment match of C{path} against the namespace's names."""
        return match_entity(self._entities[namespace.name], path)

    def entities(self, namespace: Namespace) -> list[Entity]:
        """All entities of a namespace, in the order they were added."""
        return list(self._entities[namespace.name].values())

    def get(self, namespace: Namespace, name: str) -> Entity | None:
        """The entity with exactly this name."""
        return self._entities[namespace.name].get(name.strip("/").lower())

    def add(self, namespace: Namespace, entity: Entity) -> Entity:
        """Add an entity unless one of the same kind and name exists."""
        table = self._entities[namespace.name]
        existing = table.get(entity.key)
        if existing is not None:
            if existing.kind != entity.kind:
                raise EntityConflict(f"{entity.name!r} is already a {existing.kind} entity")
            return existing
        if entity.dynamic and len(table) >= self.max_entities:
            raise EntityQuotaExceeded(
                f"Quota exceeded: namespace {namespace.name!r} holds {self.max_entities} entities"
            )
        table[entity.key] = entity
        for observer in self._observers:
            observer(namespace, entity, True)
        return entity

    def remove(self, namespace: Namespace, name: str) -> Entity | None:
        """Remove an entity by name."""
        entity = self._entities[namespace.name].pop(name.strip("/").lower(), None)
        if entity is not None:
            for observer in self._observers:
                observer(namespace, entity, False)
        return entity

    def watch(self, observer: EntityObserver) -> None:
        """Tell C{observer} of every entity added or removed from now on."""
        self._observers.append(observer)
