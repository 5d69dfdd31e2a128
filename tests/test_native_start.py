"""The splice's native thread when it cannot start: the gateway relays in Python and says so once."""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from twisted.internet import tcp
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from relay.hybrid.bridge import Splice
from relay.hybrid.frames import OP_BINARY, encode_frame
from relay.hybrid.native import NativeSplices

from .nativeneed import native_module
from .test_frames import masked
from .test_native_pump import read_exactly
from .test_splice_endings import Peer


@contextmanager
def no_descriptor_left() -> Iterator[None]:
    """Every new descriptor of the process fails with EMFILE (its limit set to the lowest free one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest = os.open(os.devnull, os.O_RDONLY)  # the lowest free descriptor
    os.close(lowest)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class ThreadStartTests(SynchronousTestCase):
    """A thread that cannot start (no descriptor or thread left for it) leaves the pairs in Python."""

    def setUp(self) -> None:
        native_module()

    def leg(self, reactor: MemoryReactorClock) -> tuple[Peer, socket.socket]:
        """A leg's protocol over a real TCP transport (a socket pair); the peer's end."""
        peer_end, gateway_end = socket.socketpair()
        self.addCleanup(peer_end.close)
        self.addCleanup(gateway_end.close)
        protocol = Peer()
        transport = tcp.Connection(gateway_end, protocol, reactor)  # type: ignore[arg-type]
        transport.connected = True
        protocol.makeConnection(transport)
        return protocol, peer_end

    def test_pairs_are_relayed_in_python_and_the_failure_logged_once(self) -> None:
        """
        Pairs made while the thread cannot start are relayed in Python, for good; one error line says why.

        They used to fail as they were joined (both legs answered with 101, then nothing relayed), and so
        did every pair after them. Once the process has descriptors again, the next pair starts the thread.
        """
        reactor = MemoryReactorClock()
        native = NativeSplices(reactor, 65536)
        self.addCleanup(native.close)
        legs = [(self.leg(reactor), self.leg(reactor)) for _ in range(2)]
        splices = []
        with capturedLogs() as events, no_descriptor_left():
            for (sender, _), (listener, _) in legs:
                splice = Splice(sender, listener, reactor, "pair", native=native)
                splice.start()
                splices.append(splice)
        splice.data_received(splice.sender, masked(OP_BINARY, b"in python"))
        listener_end = legs[-1][1][1]
        self.assertEqual(read_exactly(listener_end, 11), encode_frame(OP_BINARY, b"in python"))
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("Too many open files", str(errors[0]["error"]))
        self.assertEqual(len(reactor.readers), 0)  # no pump descriptor
        for splice in splices:
            for _ in range(20):  # past HAND_OVER_AFTER_READS: no thread to hand the pair to
                splice.data_received(splice.sender, masked(OP_BINARY, b""))
            self.assertIsNone(splice.native_handle)
        (sender, _), (listener, _) = self.leg(reactor), self.leg(reactor)
        Splice(sender, listener, reactor, "pair", native=native)
        self.assertEqual(len(reactor.readers), 1)  # descriptors again: the next pair starts the thread
