"""
Settings of the three binding entity kinds, the client-side binding values, and their TOML sections.

Defaults and hard caps are those of spec section 12; a value outside its bounds is refused when the
settings are made (C{ValueError}) or when the configuration file is read (L{relay.config.ConfigError}
naming the key). The TOML sections plug into L{relay.config.load_config} as L{EntitySection} values:
C{[[namespaces.oneway]]}, C{[[namespaces.requestreply]]}, C{[[namespaces.multicast]]}.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar, Final

from relay.config import EntitySection, Section, parse_rules
from relay.entities import Entity

ONEWAY: Final = "oneway"
REQUEST_REPLY: Final = "requestreply"
MULTICAST: Final = "multicast"
BINDING_KINDS: Final = (ONEWAY, REQUEST_REPLY, MULTICAST)

KIB: Final = 1024
MIB: Final = 1024 * KIB

MESSAGE_BYTES: Final = {
    # kind: (default, hard cap)
    ONEWAY: (64 * KIB, 1 * MIB),
    MULTICAST: (64 * KIB, 1 * MIB),
    REQUEST_REPLY: (4 * MIB, 64 * MIB),
}
DELIVERY_HEADROOM: Final = 8 * MIB
"""More than the headers the gateway adds to a message may take (HTTP's SOAPAction and Authorization, escaped)."""


def delivery_cap(kind: str) -> int:
    """
    The largest envelope a listener of C{kind} may be delivered, which its client must be able to read.

    A message of up to the kind's cap, the declarations its blocks inherit (up to the name's limit again:
    L{bindings.soap.parse_envelope}) written into each, and the headers the gateway adds.
    """
    return 2 * MESSAGE_BYTES[kind][1] + DELIVERY_HEADROOM


LIMITS: Final[dict[str, tuple[float, float, float]]] = {
    # name: (default, low, high)
    "max_listeners": (25, 1, 1000),
    "request_timeout": (60.0, 0.1, 600.0),
    "send_timeout": (30.0, 0.1, 300.0),
    "max_in_flight": (1000, 1, 10_000),
    "max_queue_bytes": (4 * MIB, 1 * KIB, 1024 * MIB),
    "max_queue_messages": (1000, 1, 1_000_000),
    "max_depth": (64, 1, 256),
    "max_wsdl_bytes": (256 * KIB, 1 * KIB, 1 * MIB),
}


class ClientAuth(Enum):
    """Whether senders need a Send token (listeners always need Listen)."""

    TOKEN = "token"  # noqa: S105 - a setting name, not a secret
    ANONYMOUS = "anonymous"


class Discovery(Enum):
    """Whether a name appears in the public service registry."""

    PRIVATE = "private"
    PUBLIC = "public"


def _check(name: str, value: float) -> None:
    _default, low, high = LIMITS[name]
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")


def _check_message_bytes(kind: str, value: int) -> None:
    cap = MESSAGE_BYTES[kind][1]
    if not 1 <= value <= cap:
        raise ValueError(f"max_message_bytes of a {kind} name must be between 1 and {cap}, got {value!r}")


@dataclass(frozen=True, slots=True)
class BindingEntitySettings:
    """
    The settings of one C{oneway}, C{requestreply} or C{multicast} entity (spec sections 2 and 12).

    @ivar kind: the entity kind.
    @ivar max_message_bytes: C{None} means the kind's default (64 KiB, or 4 MiB for request/reply).
    @ivar request_timeout: seconds a caller waits for a reply (request/reply only).
    @ivar send_timeout: seconds a sender is held back when queues are full, before C{ServerBusy}; also the
        multicast count collection window.
    @ivar strict_addressing: differing duplicate addressing headers are a fault instead of a warning.
    """

    kind: str
    client_auth: ClientAuth = ClientAuth.TOKEN
    discovery: Discovery = Discovery.PRIVATE
    display_name: str | None = None
    max_listeners: int = 25
    max_message_bytes: int | None = None
    request_timeout: float = 60.0
    send_timeout: float = 30.0
    max_in_flight: int = 1000
    max_queue_bytes: int = 4 * MIB
    max_queue_messages: int = 1000
    max_depth: int = 64
    max_wsdl_bytes: int = 256 * KIB
    strict_addressing: bool = False

    def __post_init__(self) -> None:
        if self.kind not in BINDING_KINDS:
            raise ValueError(f"unknown binding kind {self.kind!r}")
        if self.max_message_bytes is None:
            object.__setattr__(self, "max_message_bytes", MESSAGE_BYTES[self.kind][0])
        _check_message_bytes(self.kind, self.message_limit)
        for name in LIMITS:
            _check(name, getattr(self, name))

    @property
    def message_limit(self) -> int:
        """The effective message size limit in bytes."""
        return self.max_message_bytes or MESSAGE_BYTES[self.kind][0]

    def title(self, entity_name: str) -> str:
        """The display name, defaulting to the last path segment (spec section 2)."""
        return self.display_name or entity_name.rstrip("/").rsplit("/", 1)[-1]


def _check_binding(kind: str, binding: object, names: tuple[str, ...]) -> None:
    _check_message_bytes(kind, binding.max_message_bytes)  # type: ignore[attr-defined]
    for name in names:
        _check(name, getattr(binding, name))
    if binding.open_timeout <= 0:  # type: ignore[attr-defined]
        raise ValueError("open_timeout must be positive")
    if not 0 <= binding.close_timeout <= 86400:  # type: ignore[attr-defined]  # NaN fails too
        raise ValueError(f"close_timeout must be between 0 and 86400, got {binding.close_timeout!r}")  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class OneWayBinding:
    """
    A one-way (unicast datagram) binding for a service host or channel factory.

    @ivar open_timeout: seconds to wait for the gateway to accept a registration or channel.
    @ivar close_timeout: seconds a service host's C{close} waits for the calls it is serving (0: none).
    """

    kind: ClassVar[str] = ONEWAY
    client_auth: ClientAuth = ClientAuth.TOKEN
    discovery: Discovery = Discovery.PRIVATE
    display_name: str | None = None
    max_message_bytes: int = MESSAGE_BYTES[ONEWAY][0]
    open_timeout: float = 60.0
    close_timeout: float = 60.0
    send_timeout: float = 30.0

    def __post_init__(self) -> None:
        _check_binding(self.kind, self, ("send_timeout",))


@dataclass(frozen=True, slots=True)
class MulticastBinding:
    """A multicast (event) binding: every subscriber gets every message; contracts are all one-way."""

    kind: ClassVar[str] = MULTICAST
    client_auth: ClientAuth = ClientAuth.TOKEN
    discovery: Discovery = Discovery.PRIVATE
    display_name: str | None = None
    max_message_bytes: int = MESSAGE_BYTES[MULTICAST][0]
    open_timeout: float = 60.0
    close_timeout: float = 60.0
    send_timeout: float = 30.0

    def __post_init__(self) -> None:
        _check_binding(self.kind, self, ("send_timeout",))


@dataclass(frozen=True, slots=True)
class RequestReplyBinding:
    """A request/reply binding; one-way operations in its contract are delivered as datagrams."""

    kind: ClassVar[str] = REQUEST_REPLY
    client_auth: ClientAuth = ClientAuth.TOKEN
    discovery: Discovery = Discovery.PRIVATE
    display_name: str | None = None
    max_message_bytes: int = MESSAGE_BYTES[REQUEST_REPLY][0]
    open_timeout: float = 60.0
    close_timeout: float = 60.0
    send_timeout: float = 30.0
    request_timeout: float = 60.0

    def __post_init__(self) -> None:
        _check_binding(self.kind, self, ("send_timeout", "request_timeout"))


Binding = OneWayBinding | MulticastBinding | RequestReplyBinding


def _enum(section: Section, name: str, kind: type[ClientAuth] | type[Discovery], default: str) -> object:
    value = section.get(name, str, default)
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in kind)
        raise section.error(name, f"must be one of {choices}, got {value!r}") from None


def _parse(kind: str, section: Section, name: str) -> Entity:
    values: dict[str, object] = {
        "client_auth": _enum(section, "client_auth", ClientAuth, "token"),
        "discovery": _enum(section, "discovery", Discovery, "private"),
        "display_name": section.get("display_name", str),
        "strict_addressing": section.get("strict_addressing", bool, False),
    }
    default_bytes, cap_bytes = MESSAGE_BYTES[kind]
    values["max_message_bytes"] = section.integer("max_message_bytes", default_bytes, 1, cap_bytes)
    numbers = ("request_timeout", "send_timeout")
    skipped = () if kind == REQUEST_REPLY else ("request_timeout", "max_in_flight")
    for key, (default, low, high) in LIMITS.items():
        if key in skipped:
            continue
        if key in numbers:
            values[key] = section.number(key, default, low, high)
        else:
            values[key] = section.integer(key, int(default), int(low), int(high))
    if values["display_name"] is not None and not str(values["display_name"]).strip():
        raise section.error("display_name", "must not be blank")
    rules = parse_rules(section)
    section.finish()
    settings = BindingEntitySettings(kind=kind, **values)  # type: ignore[arg-type]
    return Entity(name=name, kind=kind, rules=rules, settings=settings)


def parse_oneway(section: Section, name: str) -> Entity:
    """Read one C{[[namespaces.oneway]]} table."""
    return _parse(ONEWAY, section, name)


def parse_requestreply(section: Section, name: str) -> Entity:
    """Read one C{[[namespaces.requestreply]]} table."""
    return _parse(REQUEST_REPLY, section, name)


def parse_multicast(section: Section, name: str) -> Entity:
    """Read one C{[[namespaces.multicast]]} table."""
    return _parse(MULTICAST, section, name)


ONEWAY_SECTION: Final = EntitySection(ONEWAY, parse_oneway)
REQUEST_REPLY_SECTION: Final = EntitySection(REQUEST_REPLY, parse_requestreply)
MULTICAST_SECTION: Final = EntitySection(MULTICAST, parse_multicast)
ENTITY_SECTIONS: Final = (ONEWAY_SECTION, REQUEST_REPLY_SECTION, MULTICAST_SECTION)
"""Hand these to L{relay.config.load_config} as C{extra_sections}."""


def settings_for(kind: str, **overrides: object) -> BindingEntitySettings:
    """Settings of a dynamic entity created by a listener's registration, with the kind's defaults."""
    return dataclasses.replace(BindingEntitySettings(kind=kind), **overrides)  # type: ignore[arg-type]
