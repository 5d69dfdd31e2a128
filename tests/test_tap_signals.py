"""A real C{twistd relay} process and the signals that stop it while it drains."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from relay.auth import make_token

KEY = "signals-test-key-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def connect(port: int, deadline: float) -> socket.socket:
    """A connection to the gateway, once it accepts them."""
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class DrainSignalTests(SynchronousTestCase):
    """C{twistd -n relay} with C{drain_timeout}: SIGTERM drains, a second SIGTERM ends the drain."""

    def test_second_signal_ends_the_drain(self) -> None:
        """
        A second SIGTERM during the drain stops the gateway at once, without a traceback.

        twistd's handlers took it as another C{reactor.stop()}: a critical C{ReactorNotRunning} traceback
        in the log, and the drain went on for the whole C{drain_timeout}.
        """
        port = free_port()
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        config = directory / "relay.toml"
        config.write_text(
            f'[gateway]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\ndrain_timeout = 60\n'
            f'[[namespaces]]\nname = "signals"\nhosts = ["127.0.0.1"]\n'
            f'  [[namespaces.rules]]\n  name = "root"\n  key = "{KEY}"\n  rights = ["Manage"]\n'
            f'  [[namespaces.hybrid_connections]]\n  name = "hyco"\n'
        )
        log = directory / "twistd.log"
        with log.open("w") as output:
            process = subprocess.Popen(
                [
                    "twistd",
                    "-n",
                    "--pidfile=",
                    "relay",
                    "--config",
                    str(config),
                    "--state-dir",
                    str(directory),
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        token = make_token("http://127.0.0.1/hyco", "root", KEY)
        listener = connect(port, time.monotonic() + 30)
        self.addCleanup(listener.close)
        key = base64.b64encode(os.urandom(16)).decode()
        listener.sendall(
            f"GET /$hc/hyco?sb-hc-action=listen HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"ServiceBusAuthorization: {token}\r\n\r\n".encode()
        )
        self.assertTrue(read_until(listener, b"\r\n\r\n").startswith(b"HTTP/1.1 101"))
        sender = connect(port, time.monotonic() + 5)
        self.addCleanup(sender.close)
        sender.sendall(
            f"GET /hyco/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nServiceBusAuthorization: {token}\r\n\r\n".encode()
        )
        self.assertIn(
            b'"request"', read_until(listener, b'"request"')
        )  # under way: the listener never answers
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while b"draining:" not in log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertIsNone(process.poll(), log.read_text())
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        self.assertLess(time.monotonic() - started, 15)
        text = log.read_text()
        self.assertIn("stopping now: ending 1 pairs, requests and messages under way", text)
        self.assertNotIn("ReactorNotRunning", text)
        self.assertNotIn("Traceback", text)
