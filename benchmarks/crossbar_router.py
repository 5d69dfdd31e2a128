"""
A Crossbar.io router on loopback for the legacy-shape benchmark: find or install it, configure, start, stop.

Crossbar pins many packages of its own, so it is run from its own virtual environment rather than the
project's Python: C{--crossbar PATH} names the executable; otherwise C{crossbar} on C{PATH}, then
C{$RELAY_CROSSBAR_VENV/bin/crossbar} (default C{~/.cache/relay-bench/crossbar-venv}), and when none exists
the benchmark creates that environment with C{python -m venv} and C{pip install crossbar}.

The node gets a generated configuration in a temporary directory: one router worker, realm C{realm1} in
which anonymous clients may publish, subscribe, register and call anything, one WebSocket transport on
C{127.0.0.1:PORT/ws} offering msgpack and JSON, automatic pings off (our gateway's are every 30 s, so
neither side pings during a run), and the log level at C{warn}.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_VENV = Path(os.environ.get("RELAY_CROSSBAR_VENV", Path.home() / ".cache/relay-bench/crossbar-venv"))


def find_crossbar(explicit: str | None = None, install: bool = True) -> str:
    """The C{crossbar} executable: given, on PATH, in the benchmark venv, or installed there now."""
    if explicit:
        return explicit
    found = shutil.which("crossbar")
    if found:
        return found
    candidate = DEFAULT_VENV / "bin" / "crossbar"
    if candidate.exists():
        return str(candidate)
    if not install:
        raise RuntimeError("crossbar not found; pass --crossbar or let the benchmark install it")
    print(f"installing crossbar into {DEFAULT_VENV} (one time) ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(DEFAULT_VENV)], check=True)
    subprocess.run([str(DEFAULT_VENV / "bin" / "pip"), "install", "-q", "crossbar"], check=True)
    return str(candidate)


def crossbar_version(executable: str) -> str:
    """The Crossbar.io version line of C{crossbar version}."""
    try:
        out = subprocess.run([executable, "version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in out.splitlines():
        if "Crossbar.io" in line:
            found = re.search(r"v\d+(?:\.\d+)+", line)
            if found:
                return found.group(0)
    return "unknown"


def config(port: int) -> dict[str, object]:
    """The node configuration (see the module docstring)."""
    permissions = {
        "uri": "",
        "match": "prefix",
        "allow": {"call": True, "register": True, "publish": True, "subscribe": True},
        "disclose": {"caller": False, "publisher": False},
        "cache": True,
    }
    return {
        "version": 2,
        "controller": {},
        "workers": [
            {
                "type": "router",
                "realms": [
                    {"name": "realm1", "roles": [{"name": "anonymous", "permissions": [permissions]}]}
                ],
                "transports": [
                    {
                        "type": "websocket",
                        "endpoint": {"type": "tcp", "port": port, "interface": "127.0.0.1"},
                        "serializers": ["msgpack", "json"],
                        "options": {"auto_ping_interval": 0, "open_handshake_timeout": 30000},
                    }
                ],
            }
        ],
    }


class CrossbarNode:
    """One Crossbar node process (controller plus router worker), started in its own process group."""

    def __init__(self, executable: str, port: int) -> None:
        self.executable = executable
        self.port = port
        self.directory = Path(tempfile.mkdtemp(prefix="relay-bench-crossbar-"))
        (self.directory / "config.json").write_text(json.dumps(config(port), indent=2))
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.directory / "node.log"

    def start(self, timeout: float = 90.0) -> None:
        """Start the node and wait until its transport accepts connections."""
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [self.executable, "start", "--cbdir", str(self.directory), "--loglevel", "warn"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"crossbar exited with {self.process.returncode}; see {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"crossbar did not listen within {timeout} s; see {self.log}")

    @property
    def pids(self) -> list[int]:
        """The node and every process below it (the router worker does the routing)."""
        if self.process is None:
            return []
        found = [self.process.pid]
        for pid in found:
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            found.extend(int(child) for child in children)
        return found

    def stop(self) -> None:
        """Stop the node's process group (it was started in a session of its own)."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        except ProcessLookupError:
            pass
        shutil.rmtree(self.directory, ignore_errors=True)
