"""
Messages per second through the SOAP relay bindings, for each delivery shape.

Sender, gateway and listener(s) run in separate processes on loopback:

    python benchmarks/bindings_throughput.py                # all shapes, 5 s each
    python benchmarks/bindings_throughput.py --seconds 3 --shapes oneway requestreply

Each shape is measured the same way: one sender process with our C{ChannelFactory} (WebSocket channel) keeps
C{--window} calls in flight and counts the calls that completed (C{r:Delivered} for datagrams, the reply
for requests) during the measured interval; the listener process counts what its service hosts received.
Messages carry a 256-byte string parameter (about 1 KB of SOAP on the wire). Multicast publishes to 10
subscribers (one listener process holding 10 hosts, each with its own WebSocket).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# the checkout whose relay and bindings run: this one, or another for an A/B (legacy_shapes.spawn's code)
sys.path.insert(0, os.environ.get("RELAY_BENCH_CODE") or str(ROOT))

KEY = "benchmark-key-0123456789abcdefghij"
PAYLOAD = "x" * 256
SHAPES = ("oneway", "requestreply", "multicast")
SUBSCRIBERS = 10
NAMES = {"oneway": "ow", "requestreply": "rr", "multicast": "mc"}
CONFIG = """
[[namespaces]]
name = "bench"
hosts = ["127.0.0.1"]

  [[namespaces.rules]]
  name = "root"
  key = "{key}"
  rights = ["Listen", "Send", "Manage"]

  [[namespaces.oneway]]
  name = "ow"
  max_queue_messages = 100000

  [[namespaces.requestreply]]
  name = "rr"

  [[namespaces.multicast]]
  name = "mc"
  max_queue_messages = 100000
  max_queue_bytes = 268435456
"""


def contract(shape: str) -> Any:
    """The contract for a shape: datagram names need all one-way contracts."""
    from zope.interface import Interface

    from bindings.contracts import contract, operation

    if shape == "requestreply":

        @contract(namespace="urn:bench")
        class IEcho(Interface):
            @operation()
            def Echo(text: str) -> str:
                """A request."""

        return IEcho

    @contract(namespace="urn:bench")
    class IPost(Interface):
        @operation(one_way=True)
        def Post(text: str) -> None:
            """A datagram."""

    return IPost


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- processes ----------------------------------------------------------------------------------------


def run_gateway(port: int) -> None:
    import tomllib

    from twisted.internet import reactor

    from bindings.gateway import install
    from bindings.settings import ENTITY_SECTIONS
    from relay.config import default_limits, parse_config
    from relay.service import GatewayService, GatewaySettings

    parsed = parse_config(tomllib.loads(CONFIG.format(key=KEY)), "<bench>", ENTITY_SECTIONS)
    settings = GatewaySettings(
        listen=(f"tcp:{port}:interface=127.0.0.1",),
        public_url=f"http://127.0.0.1:{port}",
        state_dir=Path(tempfile.mkdtemp()),
        config=parsed.__class__(namespaces=parsed.namespaces, limits=default_limits()),
    )
    service = GatewayService(settings, reactor=reactor, extensions=(install,))
    service.startService()
    service.ready.addCallback(lambda _: print("READY", flush=True))
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def run_listener(port: int, shape: str) -> None:
    from twisted.internet import defer, reactor, task
    from zope.interface import implementer

    from bindings.credentials import SasCredentials
    from bindings.host import ServiceHost
    from bindings.settings import MulticastBinding, OneWayBinding, RequestReplyBinding

    interface = contract(shape)
    received = [0]

    class Poster:
        def Post(self, text: str) -> None:
            received[0] += 1

    class Echoer:
        def Echo(self, text: str) -> str:
            received[0] += 1
            return text

    service_class = implementer(interface)(Echoer if shape == "requestreply" else Poster)

    binding = {
        "oneway": OneWayBinding(),
        "requestreply": RequestReplyBinding(),
        "multicast": MulticastBinding(),
    }[shape]
    count = SUBSCRIBERS if shape == "multicast" else 1
    hosts = [
        ServiceHost(
            service_class(),
            interface,
            f"http://127.0.0.1:{port}/{NAMES[shape]}",
            binding,
            SasCredentials("root", KEY),
            reactor=reactor,
            max_concurrent_calls=1000,
        )
        for _ in range(count)
    ]

    async def main() -> None:
        for host in hosts:
            await host.open()
        print("READY", flush=True)
        # "stop" on stdin: report what was received, then exit
        from twisted.internet import stdio
        from twisted.protocols.basic import LineReceiver

        done: defer.Deferred[None] = defer.Deferred()

        class Control(LineReceiver):
            delimiter = b"\n"

            def lineReceived(self, line: bytes) -> None:
                if line.strip() == b"stop" and not done.called:
                    print(json.dumps({"received": received[0]}), flush=True)
                    done.callback(None)

        stdio.StandardIO(Control())
        await done

    task.react(lambda _: defer.Deferred.fromCoroutine(main()))


def run_sender(port: int, shape: str, seconds: float, window: int) -> None:
    from twisted.internet import defer, reactor, task

    from bindings.channels import ChannelFactory
    from bindings.credentials import SasCredentials
    from bindings.settings import MulticastBinding, OneWayBinding, RequestReplyBinding

    interface = contract(shape)
    binding = {
        "oneway": OneWayBinding(),
        "requestreply": RequestReplyBinding(),
        "multicast": MulticastBinding(),
    }[shape]
    factory = ChannelFactory(
        interface,
        f"http://127.0.0.1:{port}/{NAMES[shape]}",
        binding,
        SasCredentials("root", KEY),
        reactor=reactor,
    )
    channel = factory.create_channel()
    call = channel.Echo if shape == "requestreply" else channel.Post

    async def main() -> None:
        await factory.open()
        for _ in range(200):  # warm up
            await call(PAYLOAD)
        completed = 0
        failures = 0
        deadline = reactor.seconds() + seconds
        started = reactor.seconds()
        cpu = time.process_time()

        async def worker() -> None:
            nonlocal completed, failures
            while reactor.seconds() < deadline:
                try:
                    await call(PAYLOAD)
                    completed += 1
                except Exception:
                    failures += 1

        await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(window)])
        elapsed = reactor.seconds() - started
        cpu = time.process_time() - cpu
        print(
            json.dumps({"completed": completed, "failures": failures, "elapsed": elapsed, "cpu": cpu}),
            flush=True,
        )
        await factory.close()

    task.react(lambda _: defer.Deferred.fromCoroutine(main()))


# -- orchestration ------------------------------------------------------------------------------------


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(Path(tempfile.gettempdir()) / f"bindings-bench-{args[0]}.log", "w")
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )


def wait_ready(process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.strip() == "READY":
            return
        if not line and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
    raise RuntimeError("process did not become ready")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (Linux /proc), or 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(port: int, shape: str, seconds: float, window: int, gateway_pid: int) -> dict[str, float]:
    """Run one shape: a listener process, then a sender process; CPU is read from /proc around the run."""
    listener = spawn("listener", str(port), shape)
    try:
        wait_ready(listener)
        before = cpu_seconds(gateway_pid), cpu_seconds(listener.pid)
        sender = spawn("sender", str(port), shape, str(seconds), str(window))
        out, _ = sender.communicate(timeout=seconds + 60)
        after = cpu_seconds(gateway_pid), cpu_seconds(listener.pid)
        result = json.loads(out.strip().splitlines()[-1])
        assert listener.stdin is not None and listener.stdout is not None
        listener.stdin.write("stop\n")
        listener.stdin.flush()
        received = json.loads(listener.stdout.readline())["received"]
        listener.wait(10)
    finally:
        if listener.poll() is None:
            listener.kill()
    rate = result["completed"] / result["elapsed"]
    per_message = 1e6 / max(result["completed"], 1)  # CPU microseconds per completed call
    return {
        "rate": rate,
        "deliveries": rate * (SUBSCRIBERS if shape == "multicast" else 1),
        "failures": result["failures"],
        "received": received,
        "cpu_sender": result["cpu"] * per_message,
        "cpu_gateway": (after[0] - before[0]) * per_message,
        "cpu_listener": (after[1] - before[1]) * per_message,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("role", nargs="?", default="run", choices=["run", "gateway", "listener", "sender"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured interval per shape")
    parser.add_argument("--window", type=int, default=64, help="calls in flight")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    options = parser.parse_args()
    if options.role == "gateway":
        run_gateway(int(options.args[0]))
        return
    if options.role == "listener":
        run_listener(int(options.args[0]), options.args[1])
        return
    if options.role == "sender":
        run_sender(int(options.args[0]), options.args[1], float(options.args[2]), int(options.args[3]))
        return
    port = free_port()
    gateway = spawn("gateway", str(port))
    try:
        wait_ready(gateway)
        rows = [
            (shape, measure(port, shape, options.seconds, options.window, gateway.pid))
            for shape in options.shapes
        ]
    finally:
        gateway.terminate()
        gateway.wait(15)
    print(
        textwrap.dedent(f"""
        SOAP relay bindings, 256-byte payload, {options.window} calls in flight, {options.seconds:g} s per shape,
        sender / gateway / listener in separate processes on loopback ({os.cpu_count()} CPUs, Python {sys.version.split()[0]})
    """).strip()
    )
    print(
        "CPU columns: microseconds of CPU per message in each process (other load on the machine excluded)."
    )
    print(
        f"{'shape':<24}{'messages/s':>11}{'deliveries/s':>13}{'failures':>9}"
        f"{'CPU sender':>12}{'CPU gateway':>12}{'CPU listener':>13}"
    )
    for shape, row in rows:
        label = f"{shape} (1 -> {SUBSCRIBERS})" if shape == "multicast" else shape
        print(
            f"{label:<24}{row['rate']:>11.0f}{row['deliveries']:>13.0f}{row['failures']:>9.0f}"
            f"{row['cpu_sender']:>12.0f}{row['cpu_gateway']:>12.0f}{row['cpu_listener']:>13.0f}"
        )


if __name__ == "__main__":
    main()
