"""
Throughput of a large HTTP transfer through the relay, against the same transfer made directly.

Starts, as separate processes on loopback: a local twisted.web server, the gateway (C{python -m twisted
relay}), and C{relay expose} in front of the local server. Then curl downloads and uploads SIZE megabytes
directly from/to the local server and through the relay, ROUNDS times each, and prints the median
throughput of each, and the peak memory of the gateway and of expose. Uploads are checked (length and
SHA-256 reported by the server).

    python benchmarks/http_transfer.py --size-mb 200 --rounds 3

Numbers depend on the machine; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
KEY = "benchmark-key-0123456789abcdefghij"

CONFIG = """
[[namespaces]]
name = "bench"
hosts = ["127.0.0.1"]

  [[namespaces.rules]]
  name = "root"
  key = "{key}"
  rights = ["Listen", "Send", "Manage"]

  [[namespaces.hybrid_connections]]
  name = "bench"
  requires_client_authorization = false
"""


def serve_local(port_file: str) -> None:
    """Run the local server: C{/bulk/N} streams N zero bytes, C{/sink} hashes the body."""
    from twisted.internet import reactor
    from twisted.internet.task import cooperate
    from twisted.web.resource import Resource
    from twisted.web.server import NOT_DONE_YET, Site

    block = bytes(65536)

    class Bulk(Resource):
        isLeaf = True

        def render_GET(self, request):  # type: ignore[no-untyped-def]
            size = int(request.postpath[0])
            request.setHeader(b"content-length", b"%d" % size)

            def chunks():  # type: ignore[no-untyped-def]
                left = size
                while left > 0:
                    piece = block if left >= len(block) else block[:left]
                    request.write(piece)
                    left -= len(piece)
                    yield None

            task = cooperate(chunks())
            request.registerProducer(_Pausable(task), True)
            task.whenDone().addCallback(lambda _: (request.unregisterProducer(), request.finish()))
            return NOT_DONE_YET

    class Sink(Resource):
        isLeaf = True

        def render_POST(self, request):  # type: ignore[no-untyped-def]
            digest = hashlib.sha256()
            length = 0
            while chunk := request.content.read(MB):
                digest.update(chunk)
                length += len(chunk)
            return f"{length} {digest.hexdigest()}".encode()

    root = Resource()
    root.putChild(b"bulk", Bulk())
    root.putChild(b"sink", Sink())
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")  # type: ignore[attr-defined]
    Path(port_file).write_text(str(port.getHost().port))
    reactor.run()  # type: ignore[attr-defined]


class _Pausable:
    def __init__(self, task):  # type: ignore[no-untyped-def]
        self.task = task
        self.paused = False

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self.task.pause()

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self.task.resume()

    def stopProducing(self) -> None:
        self.task.stop()


def peak_rss_mb(pid: int) -> float:
    """The peak resident set size of a process (Linux), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(path: Path, text: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {text!r} in {path}:\n{path.read_text(errors='replace')[-2000:]}")


def curl(args: list[str]) -> tuple[str, float, float]:
    """Run curl; return (body or status line, seconds, bytes moved)."""
    out = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code} %{time_total} %{size_download} %{size_upload}", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    body, _, stats = out.stdout.rpartition("\n")
    code, seconds, down, up = stats.split()
    if code != "200":
        raise SystemExit(f"curl {args}: HTTP {code}: {body[:300]}")
    return body, float(seconds), max(float(down), float(up))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_local(args.serve)
        return
    size = args.size_mb * MB
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        work = Path(tmp)
        try:
            port_file = work / "local-port"
            processes.append(subprocess.Popen([sys.executable, __file__, "--serve", str(port_file)], env=env))
            wait_for(port_file, "")
            while not port_file.read_text():
                time.sleep(0.05)
            local = f"http://127.0.0.1:{port_file.read_text()}"
            gateway_port = free_port()
            config = work / "relay.toml"
            config.write_text(CONFIG.format(key=KEY))
            gateway_log = work / "gateway.log"
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "twisted", "relay", "--config", str(config), "--state-dir", str(work / "state"),
                     "--listen", f"tcp:{gateway_port}:interface=127.0.0.1"],
                    cwd=ROOT, env=env, stdout=gateway_log.open("w"), stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
            wait_for(gateway_log, "relay listening on")
            expose_log = work / "expose.log"
            connection_string = (
                f"Endpoint=sb://127.0.0.1:{gateway_port}/;SharedAccessKeyName=root;SharedAccessKey={KEY};"
                "UseDevelopmentEmulator=true"
            )
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "relay.cli", "expose", local, "--name", "bench", "--quiet",
                     "--connection-string", connection_string],
                    cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=expose_log.open("w"),
                )
            )  # fmt: skip
            wait_for(expose_log, "online")
            relayed = f"http://127.0.0.1:{gateway_port}/bench"
            upload = work / "upload.bin"
            with upload.open("wb") as f:
                for _ in range(args.size_mb):
                    f.write(os.urandom(MB))
            expected = hashlib.sha256(upload.read_bytes()).hexdigest()
            results: dict[str, list[float]] = {}
            for _ in range(args.rounds):
                for name, base in (("direct", local), ("relay", relayed)):
                    _, seconds, moved = curl(["-o", "/dev/null", f"{base}/bulk/{size}"])
                    assert moved == size, moved
                    results.setdefault(f"download {name}", []).append(size / MB / seconds)
                    body, seconds, moved = curl(["-X", "POST", "-T", str(upload), f"{base}/sink"])
                    assert body == f"{size} {expected}", body
                    results.setdefault(f"upload {name}", []).append(size / MB / seconds)
            peaks = {name: peak_rss_mb(processes[i].pid) for i, name in ((1, "gateway"), (2, "relay expose"))}
        finally:
            for process in reversed(processes):
                process.terminate()
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
    print(f"{args.size_mb} MB over loopback, curl, median of {args.rounds} rounds (MB/s, MB = 2**20 bytes):")
    for direction in ("download", "upload"):
        direct = statistics.median(results[f"{direction} direct"])
        relay = statistics.median(results[f"{direction} relay"])
        print(
            f"  {direction:8}  direct {direct:8.1f}   through relay + expose {relay:8.1f}   ({relay / direct:.0%})"
        )
    print("peak resident memory: " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in peaks.items()))


if __name__ == "__main__":
    main()
