"""How a Python splice ends: a broken frame after good ones, and legs whose peers stop reading."""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from relay.hybrid.bridge import Splice
from relay.hybrid.frames import OP_BINARY, OP_CLOSE, encode_frame

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
