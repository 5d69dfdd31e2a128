"""
Legacy shapes (issue 5, item 4): the SOAP relay bindings against Crossbar.io on the same machine, same run.

    python benchmarks/legacy_shapes.py                        # 3 runs x 5 s per scenario and system
    python benchmarks/legacy_shapes.py --runs 5 --seconds 8 --crossbar /path/to/venv/bin/crossbar

Scenarios, each measured on our gateway and on a Crossbar router configured on loopback by this script
(L{crossbar_router}), alternating between the two in every run so that background load hits both alike:

- multicast: 1 publisher -> 10 subscribers, 256-byte events. Relay: a C{multicast} name, publisher on the
  C{$wcf} WebSocket (C{r:Delivered} answers), subscribers registered with C{r:Register}. Crossbar: WAMP
  pub/sub, C{PUBLISH} with C{acknowledge} (the C{PUBLISHED} answer is the equivalent of C{r:Delivered}).
  Measured: deliveries/s counted by the subscribers.
- request/reply: one callee, one caller with C{--window} calls in flight, 256-byte request and result.
  Relay: a C{requestreply} name with the echo contract's WSDL. Crossbar: WAMP RPC (C{CALL}/C{YIELD}).
- one-way: relay only (WAMP has no equivalent): messages/s into one C{oneway} listener.

The load generators are lean on both sides and the same code (L{legacy_clients}): raw WebSocket frames
after an Autobahn handshake, SOAP templates vs msgpack. Subscribers are spread over 2 processes (5
connections each); publisher/caller and callee are one process each. CPU time is read from /proc for the
router (gateway process; Crossbar node plus router worker) and for the load processes, and reported per
message: the rates depend on what else runs on the machine, the CPU per message much less.

Prints a table (median of the runs, min-max) and writes every run to C{benchmarks/results/legacy_shapes-*.csv}.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bindings_throughput import NAMES, cpu_seconds, free_port  # noqa: E402
from crossbar_router import CrossbarNode, crossbar_version, find_crossbar  # noqa: E402
from legacy_profile import record, report  # noqa: E402

SUBSCRIBERS = 10
SUBSCRIBER_PROCESSES = 2
SCENARIOS = ("multicast", "requestreply", "oneway")


@dataclass
class Result:
    scenario: str
    system: str
    run: int
    rate: float
    router_cpu_us: float
    client_cpu_us: float
    errors: int
    extra: dict[str, float] = field(default_factory=dict)


def spawn(
    args: list[str], name: str, wrapper: tuple[str, ...] = (), code: Path | None = None
) -> subprocess.Popen[str]:
    """
    Run C{args} under this Python (and under C{wrapper}, e.g. valgrind, when given).

    @param code: the checkout whose C{relay} and C{bindings} packages it imports (this one by default).
    """
    env = {
        **os.environ,
        "PYTHONPATH": f"{code or ROOT}{os.pathsep}{HERE}",
        "RELAY_BENCH_CODE": str(code or ROOT),
    }
    log = open(Path(tempfile.gettempdir()) / f"legacy-shapes-{name}.log", "a")
    return subprocess.Popen(
        [*wrapper, sys.executable, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )


def wait_ready(process: subprocess.Popen[str], what: str, timeout: float = 60.0) -> None:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.strip() == "READY":
            return
        if not line and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} (see the legacy-shapes-*.log files)")
    raise RuntimeError(f"{what} did not become ready")


def tell(process: subprocess.Popen[str], command: str) -> None:
    assert process.stdin is not None
    process.stdin.write(command + "\n")
    process.stdin.flush()


def client(role: str, log: str, **options: object) -> subprocess.Popen[str]:
    return spawn([str(HERE / "legacy_clients.py"), role, json.dumps(options)], log)


def load_processes(
    system: str, scenario: str, port: int, window: int, serializer: str = "msgpack"
) -> tuple[list, subprocess.Popen[str]]:
    """Start the receiving side (ready), then the sender (connected)."""
    if system == "relay":
        name = NAMES[scenario]
        if scenario == "multicast":
            per = SUBSCRIBERS // SUBSCRIBER_PROCESSES
            listeners = [
                client("soap-listener", "sub", port=port, name=name, kind=scenario, connections=per)
                for _ in range(SUBSCRIBER_PROCESSES)
            ]
        else:
            listeners = [
                client("soap-listener", "listener", port=port, name=name, kind=scenario, connections=1)
            ]
        for process in listeners:
            wait_ready(process, "relay listener")
        sender = client("soap-sender", "sender", port=port, name=name, kind=scenario, window=window)
    else:
        if scenario == "multicast":
            per = SUBSCRIBERS // SUBSCRIBER_PROCESSES
            listeners = [
                client(
                    "wamp-listener", "sub", port=port, kind=scenario, connections=per, serializer=serializer
                )
                for _ in range(SUBSCRIBER_PROCESSES)
            ]
        else:
            listeners = [
                client(
                    "wamp-listener",
                    "listener",
                    port=port,
                    kind=scenario,
                    connections=1,
                    serializer=serializer,
                )
            ]
        for process in listeners:
            wait_ready(process, "crossbar listener")
        sender = client(
            "wamp-sender", "sender", port=port, kind=scenario, window=window, serializer=serializer
        )
    wait_ready(sender, f"{system} sender")
    return listeners, sender


def measure(
    system: str,
    scenario: str,
    port: int,
    router_pids: list[int],
    seconds: float,
    window: int,
    run: int,
    serializer: str = "msgpack",
    profile: Path | None = None,
    meter: Callable[[int], float] | None = None,
) -> Result:
    """
    One timed measurement of C{scenario} on C{system}.

    @param meter: also read this counter of the router's processes (callgrind's instructions) around the
        timed part; the difference is in the result's C{extra["metered"]}.
    """
    listeners, sender = load_processes(system, scenario, port, window, serializer)
    everyone = [*listeners, sender]
    spy = None
    try:
        tell(sender, "go")
        time.sleep(1.0)  # warm up
        if profile is not None:
            # the busiest router process: the gateway, or Crossbar's router worker
            busiest = max(router_pids, key=cpu_seconds)
            spy = record(busiest, seconds, profile / f"profile-{scenario}-{system}.txt")
        before = sum(cpu_seconds(pid) for pid in router_pids)
        metered = -sum(meter(pid) for pid in router_pids) if meter else 0.0
        for process in everyone:
            tell(process, "mark")
        time.sleep(seconds)
        for process in everyone:
            tell(process, "report")
        after = sum(cpu_seconds(pid) for pid in router_pids)
        metered += sum(meter(pid) for pid in router_pids) if meter else 0.0
        reports = []
        for process in everyone:
            assert process.stdout is not None
            reports.append(json.loads(process.stdout.readline()))
        for process in everyone:
            tell(process, "stop")
        for process in everyone:
            process.wait(15)
        if spy is not None:
            spy.wait(30)
    finally:
        for process in everyone:
            if process.poll() is None:
                process.kill()
    *received, sent = reports
    elapsed = sent["elapsed"]
    if scenario == "multicast":
        count = sum(r["count"] for r in received)
    else:
        count = sent["count"]
    count = max(count, 1)
    client_cpu = sum(r["cpu"] for r in reports)
    return Result(
        scenario=scenario,
        system=system,
        run=run,
        rate=count / elapsed,
        router_cpu_us=(after - before) * 1e6 / count,
        client_cpu_us=client_cpu * 1e6 / count,
        errors=int(sum(r["errors"] for r in reports)),
        extra={"sender_rate": sent["count"] / elapsed, "metered": metered, "count": count},
    )


def summary(values: list[float], digits: int = 0) -> str:
    if not values:
        return "-"
    fmt = f"{{:,.{digits}f}}"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python {platform.python_version()}, load {load:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions of every scenario and system")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured interval of one repetition")
    parser.add_argument("--window", type=int, default=64, help="messages in flight from the sender")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--crossbar", help="path of the crossbar executable (default: find or install)")
    parser.add_argument("--no-crossbar", action="store_true", help="measure the relay only")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the router process with py-spy during the last run (benchmarks/results/profile-*.txt)",
    )
    parser.add_argument(
        "--wamp-serializer",
        default="msgpack",
        choices=["msgpack", "json"],
        help="WAMP serializer for Crossbar",
    )
    options = parser.parse_args()

    gateway_port = free_port()
    gateway = spawn([str(HERE / "bindings_throughput.py"), "gateway", str(gateway_port)], "gateway")
    node: CrossbarNode | None = None
    results: list[Result] = []
    version = "-"
    try:
        wait_ready(gateway, "gateway")
        if not options.no_crossbar:
            executable = find_crossbar(options.crossbar)
            version = crossbar_version(executable)
            node = CrossbarNode(executable, free_port())
            node.start()
            time.sleep(2.0)  # the realm starts after the transport listens
        for run in range(options.runs):
            for scenario in options.scenarios:
                systems = ["relay"] if scenario == "oneway" or node is None else ["relay", "crossbar"]
                if run % 2:
                    systems.reverse()
                for system in systems:
                    if system == "relay":
                        port, pids = gateway_port, [gateway.pid]
                    else:
                        assert node is not None
                        port, pids = node.port, node.pids
                    profile = RESULTS if options.profile and run == options.runs - 1 else None
                    if profile is not None:
                        profile.mkdir(parents=True, exist_ok=True)
                    result = measure(
                        system,
                        scenario,
                        port,
                        pids,
                        options.seconds,
                        options.window,
                        run,
                        options.wamp_serializer,
                        profile,
                    )
                    results.append(result)
                    print(
                        f"run {run + 1}/{options.runs} {scenario:<12} {system:<8} {result.rate:>9,.0f}/s "
                        f"router {result.router_cpu_us:6.1f} us/msg clients {result.client_cpu_us:6.1f} us/msg"
                        f"{' errors ' + str(result.errors) if result.errors else ''}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        if node is not None:
            node.stop()
        gateway.terminate()
        gateway.wait(15)

    write_csv(results)
    print_table(results, options, version)
    if options.profile:
        print("\nWhere the router's time goes (py-spy samples of the last run):")
        for path in sorted(RESULTS.glob("profile-*.txt")):
            print(report(path))


RESULTS = ROOT / "benchmarks" / "results"


def write_csv(results: list[Result]) -> None:
    directory = RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = directory / f"legacy_shapes-{stamp}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "scenario",
                "system",
                "run",
                "rate_per_s",
                "router_cpu_us_per_msg",
                "client_cpu_us_per_msg",
                "errors",
                "sender_rate_per_s",
            ]
        )
        for r in results:
            writer.writerow(
                [
                    r.scenario,
                    r.system,
                    r.run,
                    f"{r.rate:.1f}",
                    f"{r.router_cpu_us:.2f}",
                    f"{r.client_cpu_us:.2f}",
                    r.errors,
                    f"{r.extra.get('sender_rate', 0):.1f}",
                ]
            )
    print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


LABELS = {
    "multicast": "multicast 1->10 deliveries/s",
    "requestreply": "request/reply calls/s",
    "oneway": "one-way messages/s",
}
TARGETS = {"multicast": 1.5, "requestreply": 1.0}


def print_table(results: list[Result], options: argparse.Namespace, version: str) -> None:
    print(
        f"\nLegacy shapes: relay SOAP bindings vs Crossbar.io {version}, 256-byte payloads, "
        f"{options.window} in flight, {options.runs} runs x {options.seconds:g} s, loopback"
    )
    print(machine())
    print(
        "Median (min-max) of the runs; CPU in microseconds per delivered message (multicast: per delivery)."
    )
    header = f"{'scenario':<30}{'system':<10}{'rate':>26}{'router CPU':>22}{'client CPU':>22}"
    print(header)
    print("-" * len(header))
    for scenario in options.scenarios:
        for system in ("relay", "crossbar"):
            rows = [r for r in results if r.scenario == scenario and r.system == system]
            if not rows:
                continue
            print(
                f"{LABELS[scenario]:<30}{system:<10}{summary([r.rate for r in rows]):>26}"
                f"{summary([r.router_cpu_us for r in rows], 1):>22}{summary([r.client_cpu_us for r in rows], 1):>22}"
            )
        ratios = []
        cpu_ratios = []
        for run in range(options.runs):
            ours = [r for r in results if r.scenario == scenario and r.system == "relay" and r.run == run]
            theirs = [
                r for r in results if r.scenario == scenario and r.system == "crossbar" and r.run == run
            ]
            if ours and theirs:
                ratios.append(ours[0].rate / theirs[0].rate)
                cpu_ratios.append(theirs[0].router_cpu_us / ours[0].router_cpu_us)
        if ratios:
            target = TARGETS.get(scenario)
            verdict = ""
            if target is not None:
                verdict = "  target >= {:.1f}: {}".format(
                    target, "met" if statistics.median(ratios) >= target else "MISSED"
                )
            print(f"{'':<30}{'ratio':<10}{summary(ratios, 2):>26}{summary(cpu_ratios, 2):>22}{verdict}")
    errors = sum(r.errors for r in results)
    if errors:
        print(f"answers that were faults or errors: {errors}")


if __name__ == "__main__":
    main()
