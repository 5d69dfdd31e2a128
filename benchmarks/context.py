"""
What a scenario gets to work with: settings, samples, and the processes of a benchmark.

The gateway, the Autobahn endpoints, nginx and the load generators are each started here and stopped when
the scenario ends.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.nginx import NginxBinary, free_port, write_config, write_static_config
from benchmarks.procs import Proc, Processes

ENTITY = "bench"
WEB_ENTITY = "web"  # anonymous senders: the HTTP scenarios' public endpoint, like a localtunnel URL
KEY_NAME = "root"
KEY = "bench-root-key-0123456789abcdefghij"


@dataclass(frozen=True)
class Settings:
    """
    How the suite was asked to run.

    @ivar seconds: length of one timed measurement.
    @ivar py_spy: sample the gateway with py-spy during measurements (slows it; for diagnosis only).
    @ivar cprofile: run gateways under cProfile, writing C{<name>.prof} beside their logs (slows them a lot;
        for diagnosis only: which functions run how often per unit of work).
    """

    quick: bool
    runs: int
    seconds: float
    out: Path
    py_spy: bool = False
    cprofile: bool = False
    install: bool = True
    cases: tuple[str, ...] = ()
    gateway_from: Path | None = None
    python_splice: bool = False


@dataclass(frozen=True)
class Sample:
    """One number from one repetition."""

    scenario: str
    case: str
    variant: str
    metric: str
    unit: str
    value: float
    run: int


@dataclass
class Gateway:
    """A running gateway process."""

    proc: Proc
    port: int
    log: Path
    ca: Path | None = None  # the development CA that signed its certificate, when it serves TLS

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.ca else 'ws'}://127.0.0.1:{self.port}"

    def token(self, entity: str = ENTITY, ttl: float = 86400.0) -> str:
        from relay.auth import make_token

        return make_token(f"http://127.0.0.1/{entity}", KEY_NAME, KEY, ttl=ttl)

    def sender_path(self, entity: str = ENTITY) -> str:
        return f"/$hc/{entity}?sb-hc-action=connect"

    def sender_headers(self, entity: str = ENTITY) -> dict[str, str]:
        return {"ServiceBusAuthorization": self.token(entity)}

    def connection_string(self) -> str:
        """A connection string with the root key (C{relay expose}): plain WebSockets unless it serves TLS."""
        text = f"Endpoint=sb://127.0.0.1:{self.port}/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY}"
        return text if self.ca else text + ";UseDevelopmentEmulator=true"


def gateway_config(limits: Mapping[str, float]) -> str:
    """
    The benchmark namespace: one rule and two hybrid connections.

    C{bench} requires sender tokens; C{web} does not (HTTP requests from anyone, as a tunnel's public URL
    takes them).
    """
    lines = [f"{name} = {value}" for name, value in limits.items()]
    return (
        "[gateway]\n"
        + "\n".join(lines)
        + textwrap.dedent(f"""

        [[namespaces]]
        name = "bench"
        hosts = ["127.0.0.1", "localhost"]

          [[namespaces.rules]]
          name = "{KEY_NAME}"
          key = "{KEY}"
          rights = ["Listen", "Send", "Manage"]

          [[namespaces.hybrid_connections]]
          name = "{ENTITY}"
          max_listeners = 25

          [[namespaces.hybrid_connections]]
          name = "{WEB_ENTITY}"
          requires_client_authorization = false
        """)
    )


@dataclass
class Context:
    """
    The run-time of one scenario.

    @ivar notes: sentences for the report (which nginx, what was skipped and why).
    """

    settings: Settings
    scenario: str
    procs: Processes
    nginx: NginxBinary | None
    samples: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _count: int = 0

    @property
    def runs(self) -> int:
        return self.settings.runs

    @property
    def quick(self) -> bool:
        return self.settings.quick

    def repetitions(self) -> Iterator[int]:
        """Repetition numbers, printing progress."""
        for run in range(self.runs):
            print(f"  [{self.scenario}] run {run + 1}/{self.runs}", file=sys.stderr, flush=True)
            yield run

    def wants(self, case: str) -> bool:
        """Whether C{--case} selects this case (every case when none was given)."""
        import fnmatch

        return not self.settings.cases or any(fnmatch.fnmatch(case, p) for p in self.settings.cases)

    def record(self, case: str, variant: str, metric: str, value: float, unit: str, run: int) -> None:
        self.samples.append(Sample(self.scenario, case, variant, metric, unit, float(value), run))

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def path(self, name: str) -> Path:
        path = self.settings.out / self.scenario / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _unique(self, name: str) -> str:
        self._count += 1
        return f"{name}-{self._count}"

    # -- processes ----------------------------------------------------------------------------------------

    def _gateway_knows(self, setting: str) -> bool:
        """Whether the gateway's code (this checkout or C{--gateway-from}) has a C{[gateway]} setting."""
        root = self.settings.gateway_from or Path(__file__).resolve().parent.parent
        config = root / "relay" / "config.py"
        return config.is_file() and f'"{setting}"' in config.read_text()

    def gateway(
        self,
        limits: Mapping[str, float] | None = None,
        *,
        name: str = "gateway",
        wrapper: Sequence[str] = (),
        timeout: float = 30.0,
        tls: bool = False,
    ) -> Gateway:
        """
        Start a gateway with the benchmark namespace on a free loopback port.

        @param wrapper: a command the gateway runs under (valgrind), with its options.
        @param timeout: seconds to wait until it listens.
        @param tls: serve TLS with a certificate for 127.0.0.1 from a development CA made for the run.
        """
        merged = {"listener_failure_delay": 0.0, **(limits or {})}
        if self._gateway_knows("max_connections_per_namespace"):
            # scale.idle holds 9,000 pairs (18,000 connections) in the one benchmark namespace, past the
            # specs' default of 5,000; a --gateway-from checkout older than the setting refuses the key.
            merged.setdefault("max_connections_per_namespace", 1_000_000)
        if self.settings.python_splice:
            merged["native_splice"] = 0  # an integer setting
        config = self.path(f"{name}.toml")
        config.write_text(gateway_config(merged))
        log = self.path(f"{name}.log")
        listen, ca = "tcp:0:interface=127.0.0.1:backlog=4096", None
        if tls:
            from relay.certs import issue_server_certificate

            certificate = issue_server_certificate(self.path("tls"), ["127.0.0.1"])
            listen, ca = (
                certificate.endpoint_description(0, "127.0.0.1") + ":backlog=4096",
                certificate.ca_path,
            )
        proc = self.procs.python(
            name,
            "benchmarks.gateway",
            "--log",
            str(log),
            *(["--cprofile", str(self.path(f"{name}.prof"))] if self.settings.cprofile else []),
            "--",
            "--listen",
            listen,
            "--config",
            str(config),
            "--state-dir",
            str(self.path(f"{name}-state")),
            code=self.settings.gateway_from,
            wrapper=wrapper,
            timeout=timeout,
        )
        _, line = proc.wait_for_line("READY", timeout)
        if "splice=native" in line:
            self.note(
                "gateway: WebSocket pairs relayed by the native thread (relay._splice) once established"
            )
        else:
            self.note("gateway: WebSocket pairs relayed in Python (native thread off or not built)")
        return Gateway(proc, int(line.split()[1]), log, ca)

    def autobahn_server(self) -> tuple[Proc, int]:
        """The direct endpoint: an Autobahn server counting (or echoing) messages."""
        port_file = self.path(self._unique("server") + ".port")
        proc = self.procs.python(
            self._unique("autobahn-server"), "benchmarks.endpoints", "server", str(port_file)
        )
        return proc, int(port_file.read_text())

    def autobahn_listener(self, gateway: Gateway) -> Proc:
        """The relayed endpoint: an Autobahn listener whose rendezvous legs count (or echo) messages."""
        return self.procs.python(
            self._unique("autobahn-listener"),
            "benchmarks.endpoints",
            "listener",
            gateway.ws_url,
            ENTITY,
            gateway.token(),
        )

    def nginx_proxy(self, upstream: int) -> tuple[Proc, int] | None:
        """nginx proxying to C{upstream}, or C{None} when nginx is not available."""
        if self.nginx is None:
            return None
        port = free_port()
        prefix = self.path(self._unique("nginx"))
        config = write_config(prefix, upstream, port)
        proc = self.procs.start(
            prefix.name, [self.nginx.path, "-p", str(prefix), "-c", str(config)], ready=None
        )
        _wait_for_port(port, proc)
        return proc, port

    def nginx_static(self, root: Path) -> tuple[Proc, int] | None:
        """nginx serving the files under C{root}, or C{None} when nginx is not available."""
        if self.nginx is None:
            return None
        port = free_port()
        prefix = self.path(self._unique("nginx-static"))
        config = write_static_config(prefix, root, port)
        proc = self.procs.start(
            prefix.name, [self.nginx.path, "-p", str(prefix), "-c", str(config)], ready=None
        )
        _wait_for_port(port, proc)
        return proc, port

    def load(
        self,
        name: str,
        args: list[str],
        watch: Mapping[str, Proc],
        timeout: float,
        then: Callable[[Proc], None] | None = None,
        meter: Callable[[], float] | None = None,
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """
        Run a load generator (C{python -m benchmarks.loadgen ...} or another module) to completion.

        @param then: called with the load generator's process once it has measured, before it exits
            (the idle-pairs scenario samples memory while the load generator holds its connections).
        @param meter: read when the load generator starts and ends its timed part; the difference is
            the result's C{metered} (the cost scenario reads valgrind's instruction counter).
        @return: its C{RESULT} and the CPU share (1.0 = one core) each watched process used while it
            measured.
        """
        proc = self.procs.python(self._unique(name), args[0], *args[1:], ready=None)
        return self._measure(proc, name, watch, timeout, then, meter)

    def run_load(
        self,
        name: str,
        argv: list[str],
        watch: Mapping[str, Proc],
        timeout: float,
        meter: Callable[[], float] | None = None,
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """Like L{load}, for a load generator that is not a Python module (a compiled one)."""
        proc = self.procs.start(self._unique(name), argv, ready=None)
        return self._measure(proc, name, watch, timeout, None, meter)

    def _measure(
        self,
        proc: Proc,
        name: str,
        watch: Mapping[str, Proc],
        timeout: float,
        then: Callable[[Proc], None] | None,
        meter: Callable[[], float] | None = None,
    ) -> tuple[dict[str, Any], dict[str, float]]:
        start_index, _ = proc.wait_for_line("MEASURE start", timeout)
        metered = meter() if meter is not None else 0.0
        before = {k: p.cpu() for k, p in watch.items() if p.alive()}
        spy = self._start_py_spy(watch.get("gateway"), name)

        t0 = time.monotonic()
        proc.wait_for_line("MEASURE end", timeout, start_index)
        elapsed = time.monotonic() - t0
        after = {k: p.cpu() for k, p in watch.items() if p.alive()}
        if meter is not None:
            metered = meter() - metered
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        if then is not None:
            then(proc)
        lines = self.procs.finish(proc, timeout)
        result = next(json.loads(line[7:]) for line in reversed(lines) if line.startswith("RESULT "))
        if meter is not None:
            result["metered"] = metered
        cpu = {k: (after[k] - before[k]) / elapsed for k in before if k in after}
        return result, cpu

    def _start_py_spy(self, gateway: Proc | None, name: str) -> subprocess.Popen[bytes] | None:
        if not self.settings.py_spy or gateway is None:
            return None
        out = self.path(f"profiles/{self._unique(name)}.txt")
        return subprocess.Popen(
            [
                "py-spy",
                "record",
                "-p",
                str(gateway.pid),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def _wait_for_port(port: int, proc: Proc, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{proc.name} is not listening on {port}")
