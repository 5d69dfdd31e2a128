"""
Turn samples into a report.

Median (min-max) per scenario, case, variant and metric; a table with one column per variant; a CSV; and
the targets with whether each was met.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.context import Sample
from benchmarks.registry import Scenario


@dataclass(frozen=True)
class Aggregate:
    """All repetitions of one number."""

    scenario: str
    case: str
    variant: str
    metric: str
    unit: str
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


@dataclass(frozen=True)
class Verdict:
    """A target and the median it was judged on."""

    scenario: str
    case: str
    target: str
    median: float | None
    met: bool | None


def aggregate(samples: Iterable[Sample]) -> list[Aggregate]:
    """Group samples by everything but the repetition, keeping first-seen order."""
    groups: dict[tuple[str, str, str, str, str], list[float]] = {}
    for s in samples:
        groups.setdefault((s.scenario, s.case, s.variant, s.metric, s.unit), []).append(s.value)
    return [Aggregate(*key, values=tuple(values)) for key, values in groups.items()]


def number(value: float) -> str:
    """A compact rendering: 3 significant digits, thousands separators for large values."""
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(agg: Aggregate) -> str:
    if len(agg.values) == 1:
        return number(agg.median)
    return f"{number(agg.median)} ({number(agg.low)}-{number(agg.high)})"


def verdicts(scenarios: Sequence[Scenario], aggregates: Sequence[Aggregate]) -> list[Verdict]:
    """Judge each target of the scenarios that ran (or were pending)."""
    out: list[Verdict] = []
    for sc in scenarios:
        mine = [a for a in aggregates if a.scenario == sc.name]
        for target in sc.targets:
            matching = [
                a
                for a in mine
                if (target.case in ("*", a.case))
                and a.variant == target.variant
                and a.metric == target.metric
            ]
            if not matching:
                out.append(Verdict(sc.name, target.case, target.describe(), None, None))
            for a in matching:
                out.append(Verdict(sc.name, a.case, target.describe(), a.median, target.met(a.median)))
    return out


def table(scenario: Scenario, aggregates: Sequence[Aggregate], metrics: Sequence[str] | None = None) -> str:
    """A Markdown table of one scenario: rows are case and metric, columns are variants."""
    mine = [a for a in aggregates if a.scenario == scenario.name and (metrics is None or a.metric in metrics)]
    if not mine:
        return ""
    variants: list[str] = [v for v in scenario.variants if any(a.variant == v for a in mine)]
    variants += [a.variant for a in mine if a.variant not in variants and "/" not in a.variant]
    variants = list(dict.fromkeys(variants))
    variants += list(dict.fromkeys(a.variant for a in mine if "/" in a.variant))
    rows: dict[tuple[str, str, str], dict[str, str]] = {}
    for a in mine:
        rows.setdefault((a.case, a.metric, a.unit), {})[a.variant] = cell(a)
    header = ["case", "metric", *variants]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (case, metric, unit), cells in rows.items():
        label = f"{metric} ({unit})" if unit not in ("", metric) else metric
        lines.append("| " + " | ".join([case, label, *(cells.get(v, "") for v in variants)]) + " |")
    return "\n".join(lines)


def verdict_table(items: Sequence[Verdict]) -> str:
    lines = ["| scenario | case | target | median | met |", "|---|---|---|---|---|"]
    for v in items:
        median = "-" if v.median is None else number(v.median)
        met = "not measured" if v.met is None else ("yes" if v.met else "**no**")
        lines.append(f"| {v.scenario} | {v.case} | {v.target} | {median} | {met} |")
    return "\n".join(lines)


def write_csv(path: Path, aggregates: Sequence[Aggregate]) -> None:
    """One row per aggregate: median, min, max and every repetition's value."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["scenario", "case", "variant", "metric", "unit", "median", "min", "max", "runs", "values"]
        )
        for a in aggregates:
            writer.writerow(
                [
                    a.scenario,
                    a.case,
                    a.variant,
                    a.metric,
                    a.unit,
                    f"{a.median:.6g}",
                    f"{a.low:.6g}",
                    f"{a.high:.6g}",
                    len(a.values),
                    ";".join(f"{v:.6g}" for v in a.values),
                ]
            )


def write_verdicts_csv(path: Path, items: Sequence[Verdict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["scenario", "case", "target", "median", "met"])
        for v in items:
            writer.writerow(
                [v.scenario, v.case, v.target, "" if v.median is None else f"{v.median:.6g}", v.met]
            )


def read_csv(path: Path) -> list[Aggregate]:
    """Read back what L{write_csv} wrote (for plots and documentation)."""
    with path.open(newline="") as f:
        return [
            Aggregate(
                row["scenario"],
                row["case"],
                row["variant"],
                row["metric"],
                row["unit"],
                tuple(float(v) for v in row["values"].split(";")),
            )
            for row in csv.DictReader(f)
        ]
