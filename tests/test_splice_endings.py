"""How a Python splice ends: a broken frame after good ones, and legs whose peers stop reading."""

from __future__ import annotations

import errno
import tracemalloc
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from relay.hybrid.bridge import Splice
from relay.hybrid.frames import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, encode_frame
from relay.writes import pending_write_bytes

from .test_bridge import FakeSocket
from .test_frames import masked


class Peer(Protocol):
    data = b""  # what a leg's protocol had read but not parsed when the splice took it


class LegTransport(StringTransport):
    aborted = False

    def unregisterProducer(self) -> None:
        self.producer = None

    def abortConnection(self) -> None:
        self.aborted = True
        self.disconnecting = True


def splice_over_strings() -> tuple[Splice, LegTransport, LegTransport]:
    reactor = MemoryReactorClock()
    sender, listener = Peer(), Peer()
    sender_transport, listener_transport = LegTransport(), LegTransport()
    sender.makeConnection(sender_transport)
    listener.makeConnection(listener_transport)
    splice = Splice(sender, listener, reactor, "pair", close_timeout=5.0)
    splice.start()
    return splice, sender_transport, listener_transport


class BrokenFrameTests(SynchronousTestCase):
    """A frame that breaks the rules fails its leg; the whole frames read before it still go on."""

    def test_good_frame_then_broken_one_in_one_read(self) -> None:
        splice, _, listener = splice_over_strings()
        splice.data_received(splice.sender, masked(OP_BINARY, b"hello") + masked(OP_BINARY, b"x", rsv=0x40))
        out = listener.value()
        self.assertTrue(out.startswith(encode_frame(OP_BINARY, b"hello")), out)
        self.assertEqual(out[len(encode_frame(OP_BINARY, b"hello")) :][:1], bytes((0x88,)))  # then the close

    def test_broken_frame_after_the_rest_of_a_half_sent_one(self) -> None:
        """The rest of a frame begun in the previous read goes out before the close, never around it."""
        splice, _, listener = splice_over_strings()
        frame = masked(OP_BINARY, b"0123456789")
        splice.data_received(splice.sender, frame[:10])  # the header and 4 bytes of payload
        splice.data_received(splice.sender, frame[10:] + masked(OP_BINARY, b"x", rsv=0x40))
        whole = encode_frame(OP_BINARY, b"0123456789")
        out = listener.value()
        self.assertEqual(out[: len(whole)], whole)
        self.assertEqual(out[len(whole) : len(whole) + 1], bytes((0x88,)))


class Socket(FakeSocket):
    """What Twisted's transport does to a socket when it closes it (an abort sets SO_LINGER first)."""

    def setsockopt(self, *args: Any) -> None:
        pass

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        pass


class Stuck(Socket):
    """A peer that stopped reading: every send would block."""

    def send(self, data: Any) -> int:
        raise BlockingIOError(errno.EAGAIN, "full")


class AllButOne(Socket):
    """A peer that reads, but never all: each send leaves the last byte in the gateway's queue."""

    def send(self, data: Any) -> int:
        taken = len(data) - 1
        if taken <= 0:
            raise BlockingIOError(errno.EAGAIN, "full")
        self.received += bytes(data[:taken])
        return taken


class DrainTests(SynchronousTestCase):
    def test_closed_leg_that_never_drains_is_dropped(self) -> None:
        """Both legs closed, one socket never drains (its peer stopped reading): the close timeout drops it."""
        reactor = MemoryReactorClock()
        sender, listener = Peer(), Peer()
        sender_transport = tcp.Connection(Socket(), sender, reactor)  # type: ignore[arg-type]
        listener_transport = tcp.Connection(Stuck(), listener, reactor)  # type: ignore[arg-type]
        for transport, protocol in ((sender_transport, sender), (listener_transport, listener)):
            transport.connected = True
            protocol.makeConnection(transport)
        splice = Splice(sender, listener, reactor, "pair", close_timeout=5.0)
        splice.start()
        splice.data_received(
            splice.sender, masked(OP_BINARY, b"x" * 1000)
        )  # queued: the listener reads nothing
        splice.data_received(splice.listener, masked(OP_CLOSE, b"\x03\xe8"))
        splice.data_received(splice.sender, masked(OP_CLOSE, b"\x03\xe8"))
        self.assertTrue(splice.sender.finished and splice.listener.finished)
        reactor.advance(4)
        self.assertFalse(listener_transport._aborting)
        reactor.advance(2)
        self.assertTrue(listener_transport._aborting)


def memory_held(action: Callable[[], None]) -> int:
    """The bytes Python allocated during C{action} and still holds after it (tracemalloc)."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        action()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        if not tracing:
            tracemalloc.stop()


def splice_over(
    sender_socket: Socket, listener_socket: Socket
) -> tuple[Splice, tcp.Connection, tcp.Connection]:
    """A started splice (reads of 64 KiB) over Twisted TCP transports of the given sockets."""
    reactor = MemoryReactorClock()
    sender, listener = Peer(), Peer()
    sender_transport = tcp.Connection(sender_socket, sender, reactor)  # type: ignore[arg-type]
    listener_transport = tcp.Connection(listener_socket, listener, reactor)  # type: ignore[arg-type]
    for transport, protocol in ((sender_transport, sender), (listener_transport, listener)):
        transport.connected = True
        protocol.makeConnection(transport)
    splice = Splice(sender, listener, reactor, "pair", buffer_size=65536)
    splice.start()
    return splice, sender_transport, listener_transport


class QueuedMemoryTests(SynchronousTestCase):
    """What a leg that reads nothing makes the gateway hold: about one read, in memory and not only in bytes."""

    def test_pongs_for_a_leg_that_reads_nothing_hold_about_one_read(self) -> None:
        """
        A leg that pings without reading has pongs queued up to about one read's worth, in memory too.

        Each queued pong is an object of its own: 2 bytes on the wire, about 50 in memory. Counted by their
        bytes alone, 64 KiB of them held 1.5 MiB.
        """
        splice, sender_transport, _ = splice_over(Stuck(), Socket())
        pings = b"".join(masked(OP_PING, b"", mask=b"mask") for _ in range(65536 // 6))

        def flood() -> None:
            for _ in range(10):
                splice.data_received(splice.sender, pings)

        held = memory_held(flood)
        self.assertGreater(pending_write_bytes(sender_transport), 0)  # pongs were queued, then skipped
        self.assertLess(held, 2 * 65536)

    def test_data_split_by_pings_goes_to_the_other_leg_in_one_write(self) -> None:
        """
        The data frames of one read go to a leg that reads nothing as one queued write, pings between them.

        Each run of frames between two pings was a write of its own, queued as an object of about 50 bytes:
        a read of empty frames and pings held four times its size.
        """
        splice, _, listener_transport = splice_over(Socket(), Stuck())
        frame_and_ping = masked(OP_BINARY, b"", mask=b"mask") + masked(OP_PING, b"", mask=b"mask")
        read = frame_and_ping * (65536 // len(frame_and_ping))
        held = memory_held(lambda: splice.data_received(splice.sender, read))
        self.assertEqual(pending_write_bytes(listener_transport), 2 * (65536 // len(frame_and_ping)))
        self.assertLess(held, len(read))

    def test_a_leg_that_reads_but_never_all_gets_every_pong(self) -> None:
        """
        Pongs are skipped only while the queue holds a read's worth: a leg that reads gets them all.

        Here the leg's queue is never found empty (each send leaves a byte), yet what it held is sent
        between its pings.
        """
        sock = AllButOne()
        splice, sender_transport, _ = splice_over(sock, Socket())
        pongs = b""
        for i in range(3000):
            splice.data_received(splice.sender, masked(OP_PING, b"%d" % i))
            pongs += encode_frame(OP_PONG, b"%d" % i)
            sender_transport.doWrite()
        self.assertEqual(bytes(sock.received), pongs[:-1])
