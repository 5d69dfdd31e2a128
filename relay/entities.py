"""
Namespaces, entity kinds and their settings, and the longest-segment match of a path to an entity.

A namespace is reached under one or more host names (or C{*} for any) and owns a flat table of entity
names. A name may have several segments (C{team/app}); a request path is matched segment by segment,
case-insensitively, and the longest configured name wins. Whatever follows the name is the suffix, which
belongs to the application. One name belongs to exactly one entity kind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.auth import SharedAccessRule

HYBRID_CONNECTION = "hybrid_connection"

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,127}")  # fullmatch: "$" would let a final "\n" through
MAX_NAME_LENGTH = 260
MAX_ENTITIES_PER_NAMESPACE = 10_000
"""Entities a namespace may hold (both specs' default): dynamic ones are refused past it (L{relay.store})."""
MAX_NAME_SEGMENTS = 16
"""Segments a name may have: a request path is matched against names of up to this many (L{match_entity})."""
RESERVED_FIRST_SEGMENTS = frozenset({"$hc", "$wcf", "$admin", "$metrics"})


class EntityNameError(ValueError):
    """An entity name is not allowed."""


def split_name(name: str) -> tuple[str, ...]:
    """
    Check an entity name and split it into segments.

    Segments start with a letter or digit and hold letters, digits, C{.}, C{_} and C{-}, as Azure allows.

    @raise EntityNameError: with the reason when the name is not allowed.
    """
    stripped = name.strip("/")
    if not stripped:
        raise EntityNameError("entity name is empty")
    if len(stripped) > MAX_NAME_LENGTH:
        raise EntityNameError(f"entity name is longer than {MAX_NAME_LENGTH} characters")
    segments = tuple(stripped.split("/"))
    if len(segments) > MAX_NAME_SEGMENTS:
        raise EntityNameError(f"entity name has more than {MAX_NAME_SEGMENTS} segments")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            raise EntityNameError(
                f"entity name segment {segment!r} must start with a letter or digit and contain only "
                "letters, digits, '.', '_' and '-'"
            )
    return segments


def name_key(segments: Sequence[str]) -> str:
    """The case-insensitive lookup key of a name."""
    return "/".join(s.lower() for s in segments)


@dataclass(frozen=True, slots=True)
class HybridConnectionSettings:
    """
    Per hybrid connection settings.

    @ivar requires_client_authorization: when false, senders need no token (listeners always do).
    @ivar max_listeners: concurrent listeners allowed (Azure: 25).
    @ivar request_timeout: seconds an HTTP sender waits for the listener's response headers.
    @ivar http_enabled: whether plain HTTP requests are relayed to listeners.
    """

    requires_client_authorization: bool = True
    max_listeners: int = 25
    request_timeout: float = 60.0
    http_enabled: bool = True


@dataclass(frozen=True, slots=True)
class Entity:
    """
    One named entity of a namespace.

    @ivar name: the name as configured (original case), segments joined by C{/}.
    @ivar kind: C{hybrid_connection}, or a binding kind registered by another layer.
    @ivar rules: shared access rules that only apply to this entity.
    @ivar settings: the kind's settings value.
    @ivar dynamic: created at run time (auto-create) rather than configured.
    """

    name: str
    kind: str
    rules: tuple[SharedAccessRule, ...] = ()
    settings: Any = field(default_factory=HybridConnectionSettings)
    dynamic: bool = False
    key: str = field(init=False, repr=False, compare=False)
    """The case-insensitive lookup key, made once: every relayed request and pair looks its entity up."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", name_key(self.segments))

    @property
    def segments(self) -> tuple[str, ...]:
        """The name split into segments."""
        return tuple(self.name.split("/"))


@dataclass(frozen=True, slots=True)
class Namespace:
    """
    A namespace: host names, namespace-wide rules, and whether unknown hybrid connections are created.

    @ivar name: a label for logs and the management API.
    @ivar hosts: host names that select this namespace; C{*} matches any host.
    @ivar rules: namespace-wide shared access rules.
    @ivar auto_create: create a hybrid connection when its first listener arrives (emulator use).
    """

    name: str
    hosts: tuple[str, ...]
    rules: tuple[SharedAccessRule, ...] = ()
    auto_create: bool = False

    @property
    def is_wildcard(self) -> bool:
        """Whether any host name selects this namespace."""
        return "*" in self.hosts

    def audience_hosts(self, request_host: str) -> tuple[str, ...]:
        """
        Host names a token's C{sr} may name for a request that arrived with C{request_host}.

        For a wildcard namespace the host the client used is the namespace host, as in Azure where the host
        name is the namespace.
        """
        hosts = tuple(h for h in self.hosts if h != "*")
        if self.is_wildcard and request_host:
            hosts = (*hosts, request_host)
        return hosts


@dataclass(frozen=True, slots=True)
class EntityMatch:
    """
    The outcome of resolving a path: the entity and what followed its name.

    @ivar entity: the matched entity.
    @ivar suffix: the rest of the path after the name, with its leading C{/}, or C{""}.
    """

    entity: Entity
    suffix: str


def match_entity(
    entities: Mapping[str, Entity], path: str, max_segments: int = MAX_NAME_SEGMENTS
) -> EntityMatch | None:
    """
    Find the entity whose name is the longest segment-wise, case-insensitive prefix of C{path}.

    @param path: a decoded path without query, relative to the namespace root (no C{$hc} prefix).
    """
    raw_segments = path.lstrip("/").split("/")
    upper = min(len(raw_segments), max_segments)
    lowered = [s.lower() for s in raw_segments[:upper]]
    for n in range(upper, 0, -1):
        entity = entities.get("/".join(lowered[:n]))
        if entity is not None:
            rest = raw_segments[n:]
            return EntityMatch(entity, "/" + "/".join(rest) if rest else "")
    return None
