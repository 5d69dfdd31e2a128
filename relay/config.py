"""
The gateway's configuration file (TOML): namespaces, shared access rules and entities.

Loading either returns a frozen L{GatewayConfig} or raises L{ConfigError} naming the file, the key path
(C{namespaces[0].hybrid_connections[2].max_listeners}) and what is wrong, so a bad file stops start-up
with a message a person can act on. Other layers (the SOAP bindings) add entity sections through
L{EntitySection} values handed to L{load_config}; this module does not import them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relay.auth import Rights, SharedAccessRule
from relay.connectionquota import MAX_CONNECTIONS_PER_NAMESPACE
from relay.entities import (
    HYBRID_CONNECTION,
    MAX_ENTITIES_PER_NAMESPACE,
    RESERVED_FIRST_SEGMENTS,
    Entity,
    EntityNameError,
    HybridConnectionSettings,
    Namespace,
    name_key,
    split_name,
)

MIN_KEY_LENGTH = 16
_PUBLIC_URL_SCHEMES = ("http", "https", "ws", "wss")
_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")


class ConfigError(ValueError):
    """A configuration file is unusable; the message names the file, the key and the problem."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


class Section:
    """
    A view of one table of the file that knows its key path, so every error names where it happened.

    Keys are consumed as they are read; L{finish} rejects whatever is left, which catches misspelt keys.
    """

    def __init__(self, source: str, path: str, data: Mapping[str, Any]) -> None:
        self.source = source
        self.path = path
        self._data = dict(data)
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        """The full key path of C{name} in this table."""
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, problem: str) -> ConfigError:
        """An error about key C{name} of this table."""
        return ConfigError(self.source, self.key(name), problem)

    def get(
        self, name: str, kind: type | tuple[type, ...], default: Any = None, *, required: bool = False
    ) -> Any:
        """Read a key, checking its TOML type."""
        self._seen.add(name)
        if name not in self._data:
            if required:
                raise self.error(name, "is required")
            return default
        value = self._data[name]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(name, f"must be {_type_name(kind)}, not a boolean")
        if not isinstance(value, kind):
            raise self.error(name, f"must be {_type_name(kind)}, not {type(value).__name__}")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        """Read a number of seconds or a count within bounds."""
        value = self.get(name, (int, float), default)
        if not low <= value <= high:
            raise self.error(name, f"must be between {low:g} and {high:g}, got {value!r}")
        return float(value)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        """Read an integer within bounds."""
        value = self.get(name, int, default)
        if not low <= value <= high:
            raise self.error(name, f"must be between {low} and {high}, got {value!r}")
        return int(value)

    def tables(self, name: str) -> list[Section]:
        """Read an array of tables (C{[[name]]})."""
        items = self.get(name, list, [])
        sections = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ConfigError(self.source, f"{self.key(name)}[{i}]", "must be a table")
            sections.append(Section(self.source, f"{self.key(name)}[{i}]", item))
        return sections

    def table(self, name: str) -> Section:
        """Read a sub-table (C{[name]}), empty when absent."""
        return Section(self.source, self.key(name), self.get(name, dict, {}))

    def finish(self) -> None:
        """Reject keys nobody read: they are typos or settings of another version."""
        for name in self._data:
            if name not in self._seen:
                raise self.error(name, "is not a known setting")


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {
        "str": "a string",
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "list": "an array",
        "dict": "a table",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if set(kinds) == {int, float}:
        return "a number"
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)


EntityParser = Callable[[Section, str], Entity]


@dataclass(frozen=True, slots=True)
class EntitySection:
    """
    An array of tables in a namespace that defines entities of one kind.

    @ivar key: the TOML key (C{hybrid_connections}, C{oneway}, ...).
    @ivar parse: builds an L{Entity} from one table and the entity's name.
    """

    key: str
    parse: EntityParser


@dataclass(frozen=True, slots=True)
class NamespaceConfig:
    """A namespace and the entities configured in it."""

    namespace: Namespace
    entities: tuple[Entity, ...]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """
    Everything the configuration file says.

    @ivar listen: endpoint strings to serve on (the command line adds to or replaces them).
    @ivar public_url: base URL that rendezvous addresses use.
    @ivar state_dir: where generated keys and state are kept.
    @ivar namespaces: configured namespaces.
    @ivar limits: gateway-wide numbers (timeouts, throttles) by name.
    @ivar admin: endpoint string of the admin endpoint (metrics, health), off when C{None}.
    """

    listen: tuple[str, ...] = ()
    public_url: str | None = None
    state_dir: str | None = None
    namespaces: tuple[NamespaceConfig, ...] = ()
    limits: Mapping[str, float] = field(default_factory=dict)
    admin: str | None = None


GATEWAY_LIMITS: dict[str, tuple[float, float, float]] = {
    # name: (default, low, high)
    "rendezvous_timeout": (30.0, 1.0, 300.0),
    "control_ping_interval": (30.0, 1.0, 3600.0),
    "listener_token_grace": (10.0, 0.0, 300.0),  # a listener's token may be this late in being renewed
    "listener_failure_delay": (1.0, 0.0, 60.0),
    "listener_failure_max_delay": (8.0, 0.0, 600.0),
    "close_handshake_timeout": (5.0, 0.5, 60.0),
    "drain_timeout": (0.0, 0.0, 3600.0),  # stopping: seconds pairs and HTTP requests under way may go on
    "splice_buffer_bytes": (262144.0, 16384.0, 67108864.0),
    "native_splice": (1.0, 0.0, 1.0),  # 1: pairs' data frames on the native thread where it is built
    "http_lean_channel": (1.0, 0.0, 1.0),  # 1: plain relayed GETs on the lean channel, not twisted.web's
    "http_idle_timeout": (120.0, 1.0, 86400.0),
    "http_rendezvous_idle_timeout": (60.0, 1.0, 3600.0),
    "http_linger_timeout": (10.0, 0.0, 600.0),
    "http_max_request_line": (16384.0, 1024.0, 1048576.0),
    "http_max_header_bytes": (65536.0, 4096.0, 1048576.0),
    # bodies buffered whole (every route but relayed HTTP); default: the largest SOAP max_message_bytes
    "http_max_buffered_body": (67108864.0, 65536.0, 1073741824.0),
    "trace_messages": (0.0, 0.0, 1.0),  # 1: the SOAP bindings log every routed message (debug)
    "metrics_max_entities": (1000.0, 1.0, 100000.0),  # entity label values per metric; more: "_other"
    "max_entities_per_namespace": (
        float(MAX_ENTITIES_PER_NAMESPACE),
        1.0,
        1000000.0,
    ),  # dynamic ones refused past it
    "max_connections_per_namespace": (
        float(MAX_CONNECTIONS_PER_NAMESPACE),
        1.0,
        10000000.0,
    ),  # listeners, senders and relayed HTTP requests open at once; more are refused (403, QuotaExceeded)
}
INTEGER_LIMITS = frozenset(
    {
        "splice_buffer_bytes",
        "http_max_request_line",
        "http_max_header_bytes",
        "http_max_buffered_body",
        "trace_messages",
        "native_splice",
        "http_lean_channel",
        "metrics_max_entities",
        "max_entities_per_namespace",
        "max_connections_per_namespace",
    }
)
"""Limits that count bytes or things (or switch): a fraction is a mistake, not something to round."""


def credential_problem(text: str) -> str | None:
    """
    What makes a rule name or key unusable in a connection string, or C{None}.

    Connection strings separate their pairs with C{;} and drop white space around values, so a key that
    has either would be signed with by no client that reads it from one.
    """
    if text != text.strip():
        return "must not begin or end with white space (connection strings drop it)"
    if ";" in text:
        return "must not contain ';' (it separates the parts of a connection string)"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text):
        return "must not contain control characters"
    return None


def _host_problem(host: str) -> str | None:
    """What makes a public URL's host unusable in the addresses listeners dial, or C{None}."""
    if ":" in host:  # urlsplit accepted it in brackets
        try:
            ipaddress.IPv6Address(host.partition("%")[0])
        except ValueError:
            return f"host {host!r} is not an IPv6 address"
        return None
    if not _HOST_NAME.fullmatch(host):
        return f"host {host!r} may hold only letters, digits, '.', '-' and '_' (IDNA-encode other names)"
    return None


def public_url_problem(url: str) -> str | None:
    """What makes C{url} unusable as the base of rendezvous addresses, or C{None}."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:  # an unclosed IPv6 bracket, a port that is not a number or out of range
        return f"{url!r} is not a valid URL ({e})"
    if parts.scheme.lower() not in _PUBLIC_URL_SCHEMES or not parts.hostname:
        return f"{url!r} must be an absolute URL: http://, https://, ws:// or wss:// and a host name"
    if any(c.isspace() or not c.isprintable() for c in url):
        return f"{url!r} must not contain white space or control characters"
    if (problem := _host_problem(parts.hostname)) is not None:
        return f"{url!r}: {problem}"
    if parts.username is not None or parts.query or parts.fragment or "?" in url or "#" in url:
        return f"{url!r} must have no user name, query or fragment"
    if port == 0:
        return f"{url!r} has port 0"
    return None


def parse_rule(section: Section) -> SharedAccessRule:
    """Read one C{[[...rules]]} table."""
    name = section.get("name", str, required=True)
    if not name or len(name) > 256:
        raise section.error("name", "must be 1 to 256 characters")
    problem = credential_problem(name)
    if problem is not None:
        raise section.error("name", problem)
    key = section.get("key", str, required=True)
    if len(key) < MIN_KEY_LENGTH:
        raise section.error(
            "key", f"must be at least {MIN_KEY_LENGTH} characters (use 'relay key' to make one)"
        )
    problem = credential_problem(key)
    if problem is not None:
        raise section.error("key", f"{problem}; use 'relay key' to make one")
    right_names = section.get("rights", list, required=True)
    if not right_names or not all(isinstance(r, str) for r in right_names):
        raise section.error("rights", "must be a non-empty array of 'Listen', 'Send', 'Manage'")
    try:
        rights = Rights.parse(right_names)
    except ValueError as e:
        raise section.error("rights", str(e)) from None
    section.finish()
    return SharedAccessRule(name=name, key=key, rights=rights)


def parse_rules(section: Section) -> tuple[SharedAccessRule, ...]:
    """Read the C{rules} array of a namespace or entity, rejecting duplicate names."""
    rules: list[SharedAccessRule] = []
    for rule_section in section.tables("rules"):
        rule = parse_rule(rule_section)
        if any(r.name == rule.name for r in rules):
            raise rule_section.error("name", f"rule {rule.name!r} is defined twice")
        rules.append(rule)
    return tuple(rules)


def parse_hybrid_connection(section: Section, name: str) -> Entity:
    """Read one C{[[namespaces.hybrid_connections]]} table."""
    settings = HybridConnectionSettings(
        requires_client_authorization=section.get("requires_client_authorization", bool, True),
        max_listeners=section.integer("max_listeners", 25, 1, 1000),
        request_timeout=section.number("request_timeout", 60.0, 0.1, 3600.0),
        http_enabled=section.get("http_enabled", bool, True),
    )
    rules = parse_rules(section)
    section.finish()
    return Entity(name=name, kind=HYBRID_CONNECTION, rules=rules, settings=settings)


HYBRID_CONNECTIONS = EntitySection("hybrid_connections", parse_hybrid_connection)


def parse_entity_name(section: Section) -> str:
    """Read and check an entity's C{name}."""
    name = section.get("name", str, required=True)
    try:
        segments = split_name(name)
    except EntityNameError as e:
        raise section.error("name", str(e)) from None
    if segments[0].lower() in RESERVED_FIRST_SEGMENTS:
        raise section.error("name", f"the first segment {segments[0]!r} is reserved")
    return "/".join(segments)


def namespace_host(section: Section, host: str) -> str:
    """
    One of a namespace's C{hosts} as requests' host names are compared with it (L{relay.httphead.host_name}).

    Lower case; an IPv6 address without brackets, in its compressed form (as clients write it). A name no
    request's C{Host} could match (a wildcard pattern, a control character, an empty label) is refused.
    """
    if host == "*":
        return host
    bracketed = host.startswith("[") and host.endswith("]")
    if ":" in host or bracketed:
        try:
            return ipaddress.IPv6Address(host[1:-1] if bracketed else host).compressed
        except ValueError:
            raise section.error(
                "hosts", f"{host!r} must be a bare host name without scheme, port or path"
            ) from None
    if "/" in host or any(c.isspace() for c in host):
        raise section.error("hosts", f"{host!r} must be a bare host name without scheme, port or path")
    if not _HOST_NAME.fullmatch(host):
        raise section.error(
            "hosts",
            f"{host!r} may hold only letters, digits, '.', '-' and '_' (IDNA-encode other names; "
            "'*' alone stands for any host name)",
        )
    if "" in host.split("."):
        raise section.error("hosts", f"{host!r} has an empty label (a leading, trailing or double dot)")
    return host.lower()


def parse_namespace(section: Section, index: int, kinds: Mapping[str, EntitySection]) -> NamespaceConfig:
    """Read one C{[[namespaces]]} table with its entities."""
    hosts = section.get("hosts", list, required=True)
    if not hosts or not all(isinstance(h, str) and h.strip() for h in hosts):
        raise section.error("hosts", "must be a non-empty array of host names (or '*' for any host)")
    name = section.get("name", str, default=hosts[0] if hosts[0] != "*" else f"namespace{index}")
    hosts = [namespace_host(section, host) for host in hosts]
    if not name.strip() or len(name) > 256:
        raise section.error("name", "must be 1 to 256 characters, not only white space")
    namespace = Namespace(
        name=name,
        hosts=tuple(hosts),
        rules=parse_rules(section),
        auto_create=section.get("auto_create", bool, False),
    )
    entities: list[Entity] = []
    seen: dict[str, str] = {}
    for kind in kinds.values():
        for entity_section in section.tables(kind.key):
            entity_name = parse_entity_name(entity_section)
            key = name_key(entity_name.split("/"))
            if key in seen:
                raise entity_section.error("name", f"{entity_name!r} is already defined as {seen[key]}")
            entity = kind.parse(entity_section, entity_name)
            seen[key] = f"{kind.key} entity"
            entities.append(entity)
    section.finish()
    return NamespaceConfig(namespace=namespace, entities=tuple(entities))


def parse_config(
    data: Mapping[str, Any], source: str, extra_sections: tuple[EntitySection, ...] = ()
) -> GatewayConfig:
    """Build a L{GatewayConfig} from parsed TOML."""
    root = Section(source, "", data)
    kinds = {s.key: s for s in (HYBRID_CONNECTIONS, *extra_sections)}
    gateway = root.table("gateway")
    listen = gateway.get("listen", list, [])
    if not all(isinstance(e, str) and e for e in listen):
        raise gateway.error("listen", "must be an array of endpoint strings such as 'tcp:9080'")
    public_url = gateway.get("public_url", str)
    if public_url is not None and not public_url.lower().startswith(
        ("http://", "https://", "ws://", "wss://")
    ):
        raise gateway.error("public_url", "must start with http://, https://, ws:// or wss://")
    if public_url is not None and (problem := public_url_problem(public_url)) is not None:
        raise gateway.error("public_url", problem)
    limits = {
        name: (
            float(gateway.integer(name, int(default), int(low), int(high)))
            if name in INTEGER_LIMITS
            else gateway.number(name, default, low, high)
        )
        for name, (default, low, high) in GATEWAY_LIMITS.items()
    }
    if limits["listener_failure_max_delay"] < limits["listener_failure_delay"]:
        raise gateway.error(
            "listener_failure_max_delay",
            f"must be at least listener_failure_delay ({limits['listener_failure_delay']:g})",
        )
    state_dir = gateway.get("state_dir", str)
    if state_dir is not None and not state_dir.strip():
        raise gateway.error("state_dir", "must not be empty")
    if state_dir is not None:  # no shell reads the file: "~/relay" meant a directory named "~"
        state_dir = os.path.expanduser(state_dir)
    admin = gateway.get("admin", str)
    if admin is not None and not admin.strip():
        raise gateway.error("admin", "must be an endpoint string such as 'tcp:9090:interface=127.0.0.1'")
    gateway.finish()
    namespaces = tuple(parse_namespace(s, i, kinds) for i, s in enumerate(root.tables("namespaces")))
    owners: dict[str, str] = {}
    names: dict[str, int] = {}
    for i, ns in enumerate(namespaces):
        if ns.namespace.name in names:
            raise ConfigError(
                source,
                f"namespaces[{i}].name",
                f"{ns.namespace.name!r} is already the name of namespaces[{names[ns.namespace.name]}] "
                "(a namespace without a name is named after its first host)",
            )
        names[ns.namespace.name] = i
        for host in ns.namespace.hosts:
            if host in owners:
                raise ConfigError(
                    source, f"namespaces[{i}].hosts", f"host {host!r} already belongs to {owners[host]}"
                )
            owners[host] = f"namespace {ns.namespace.name!r}"
    root.finish()
    return GatewayConfig(
        listen=tuple(listen),
        public_url=public_url,
        state_dir=state_dir,
        namespaces=namespaces,
        limits=limits,
        admin=admin,
    )


def load_config(path: str | Path, extra_sections: tuple[EntitySection, ...] = ()) -> GatewayConfig:
    """
    Read and check a configuration file.

    @raise ConfigError: when the file cannot be read, is not TOML, or says something invalid.
    """
    source = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(source, "", f"cannot read the file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(source, "", f"not valid TOML: not UTF-8 text (at line {line})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, "", f"not valid TOML: {e}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ConfigError(source, "", "not valid TOML: nested too deeply") from None
    return parse_config(data, source, extra_sections)


def default_limits() -> dict[str, float]:
    """Gateway-wide limits when no file sets them."""
    return {name: bounds[0] for name, bounds in GATEWAY_LIMITS.items()}
