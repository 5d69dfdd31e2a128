"""
One metrics registry for the whole gateway, rendered in the Prometheus text exposition format (0.0.4).

Hybrid connections and the SOAP bindings register their counters and gauges on the same L{Registry}; the
admin endpoint (L{relay.admin}) renders it. There is no dependency: the text format is a few lines per
family. Counting is cheap on hot paths: a labelled child is a L{Cell} found by one dict lookup, and code
that counts often (bytes through a splice) keeps the cell and adds to its C{value}.

Entity names label most series, and with C{auto_create} anyone holding a token can make new names, so each
family bounds the distinct values of its C{entity} label: past the limit, new names are counted under
C{entity="_other"}. A name once seen keeps its own series, so increments and decrements of a gauge always
meet the same cell. Names the operator configured are reserved (L{Registry.reserve}): they always keep their
own series and do not count against the limit, so made-up names cannot push them into C{_other}.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet

OTHER = "_other"
"""The C{entity} label value that collects names past a family's limit."""

UNKNOWN = "_unknown"
"""The C{entity} label value for refusals before an entity was resolved (unknown host or name)."""

DEFAULT_MAX_ENTITIES = 1000
"""Distinct C{entity} values a family keeps by default (see L{relay.config.GATEWAY_LIMITS})."""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of L{Registry.exposition}."""

Labels = tuple[str, ...]
Sampler = Callable[[], Iterable[tuple[Labels, float]]]


def outcome(status: int) -> str:
    """
    The outcome class of a refused connection, as Azure Relay's metrics name them, from its HTTP status.

    Refusals the client can fix (bad token, unknown name, no listener: 4xx) are C{client_error}; failures
    of the gateway or the listener side (5xx) are C{server_error}.
    """
    return "server_error" if status >= 500 else "client_error"


def status_class(status: int) -> str:
    """C{2xx}, C{4xx}, ...: the label for an HTTP status."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


def escape_label(value: str) -> str:
    """Escape a label value for the text format: backslash, double quote and line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Escape C{# HELP} text: backslash and line feed."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers without a fraction, C{+Inf}/C{-Inf}/C{NaN} as the format spells them."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


class Cell:
    """
    One series' value; hot paths keep a cell and add to C{value} directly.

    @ivar value: the current count or level.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0


class Family:
    """
    A metric with labels: a counter or a gauge whose children are L{Cell}s.

    @ivar name: the metric name (C{relay_..._total} for counters).
    @ivar kind: C{counter} or C{gauge}.
    @ivar label_names: the label names, in the order values are given.
    """

    def __init__(
        self,
        name: str,
        help_text: str,
        kind: str,
        label_names: Sequence[str],
        max_entities: int,
        reserved: AbstractSet[str] = frozenset(),
    ) -> None:
        """
        Make an empty family.

        @param reserved: C{entity} values that always keep their own series, outside the limit (the
            registry's set, shared, so names reserved later count too).
        """
        self.name = name
        self.help = help_text
        self.kind = kind
        self.label_names = tuple(label_names)
        self._cells: dict[Labels, Cell] = {}
        self._entity = self.label_names.index("entity") if "entity" in self.label_names else -1
        self._max_entities = max_entities
        self._entities: set[str] = set()
        self._reserved = reserved

    def labels(self, *values: str) -> Cell:
        """The cell for one label set, made on first use (an excess C{entity} becomes L{OTHER})."""
        cell = self._cells.get(values)
        if cell is not None:
            return cell
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {values!r}")
        values = self._bounded(values)
        cell = self._cells.get(values)
        if cell is None:
            cell = self._cells[values] = Cell()
        return cell

    def _bounded(self, values: Labels) -> Labels:
        index = self._entity
        if index < 0:
            return values
        entity = values[index]
        if entity in self._entities or entity in self._reserved or entity in (OTHER, UNKNOWN):
            return values
        if len(self._entities) < self._max_entities:
            self._entities.add(entity)
            return values
        return (*values[:index], OTHER, *values[index + 1 :])

    def inc(self, *values: str, amount: float = 1) -> None:
        """Add to the cell of one label set."""
        cell = self._cells.get(values) or self.labels(*values)
        cell.value += amount

    def dec(self, *values: str, amount: float = 1) -> None:
        """Subtract from a gauge's cell."""
        self.inc(*values, amount=-amount)

    def samples(self) -> list[tuple[Labels, float]]:
        """The current samples, sorted by label values."""
        if not self.label_names and not self._cells:
            return [((), 0)]
        return sorted((labels, cell.value) for labels, cell in self._cells.items())


class SampledFamily:
    """
    A metric whose samples are read when the registry is rendered.

    Levels kept elsewhere anyway (live listeners in the listener registry, open pairs in the C{$hc}
    factory) cost nothing on any hot path this way.
    """

    def __init__(
        self,
        name: str,
        help_text: str,
        kind: str,
        label_names: Sequence[str],
        sampler: Sampler,
        max_entities: int,
        reserved: AbstractSet[str] = frozenset(),
    ) -> None:
        self.name = name
        self.help = help_text
        self.kind = kind
        self.label_names = tuple(label_names)
        self._sampler = sampler
        self._bounds = Family(name, help_text, kind, label_names, max_entities, reserved)

    def samples(self) -> list[tuple[Labels, float]]:
        """Sum what the sampler reports per label set, bounding C{entity} as L{Family} does."""
        totals: dict[Labels, float] = {}
        for labels, value in self._sampler():
            key = self._bounds._bounded(tuple(labels))
            totals[key] = totals.get(key, 0) + value
        return sorted(totals.items())


class Registry:
    """
    Every metric family of one gateway, by name.

    @ivar max_entities: distinct C{entity} label values each family keeps before folding into L{OTHER}.
    """

    def __init__(self, max_entities: int = DEFAULT_MAX_ENTITIES) -> None:
        self.max_entities = max_entities
        self._families: dict[str, Family | SampledFamily] = {}
        self._reserved: set[str] = set()

    def reserve(self, entities: Iterable[str]) -> None:
        """
        Give these C{entity} values their own series in every family, outside C{max_entities}.

        For the names in the configuration: with C{auto_create}, anyone holding a token could otherwise
        use up the limit with made-up names first, and the configured ones would be counted as L{OTHER}.
        """
        self._reserved.update(entities)

    def _add(self, family: Family | SampledFamily) -> None:
        if family.name in self._families:
            raise ValueError(f"metric {family.name!r} is already registered")
        self._families[family.name] = family

    def counter(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> Family:
        """Register a counter (a value that only grows); its name should end in C{_total}."""
        family = Family(name, help_text, "counter", label_names, self.max_entities, self._reserved)
        self._add(family)
        return family

    def gauge(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> Family:
        """Register a gauge (a level that goes up and down)."""
        family = Family(name, help_text, "gauge", label_names, self.max_entities, self._reserved)
        self._add(family)
        return family

    def sampled(
        self, name: str, help_text: str, label_names: Sequence[str], sampler: Sampler, kind: str = "gauge"
    ) -> SampledFamily:
        """Register a family whose samples C{sampler} reports at each rendering."""
        family = SampledFamily(name, help_text, kind, label_names, sampler, self.max_entities, self._reserved)
        self._add(family)
        return family

    def get(self, name: str) -> Family | SampledFamily:
        """A registered family by name."""
        return self._families[name]

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 when absent): for tests and tools."""
        family = self._families[name]
        wanted = tuple(labels.get(n, "") for n in family.label_names)
        return sum(v for key, v in family.samples() if key == wanted)

    def exposition(self) -> bytes:
        """The whole registry in the text format: families by name, samples by label values."""
        lines: list[str] = []
        for name in sorted(self._families):
            family = self._families[name]
            lines.append(f"# HELP {name} {escape_help(family.help)}")
            lines.append(f"# TYPE {name} {family.kind}")
            names = family.label_names
            for labels, value in family.samples():
                if names:
                    pairs = ",".join(f'{n}="{escape_label(v)}"' for n, v in zip(names, labels, strict=True))
                    lines.append(f"{name}{{{pairs}}} {format_value(value)}")
                else:
                    lines.append(f"{name} {format_value(value)}")
        return ("\n".join(lines) + "\n").encode("utf-8")
