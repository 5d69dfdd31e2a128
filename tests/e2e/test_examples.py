"""The README's quickstart examples run as written against a real gateway."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from .gateway import start_gateway

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class _Collect(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[int] = Deferred()
        self.started: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if b"listening" in self.output and not self.started.called:
            self.started.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", 0) or 0)


def run(case: TestCase, script: str, *args: str) -> _Collect:
    proto = _Collect()
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES.parent)}
    process = reactor.spawnProcess(
        proto, sys.executable, [sys.executable, str(EXAMPLES / script), *args], env=env
    )

    def stop() -> Deferred[int] | None:
        if not proto.ended.called:
            process.signalProcess("KILL")
            return proto.ended
        return None

    case.addCleanup(stop)
    return proto


class QuickstartTests(TestCase):
    """examples/hybrid: the Python quickstart."""

    timeout = 60

    async def test_python_quickstart(self) -> None:
        """The listener example echoes what the sender example sends."""
        gateway = await start_gateway(self)
        listener = run(self, "hybrid/listener.py", gateway.connection_string)
        await listener.started
        sender = run(self, "hybrid/sender.py", gateway.connection_string, "hyco", "quickstart works")
        code = await sender.ended
        self.assertEqual(code, 0, sender.output)
        self.assertEqual(sender.output.strip(), b"quickstart works")
