"""Tests for L{relay.hybrid.legs.SpliceLeg.send}: relayed frames go to the socket at once when nothing is queued."""

from __future__ import annotations

import errno

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from relay.hybrid.bridge import Splice
from relay.hybrid.frames import encode_close
from relay.hybrid.legs import SpliceLeg
from relay.hybrid.sockets import allocator_thresholds, keep_read_buffers
from relay.writes import pending_write_bytes

from .recording import RecordingProducer


class FakeSocket:
    """
    A non-blocking socket double: each C{send} takes the next scripted count (or raises it).

    Without a script it takes everything it is given.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.script: list[int | OSError] = []
        self.calls = 0

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return 42

    def send(self, data: bytes | memoryview) -> int:
        self.calls += 1
        step = self.script.pop(0) if self.script else len(data)
        if isinstance(step, OSError):
            raise step
        taken = min(step, len(data))
        self.received += bytes(data[:taken])
        return taken


class Peer(Protocol):
    """Stands in for the gateway's WebSocket protocol on the other side of the leg."""


def tcp_leg() -> tuple[SpliceLeg, tcp.Connection, FakeSocket, MemoryReactorClock]:
    """A leg over a real Twisted TCP transport whose socket is a L{FakeSocket}."""
    reactor = MemoryReactorClock()
    sock = FakeSocket()
    peer = Peer()
    transport = tcp.Connection(sock, peer, reactor)  # type: ignore[arg-type]
    transport.connected = True
    peer.makeConnection(transport)
    splice = Splice(peer, Peer(), reactor, "pair")
    return SpliceLeg(splice, peer, "listener"), transport, sock, reactor


class SpliceLegSendTests(SynchronousTestCase):
    """What the socket does not take right away is queued on the transport, in order."""

    def test_straight_to_the_socket(self) -> None:
        """With nothing queued, the bytes are sent at once and the reactor is not asked to write."""
        leg, transport, sock, reactor = tcp_leg()
        leg.send(memoryview(b"frame-1"))
        self.assertEqual(bytes(sock.received), b"frame-1")
        self.assertEqual(pending_write_bytes(transport), 0)
        self.assertNotIn(transport, reactor.getWriters())

    def test_close_frames_too(self) -> None:
        """A close frame the splice sends a leg goes to the socket at once as well, not a reactor turn later."""
        leg, transport, sock, reactor = tcp_leg()
        leg.splice._send_close(leg, 1000, "bye")
        self.assertEqual(bytes(sock.received), encode_close(1000, "bye"))
        self.assertEqual(pending_write_bytes(transport), 0)
        self.assertNotIn(transport, reactor.getWriters())
        self.assertTrue(leg.close_sent)

    def test_remainder_is_queued_and_keeps_order(self) -> None:
        """A partial send queues the rest; later frames queue behind it instead of jumping ahead."""
        leg, transport, sock, reactor = tcp_leg()
        sock.script = [3]
        leg.send(memoryview(b"abcdef"))
        leg.send(memoryview(b"ghi"))
        self.assertEqual(bytes(sock.received), b"abc")
        self.assertEqual(pending_write_bytes(transport), 6)
        self.assertIn(transport, reactor.getWriters())
        transport.doWrite()
        self.assertEqual(bytes(sock.received), b"abcdefghi")
        self.assertEqual(pending_write_bytes(transport), 0)
        calls = sock.calls
        leg.send(memoryview(b"jk"))
        self.assertEqual((bytes(sock.received), sock.calls), (b"abcdefghijk", calls + 1))

    def test_queued_bytes_pause_the_other_leg_until_drained(self) -> None:
        """A partial send pauses the other leg's reading at once; Twisted resumes it once the queue drains."""
        leg, transport, sock, _ = tcp_leg()
        source = RecordingProducer()
        transport.registerProducer(source, True)
        sock.script = [2]
        leg.send(memoryview(b"abcdef"))
        self.assertEqual(source.calls, ["pause"])
        leg.send(memoryview(b"gh"))
        self.assertEqual(source.calls, ["pause"])
        transport.doWrite()
        self.assertEqual(bytes(sock.received), b"abcdefgh")
        self.assertEqual(source.calls, ["pause", "resume"])

    def test_full_socket(self) -> None:
        """A socket that would block gets nothing now; the transport writes it when the socket drains."""
        leg, transport, sock, _ = tcp_leg()
        sock.script = [BlockingIOError(errno.EAGAIN, "full")]
        leg.send(memoryview(b"xyz"))
        self.assertEqual(bytes(sock.received), b"")
        self.assertEqual(pending_write_bytes(transport), 3)
        transport.doWrite()
        self.assertEqual(bytes(sock.received), b"xyz")

    def test_closing_transport(self) -> None:
        """Once the transport is closing, bytes only go through it (it decides what still gets out)."""
        leg, transport, sock, _ = tcp_leg()
        transport.loseConnection()
        leg.send(memoryview(b"late"))
        self.assertEqual(sock.calls, 0)

    def test_transport_without_socket(self) -> None:
        """TLS and in-memory transports get plain writes of bytes."""
        reactor = MemoryReactorClock()
        peer = Peer()
        transport = StringTransport()
        peer.makeConnection(transport)
        leg = SpliceLeg(Splice(peer, Peer(), reactor, "pair"), peer, "sender")
        self.assertIsNone(leg.socket)
        leg.send(memoryview(bytearray(b"payload"))[2:])
        self.assertEqual(transport.value(), b"yload")


class AllocatorTests(SynchronousTestCase):
    """The allocator keeps per-read buffers for reuse."""

    def test_thresholds(self) -> None:
        """The mmap threshold is four reads (at least 1 MiB, at most glibc's 32 MiB); trim is twice that."""
        mib = 1024 * 1024
        self.assertEqual(allocator_thresholds(65536), (mib, 2 * mib))
        self.assertEqual(allocator_thresholds(262144), (mib, 2 * mib))
        self.assertEqual(allocator_thresholds(4 * mib), (16 * mib, 32 * mib))
        self.assertEqual(allocator_thresholds(64 * mib), (32 * mib, 64 * mib))

    def test_glibc_takes_the_settings(self) -> None:
        """On glibc (the platform the gateway is deployed on here) C{mallopt} accepts both thresholds."""
        import platform

        if platform.libc_ver()[0] != "glibc":
            raise self.skipTest("not a glibc platform")
        self.assertTrue(keep_read_buffers(262144))
