"""
The HTTP load generator: wrk (the Debian package), run the same way against every variant.

wrk is a compiled, epoll-driven client that keeps its connections alive; one wrk thread issues far more
requests per second than any variant here can answer, so it is not the bottleneck (its CPU share is
reported with every row). The runner finds it on C{PATH} or installs it with C{apt-get install -y wrk}
(L{ensure_wrk}), like nginx.

    python -m benchmarks.httpload WRK URL CONNECTIONS SECONDS [HEADERS_JSON]

Warms up for one second with the same connections, then prints C{MEASURE start}, runs wrk for SECONDS,
prints C{MEASURE end}, and prints C{RESULT {json}}: requests/s, latency p50/p99 (µs), errors (non-2xx
answers and socket errors), and wrk's own CPU share.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import sys
from typing import Any

_UNITS_US = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def ensure_wrk(install: bool) -> tuple[str | None, str]:
    """
    Find wrk, or install the Debian package when allowed.

    @return: its path (or C{None}) and a sentence for the report saying what happened.
    """
    found = shutil.which("wrk")
    if found:
        return found, f"wrk {wrk_version(found)} (found: {found})"
    if not install:
        return None, "wrk not found and --no-install given: HTTP scenarios skipped"
    if shutil.which("apt-get") is None:
        return None, "wrk not found and apt-get is not available: HTTP scenarios skipped"
    from benchmarks.nginx import apt_install

    error = apt_install("wrk")
    found = shutil.which("wrk")
    if found is None:
        return (
            None,
            f"wrk could not be installed ({error or 'no binary after install'}): HTTP scenarios skipped",
        )
    return found, f"wrk {wrk_version(found)} (installed by this run with apt-get: {found})"


def wrk_version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"wrk (\S+)", out.stdout + out.stderr)
    return match.group(1) if match else "?"


def _duration_us(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_US[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """The figures of a C{wrk --latency} report."""
    rate = re.search(r"Requests/sec:\s*([\d.]+)", output)
    if rate is None:
        raise ValueError(f"no Requests/sec in wrk's output: {output[-500:]}")
    total = re.search(r"(\d+) requests in", output)
    latency = dict(re.findall(r"^\s*(50|99)%\s+(\S+)$", output, re.MULTILINE))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "requests_per_s": float(rate.group(1)),
        "requests": int(total.group(1)) if total else 0,
        "p50_us": _duration_us(latency["50"]) if "50" in latency else 0.0,
        "p99_us": _duration_us(latency["99"]) if "99" in latency else 0.0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(n) for n in sockets.groups()) if sockets else 0,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(wrk: str, url: str, connections: int, seconds: float, headers: dict[str, str]) -> str:
    command = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return done.stdout


def main(argv: list[str]) -> None:
    wrk, url, connections, seconds = argv[0], argv[1], int(argv[2]), float(argv[3])
    headers: dict[str, str] = json.loads(argv[4]) if len(argv) > 4 else {}
    run_wrk(wrk, url, connections, 1, headers)  # warm-up: connections open, caches and pools filled
    print("MEASURE start", flush=True)
    cpu0 = _children_cpu()
    output = run_wrk(wrk, url, connections, seconds, headers)
    cpu = _children_cpu() - cpu0
    print("MEASURE end", flush=True)
    result = parse_wrk(output)
    result["loadgen_cpu"] = cpu / max(1, round(seconds))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
