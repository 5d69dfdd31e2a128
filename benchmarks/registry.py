"""
The scenario registry: what can be run, what each scenario measures, and the targets it is judged by.

A scenario is a function taking a L{benchmarks.context.Context}; it starts its processes through the
context (which stops them afterwards), repeats its measurements C{ctx.runs} times, and records samples
with C{ctx.record(case, variant, metric, value, unit)}. Ratios against baselines are recorded per
repetition (variant C{"relay/direct"} and so on), so each ratio compares numbers taken moments apart.

Scenarios whose gateway feature has not landed yet are registered with L{pending}: they are listed, shown
in the report as pending, and need only a function to become runnable.
"""

from __future__ import annotations

import fnmatch
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

ScenarioFunction = Callable[[Any], None]

_OPERATORS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Target:
    """
    A goal from the performance issue, checked against the median of a recorded metric.

    @ivar case: the case it applies to (C{"4 KB"}), or C{"*"} for every case of the scenario.
    """

    case: str
    variant: str
    metric: str
    op: str
    threshold: float

    def met(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.threshold)

    def describe(self) -> str:
        return f"{self.variant} {self.metric} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class Scenario:
    """
    One registered scenario.

    @ivar group: C{websocket}, C{scale}, C{backpressure}, C{http}, C{legacy}.
    @ivar run: the function, or C{None} while the scenario is pending.
    @ivar pending: why it cannot run yet.
    @ivar full_only: skipped by C{--quick} (long or heavy).
    @ivar explicit: run only when named (C{-s NAME} or its group), never as part of a whole run.
    """

    name: str
    group: str
    summary: str
    run: ScenarioFunction | None = None
    targets: tuple[Target, ...] = ()
    pending: str | None = None
    full_only: bool = False
    variants: tuple[str, ...] = field(default=())
    explicit: bool = False


SCENARIOS: dict[str, Scenario] = {}
GROUPS = ("websocket", "scale", "backpressure", "http", "legacy", "cost")  # report order


def scenario(
    name: str,
    group: str,
    summary: str,
    *,
    targets: tuple[Target, ...] = (),
    full_only: bool = False,
    variants: tuple[str, ...] = (),
    explicit: bool = False,
) -> Callable[[ScenarioFunction], ScenarioFunction]:
    """Register a runnable scenario."""

    def register(function: ScenarioFunction) -> ScenarioFunction:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} registered twice")
        SCENARIOS[name] = Scenario(
            name, group, summary, function, targets, None, full_only, variants, explicit
        )
        return function

    return register


def pending(name: str, group: str, summary: str, reason: str, *, targets: tuple[Target, ...] = ()) -> None:
    """Register a scenario that cannot run yet, with the reason."""
    if name in SCENARIOS:
        raise ValueError(f"scenario {name!r} registered twice")
    SCENARIOS[name] = Scenario(name, group, summary, None, targets, reason)


def select(patterns: list[str], quick: bool) -> list[Scenario]:
    """
    Scenarios matching any glob or group in C{patterns}.

    With no pattern: all but the explicit ones, and without the full-only ones under C{--quick}.
    """
    chosen = [
        s
        for s in SCENARIOS.values()
        if (not patterns and not s.explicit)
        or any(fnmatch.fnmatch(s.name, p) or s.group == p for p in patterns)
    ]
    if quick and not patterns:
        chosen = [s for s in chosen if not s.full_only]
    return in_report_order(chosen)


def in_report_order(chosen: Iterable[Scenario]) -> list[Scenario]:
    """Scenarios by group, in the report's order."""
    return sorted(chosen, key=lambda s: GROUPS.index(s.group) if s.group in GROUPS else len(GROUPS))
