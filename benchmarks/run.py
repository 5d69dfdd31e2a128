"""
Run the benchmark suite: C{python -m benchmarks [--quick] [--scenario NAME|GLOB|GROUP]...}.

(C{python benchmarks/run.py ...} works too.)

Every scenario starts its own processes (gateway, endpoints, baselines, load generators), repeats its
measurements, and stops what it started. The report (Markdown tables, median (min-max) of the
repetitions, targets met or not) is printed and written with the CSV files to C{benchmarks/results/<time>/}.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import scenarios as _scenarios  # noqa: F401 - registers the scenarios
from benchmarks.context import Context, Sample, Settings
from benchmarks.nginx import NginxBinary, ensure_nginx
from benchmarks.procs import ROOT, processes, raise_nofile_limit
from benchmarks.registry import SCENARIOS, Scenario, in_report_order, select
from benchmarks.report import (
    aggregate,
    table,
    verdict_table,
    verdicts,
    write_csv,
    write_verdicts_csv,
)


def build_extension(code: Path) -> str:
    """
    Build the splice's C extension in a C{--gateway-from} checkout that has its source but no build.

    A C{git archive} holds no built extension, and its gateway would then relay WebSocket pairs in Python:
    an A/B against this checkout (which has one) would compare the two splices, not the two versions.
    @return: a note for the report, or C{""} when nothing needed building.
    """
    if not (code / "setup.py").is_file() or not (code / "relay" / "_splice.c").is_file():
        return ""
    if any((code / "relay").glob("_splice*.so")):
        return ""
    print(f"building the splice extension in {code} (setup.py build_ext --inplace)", file=sys.stderr)
    done = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"], cwd=code, capture_output=True, text=True
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"--gateway-from: building its splice extension failed ({tail[0]}); its splice and frame codec run in Python"
    return f"--gateway-from: built its splice extension (setup.py build_ext --inplace in {code})"


def machine() -> list[str]:
    """A description of the machine and the software measured."""
    from importlib.metadata import version

    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            memory = int(line.split()[1]) // 1024
    return [
        f"CPU: {model}, {os.cpu_count()} cores; memory {memory / 1024:.0f} GiB",
        f"OS: {platform.platform()}",
        f"Python {platform.python_version()}, Twisted {version('twisted')}, Autobahn {version('autobahn')}",
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 runs of 1 s each, skip the heavy scenarios")
    parser.add_argument(
        "--scenario", "-s", action="append", default=[], help="name, glob or group (repeatable)"
    )
    parser.add_argument(
        "--case", "-c", action="append", default=[], help="only cases matching this glob, e.g. '1 MB'"
    )
    parser.add_argument("--runs", type=int, help="repetitions per scenario (default 5, quick 3)")
    parser.add_argument("--seconds", type=float, help="length of one timed measurement (default 3, quick 1)")
    parser.add_argument("--out", type=Path, help="result directory (default benchmarks/results/<time>)")
    parser.add_argument("--py-spy", action="store_true", help="sample the gateway with py-spy (diagnosis)")
    parser.add_argument(
        "--cprofile",
        action="store_true",
        help="run each gateway under cProfile, stats in <out>/<scenario>/<gateway>.prof (diagnosis)",
    )
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install nginx when missing")
    parser.add_argument(
        "--gateway-from",
        type=Path,
        help="run the gateway's relay package from another checkout (before/after comparisons), "
        "e.g. a directory made with 'git archive BASE | tar -x -C DIR'",
    )
    parser.add_argument(
        "--python-splice",
        action="store_true",
        help="relay WebSocket pairs in Python even where the native thread is built (native_splice = 0)",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser.parse_args(argv)


def list_scenarios() -> None:
    for sc in in_report_order(SCENARIOS.values()):
        state = f"pending: {sc.pending}" if sc.pending else ("full runs only" if sc.full_only else "")
        if sc.explicit:
            state = "only when named"
        print(f"{sc.name:28} {sc.group:13} {sc.summary}" + (f"  [{state}]" if state else ""))


def run_scenario(
    sc: Scenario, settings: Settings, nginx: NginxBinary | None
) -> tuple[list[Sample], list[str]]:
    """Run one scenario, always stopping its processes; failures become notes."""
    assert sc.run is not None
    with processes(settings.out / sc.name / "logs") as group:
        ctx = Context(settings, sc.name, group, nginx)
        started = time.monotonic()
        try:
            sc.run(ctx)
        except Exception:  # a broken scenario must not stop the others
            traceback.print_exc()
            ctx.note(f"{sc.name} failed: {traceback.format_exc(limit=3).strip().splitlines()[-1]}")
        ctx.note(f"{sc.name}: {time.monotonic() - started:.0f} s")
        return ctx.samples, ctx.notes


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.list:
        list_scenarios()
        return 0
    raise_nofile_limit()
    # SIGTERM ends the run like Ctrl-C, so every scenario's processes are still stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    settings = Settings(
        quick=args.quick,
        runs=args.runs or (3 if args.quick else 5),
        seconds=args.seconds or (1.0 if args.quick else 3.0),
        out=(args.out or ROOT / "benchmarks" / "results" / stamp).resolve(),
        py_spy=args.py_spy,
        cprofile=args.cprofile,
        install=not args.no_install,
        cases=tuple(args.case),
        gateway_from=args.gateway_from.resolve() if args.gateway_from else None,
        python_splice=args.python_splice,
    )
    settings.out.mkdir(parents=True, exist_ok=True)
    chosen = select(args.scenario, args.quick)
    if not chosen:
        print(f"no scenario matches {args.scenario}; see --list", file=sys.stderr)
        return 2
    runnable = [sc for sc in chosen if sc.run is not None]
    nginx, nginx_note = ensure_nginx(settings.install) if runnable else (None, "")
    notes = [nginx_note] if nginx_note else []
    if settings.gateway_from is not None and not settings.python_splice and runnable:
        built = build_extension(settings.gateway_from)
        if built:
            notes.append(built)
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"# {command.strip()}", file=sys.stderr)
    samples: list[Sample] = []
    for sc in chosen:
        if sc.run is None:
            notes.append(f"{sc.name}: pending ({sc.pending})")
            continue
        print(f"== {sc.name}: {sc.summary}", file=sys.stderr, flush=True)
        got, more = run_scenario(sc, settings, nginx)
        samples += got
        notes += more
    report = render(command.strip(), chosen, samples, notes, settings)
    print(report)
    (settings.out / "report.md").write_text(report + "\n")
    aggregates = aggregate(samples)
    write_csv(settings.out / "results.csv", aggregates)
    write_verdicts_csv(settings.out / "targets.csv", verdicts(chosen, aggregates))
    if any(a.scenario == "ws.throughput" for a in aggregates):
        from benchmarks.plot import plot_throughput

        plotted = plot_throughput(aggregates, settings.out / "ws-throughput.png")
        if plotted:
            print(f"plot: {plotted}", file=sys.stderr)
    rss_series = sorted((settings.out / "backpressure.slow-reader").glob("rss-*.csv"))
    if rss_series:
        from benchmarks.plot import plot_rss
        from benchmarks.scenarios.backpressure import BUFFER

        plot_rss(rss_series, settings.out / "backpressure-rss.png", BUFFER)
    print(f"results: {settings.out}", file=sys.stderr)
    return 0


def render(
    command: str, chosen: list[Scenario], samples: list[Sample], notes: list[str], settings: Settings
) -> str:
    aggregates = aggregate(samples)
    gateway = (
        f"gateway code from {settings.gateway_from}"
        if settings.gateway_from
        else "gateway code: this checkout"
    )
    parts = [
        f"Command: `{command}`  ",
        f"{settings.runs} runs per scenario, {settings.seconds:g} s per measurement; cells are median (min-max); "
        f"{gateway}.",
        "",
        *[f"- {line}" for line in machine()],
        "",
    ]
    for sc in chosen:
        parts.append(f"## {sc.name}: {sc.summary}")
        parts.append("")
        if sc.run is None:
            parts += [f"Pending: {sc.pending}", ""]
            continue
        main_metrics = sorted(
            {a.metric for a in aggregates if a.scenario == sc.name and not a.metric.startswith("cpu")}
        )
        cpu_metrics = sorted(
            {a.metric for a in aggregates if a.scenario == sc.name and a.metric.startswith("cpu")}
        )
        parts += [table(sc, aggregates, main_metrics), ""]
        if cpu_metrics:
            parts += ["CPU while measuring (% of one core):", "", table(sc, aggregates, cpu_metrics), ""]
    parts += ["## Targets", "", verdict_table(verdicts(chosen, aggregates)), ""]
    if notes:
        parts += ["## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
