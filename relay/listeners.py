"""
Listener bookkeeping: who is listening on which entity, quotas, and the choice of a listener per sender.

Hybrid connections and the SOAP bindings both register their live listener connections here, keyed by
namespace and entity, so quotas and load balancing work the same way for both.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Generic, TypeVar

from zope.interface import Interface, implementer

from relay.entities import Entity, Namespace

T = TypeVar("T")


class IListenerChooser(Interface):
    """Picks one listener among the live ones (random in production, fixed in tests)."""

    def choose(candidates: Sequence[object]) -> object:
        """Return one element of a non-empty sequence."""


@implementer(IListenerChooser)
class RandomChooser:
    """
    Uniform random choice: Azure's "fair distribution attempted, best effort".

    The spread needs no secrecy, so the generator is Python's own (seeded from the system), not
    C{SystemRandom}: that made two C{getrandom} system calls per relayed request or pair, for one listener
    as for many.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()  # noqa: S311 - spreading load, not keeping a secret

    def choose(self, candidates: Sequence[T]) -> T:
        """Pick uniformly at random (the only one, without drawing)."""
        if len(candidates) == 1:
            return candidates[0]
        return candidates[self._rng.randrange(len(candidates))]


@implementer(IListenerChooser)
class RoundRobinChooser:
    """Deterministic rotation, for tests and for operators who prefer strict spreading."""

    def __init__(self) -> None:
        self._next = 0

    def choose(self, candidates: Sequence[T]) -> T:
        """Pick the next one in turn."""
        choice = candidates[self._next % len(candidates)]
        self._next += 1
        return choice


class QuotaExceeded(Exception):
    """An entity already has as many listeners as it allows."""


def entity_key(namespace: Namespace, entity: Entity) -> tuple[str, str]:
    """The registry key of an entity."""
    return (namespace.name, entity.key)


class ListenerRegistry(Generic[T]):
    """
    Live listeners per entity.

    @ivar chooser: picks the listener for each new sender.
    """

    def __init__(self, chooser: IListenerChooser | None = None) -> None:
        self.chooser: IListenerChooser = chooser or RandomChooser()
        self._listeners: dict[tuple[str, str], list[T]] = {}

    def add(self, namespace: Namespace, entity: Entity, listener: T, limit: int) -> None:
        """
        Register a listener.

        @raise QuotaExceeded: when C{limit} listeners are already registered.
        """
        current = self._listeners.setdefault(entity_key(namespace, entity), [])
        if len(current) >= limit:
            raise QuotaExceeded(f"entity {entity.name!r} already has {limit} listeners")
        current.append(listener)

    def remove(self, namespace: Namespace, entity: Entity, listener: T) -> bool:
        """Unregister a listener; return whether it was registered."""
        key = entity_key(namespace, entity)
        current = self._listeners.get(key)
        if not current or listener not in current:
            return False
        current.remove(listener)
        if not current:
            del self._listeners[key]
        return True

    def listeners(self, namespace: Namespace, entity: Entity) -> list[T]:
        """The live listeners of an entity, oldest first."""
        return list(self._listeners.get(entity_key(namespace, entity), ()))

    def count(self, namespace: Namespace, entity: Entity) -> int:
        """How many listeners an entity has."""
        return len(self._listeners.get(entity_key(namespace, entity), ()))

    def choose(self, namespace: Namespace, entity: Entity, exclude: Sequence[T] = ()) -> T | None:
        """Pick a listener for a new sender, skipping C{exclude}; C{None} when there is none."""
        candidates = [
            listener
            for listener in self._listeners.get(entity_key(namespace, entity), ())
            if listener not in exclude
        ]
        if not candidates:
            return None
        return self.chooser.choose(candidates)  # type: ignore[return-value]

    def total(self) -> int:
        """All registered listeners, for metrics."""
        return sum(len(v) for v in self._listeners.values())
