"""
The native splice thread (C{relay._splice.Pump}) on real socket pairs: relaying, hand-back, back-pressure.

Each test joins two socket pairs through a pump: the test holds the clients' ends, the pump the
gateway's ends, as the splice gives them.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from relay.hybrid.frames import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, FrameRelay, encode_frame
from relay.hybrid.native import NativeSplices

from .nativeneed import native_module
from .test_frames import in_pieces, masked
from .test_native_rewriter import streams

_splice = native_module()

FRESH = (0, b"", 0, False, b"")


def read_exactly(sock: socket.socket, n: int, timeout: float = 10.0) -> bytes:
    """Read C{n} bytes, or fail after C{timeout} seconds."""
    sock.settimeout(timeout)
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise AssertionError(f"end of stream with {n} bytes still expected")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class PumpTests(SynchronousTestCase):
    """A pump relaying one pair."""

    def setUp(self) -> None:
        self.pump = _splice.Pump(65536)
        self.sender, sender_gateway = socket.socketpair()
        self.listener, listener_gateway = socket.socketpair()
        for sock in (self.sender, self.listener, sender_gateway, listener_gateway):
            self.addCleanup(sock.close)
        sender_gateway.setblocking(False)
        listener_gateway.setblocking(False)
        self.gateway_ends = (sender_gateway, listener_gateway)
        self.handle = self.pump.add(sender_gateway.fileno(), listener_gateway.fileno(), FRESH, FRESH)

    def wait_ejected(self, timeout: float = 10.0) -> list[int]:
        """The handles the thread gave back, waiting for its signal."""
        readable, _, _ = select.select([self.pump.fileno()], [], [], timeout)
        self.assertTrue(readable, "the pump did not signal an ejection")
        ejected: list[int] = self.pump.ejected()
        return ejected

    def test_relays_both_ways_unmasked(self) -> None:
        """Masked frames in, the same frames unmasked out, in each direction, text and binary."""
        payloads = [b"", b"x", os.urandom(125), os.urandom(126), os.urandom(70000)]
        source = b"".join(masked(OP_BINARY if i % 2 else OP_TEXT, p) for i, p in enumerate(payloads))
        expected = b"".join(encode_frame(OP_BINARY if i % 2 else OP_TEXT, p) for i, p in enumerate(payloads))
        self.sender.sendall(source)
        self.assertEqual(read_exactly(self.listener, len(expected)), expected)
        self.listener.sendall(source)
        self.assertEqual(read_exactly(self.sender, len(expected)), expected)
        self.assertEqual(self.pump.pairs(), 1)

    def test_bytes_arriving_one_at_a_time(self) -> None:
        """A fragmented message written a byte at a time (headers split everywhere) arrives intact."""
        second = os.urandom(300)
        source = masked(OP_TEXT, b"frag-1", fin=False) + masked(0, second, fin=True)
        expected = encode_frame(OP_TEXT, b"frag-1", fin=False) + encode_frame(0, second, fin=True)
        for byte in source:
            self.sender.send(bytes((byte,)))
            time.sleep(0.0005)
        self.assertEqual(read_exactly(self.listener, len(expected)), expected)

    def test_control_frame_hands_the_pair_back_with_what_follows(self) -> None:
        """Data before a ping is relayed; the ping and the bytes after it come back to Python, unread."""
        rest = masked(OP_PING, b"are you there") + masked(OP_BINARY, b"after")
        self.sender.sendall(masked(OP_BINARY, b"before") + rest)
        self.assertEqual(read_exactly(self.listener, 8), encode_frame(OP_BINARY, b"before"))
        self.assertEqual(self.wait_ejected(), [self.handle])
        reason, sender_side, listener_side = self.pump.take(self.handle)
        self.assertEqual(reason, 1)
        state, leftover, pending, read, relayed = sender_side
        self.assertEqual((state, leftover, pending), (FRESH, rest, b""))
        self.assertEqual((read, relayed), (len(rest) + 12, 8))
        self.assertEqual(listener_side, (FRESH, b"", b"", 0, 0))
        self.assertEqual(self.pump.pairs(), 0)

    def test_close_frame_from_the_listener(self) -> None:
        """A close is Python's too, from either leg."""
        close = masked(OP_CLOSE, b"\x03\xe8bye")
        self.listener.sendall(close)
        self.assertEqual(self.wait_ejected(), [self.handle])
        reason, _, listener_side = self.pump.take(self.handle)
        self.assertEqual((reason, listener_side[1]), (1, close))

    def test_broken_frame_is_handed_back_not_judged(self) -> None:
        """An unmasked frame from a client is for Python to refuse (with its own close code and log)."""
        self.sender.sendall(encode_frame(OP_TEXT, b"unmasked"))
        self.wait_ejected()
        reason, sender_side, _ = self.pump.take(self.handle)
        self.assertEqual((reason, sender_side[1]), (1, encode_frame(OP_TEXT, b"unmasked")))

    def test_end_of_stream_hands_back_with_the_partial_header(self) -> None:
        """A leg that closes mid-header: reason 2, and the held bytes in the state for Python."""
        frame = masked(OP_BINARY, bytes(1000))
        self.sender.sendall(frame[:3])
        self.sender.shutdown(socket.SHUT_WR)
        self.wait_ejected()
        reason, sender_side, _ = self.pump.take(self.handle)
        self.assertEqual(reason, 2)
        self.assertEqual(sender_side[0][4], frame[:3])

    def test_take_while_relaying_keeps_the_frame_in_flight(self) -> None:
        """Taken back mid-frame: the remaining length, mask and offset to finish it in Python."""
        frame = masked(OP_BINARY, os.urandom(100000))
        self.sender.sendall(frame[:5000])
        read_exactly(self.listener, 5000 - 4)  # 14-byte masked header, 10-byte unmasked one
        reason, sender_side, _ = self.pump.take(self.handle)
        remaining, mask, offset, in_message, held = sender_side[0]
        self.assertEqual(
            (reason, remaining, mask, offset, in_message, held),
            (0, 100000 - 4986, frame[10:14], 4986 % 4, False, b""),
        )

    def test_take_leaves_the_descriptors_open(self) -> None:
        """The thread never closes a leg's socket: after take, Python's descriptors still work."""
        self.pump.take(self.handle)
        sender_gateway, listener_gateway = self.gateway_ends
        sender_gateway.sendall(b"from python")
        self.assertEqual(read_exactly(self.sender, 11), b"from python")
        listener_gateway.sendall(b"still open")
        self.assertEqual(read_exactly(self.listener, 10), b"still open")

    def test_counts_what_moved(self) -> None:
        """collect gives the bytes read and relayed per leg since the last collect, then zero."""
        self.sender.sendall(masked(OP_BINARY, b"12345"))
        read_exactly(self.listener, 7)
        self.assertEqual(self.pump.collect(), [(self.handle, 11, 0, 7, 0)])
        self.assertEqual(self.pump.collect(), [])

    def test_a_slow_reader_holds_at_most_one_read(self) -> None:
        """
        A listener that does not read: the thread keeps one read at most and stops reading the sender.

        Then everything arrives, in order, once the listener reads.
        """
        payload = os.urandom(4 * 1024 * 1024)
        source = masked(OP_BINARY, payload)
        self.sender.setblocking(False)
        sent = 0
        stalled_since = time.monotonic()
        while time.monotonic() - stalled_since < 0.5:
            try:
                n = self.sender.send(source[sent : sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
                continue
            sent += n
            stalled_since = time.monotonic()
        self.assertLess(sent, len(source))  # the sender was held back
        held = self.pump.buffered(self.handle)
        self.assertGreater(held, 0)
        self.assertLessEqual(held, 65536 + 14)
        self.sender.setblocking(True)
        expected = encode_frame(OP_BINARY, payload)
        received = bytearray()

        def drain() -> None:
            received.extend(read_exactly(self.listener, len(expected)))

        reader = threading.Thread(target=drain)
        reader.start()
        self.sender.sendall(source[sent:])
        reader.join(30)
        self.assertEqual(bytes(received), expected)

    def test_invalid_arguments(self) -> None:
        """Bad states and descriptors are refused with an exception, and nothing is added."""
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        self.assertRaises(ValueError, self.pump.add, a.fileno(), b.fileno(), (1, b"", 0, False, b""), FRESH)
        self.assertRaises(OSError, self.pump.add, 987654, b.fileno(), FRESH, FRESH)
        self.assertRaises(KeyError, self.pump.take, self.handle + 1)
        self.assertRaises(ValueError, _splice.Pump, 10)
        self.assertEqual(self.pump.pairs(), 1)

    def test_a_taken_handle_is_not_reused(self) -> None:
        """After take, the handle names nothing, even once its slot serves a new pair."""
        self.pump.take(self.handle)
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        second = self.pump.add(a.fileno(), b.fileno(), FRESH, FRESH)
        self.assertNotEqual(second, self.handle)
        self.assertRaises(KeyError, self.pump.take, self.handle)
        self.assertRaises(KeyError, self.pump.buffered, self.handle)
        self.pump.take(second)


class _Pair:
    """A stand-in splice for L{NativeSplices}: it takes itself back, or fails to."""

    def __init__(self, native: NativeSplices, fail: bool) -> None:
        self.native = native
        self.fail = fail
        self.handle = 0
        self.taken: list[int] = []

    def native_ejected(self) -> None:
        if self.fail:
            raise ZeroDivisionError("a bug in one pair")
        self.taken.append(self.native.take(self.handle)[0])

    def native_counted(self, read: tuple[int, int], relayed: tuple[int, int]) -> None:
        pass


class NativeSplicesTests(SynchronousTestCase):
    """The reactor's side of the pump."""

    def join(self, native: NativeSplices, pair: _Pair) -> socket.socket:
        """Give C{pair} two socket pairs through C{native}; return its sender's end."""
        sender, sender_gateway = socket.socketpair()
        listener, listener_gateway = socket.socketpair()
        for sock in (sender, sender_gateway, listener, listener_gateway):
            self.addCleanup(sock.close)
        self.gateway_ends.append(sender_gateway)
        pair.handle = native.add(pair, (sender_gateway.fileno(), listener_gateway.fileno()), (FRESH, FRESH))
        return sender

    def setUp(self) -> None:
        self.gateway_ends: list[socket.socket] = []

    def read_by_thread(self) -> None:
        """Wait until the thread has read everything sent to the gateway's ends."""
        deadline = time.monotonic() + 10
        for sock in self.gateway_ends:
            while True:
                try:
                    sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                self.assertLess(time.monotonic(), deadline, "the thread did not read")
                time.sleep(0.01)

    def test_one_failing_pair_does_not_strand_the_others(self) -> None:
        """A pair whose take-back raises is logged and taken; the others of the same signal are taken back."""
        reactor = MemoryReactorClock()
        native = NativeSplices(reactor, 65536)
        failing, healthy = _Pair(native, fail=True), _Pair(native, fail=False)
        for pair in (failing, healthy):
            self.join(native, pair).sendall(masked(OP_PING, b"x"))
        self.assertEqual(len(reactor.readers), 1)
        self.read_by_thread()
        native._ejected()
        self.assertEqual(healthy.taken, [1])
        self.assertEqual(len(native), 0)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        native.close()
        self.assertEqual(len(reactor.readers), 0)

    def test_moved_counters_forgotten_with_the_last_pair(self) -> None:
        """
        The last pair taken back empties the pump's list of moved counters.

        Counting stops with the last pair and restarts a full interval after the next add; a pair handed
        over and back faster than that every time used to leave one stale handle per cycle on the list.
        """
        reactor = MemoryReactorClock()
        native = NativeSplices(reactor, 65536)
        self.addCleanup(native.close)
        native.prepare()
        pump = native._pump
        collects = [0]

        class CountingPump:
            def collect(self) -> Any:
                collects[0] += 1
                return pump.collect()

            def __getattr__(self, name: str) -> Any:
                return getattr(pump, name)

        native._pump = CountingPump()
        for _cycle in range(3):
            pair = _Pair(native, fail=False)
            self.join(native, pair).sendall(masked(OP_BINARY, b"moved"))
            self.read_by_thread()
            native.take(pair.handle)
            reactor.advance(0.5)  # less than the counting interval: the counting call never comes due
        self.assertEqual(collects[0], 3)

    def test_close_keeps_taken_pairs_in_python(self) -> None:
        """
        Pairs taken back by L{NativeSplices.close} may not go back on the thread it is stopping.

        A taken-back splice hands itself over again when steady; it used to land on the stopping thread,
        and nothing read its sockets any more.
        """
        reactor = MemoryReactorClock()
        native = NativeSplices(reactor, 65536)
        refused: list[OSError] = []

        class Resuming(_Pair):
            def native_ejected(self) -> None:
                fds = self.fds
                self.native.take(self.handle)
                try:  # steady again: hand over, as Splice._take_back does
                    self.handle = self.native.add(self, fds, (FRESH, FRESH))
                except OSError as e:
                    refused.append(e)

        pair = Resuming(native, fail=False)
        ends = [socket.socketpair(), socket.socketpair()]
        for sock in (*ends[0], *ends[1]):
            self.addCleanup(sock.close)
        pair.fds = (ends[0][1].fileno(), ends[1][1].fileno())
        pair.handle = native.add(pair, pair.fds, (FRESH, FRESH))
        native.close()
        self.assertEqual(len(native), 0)
        self.assertEqual(len(refused), 1)


class GenerationTests(SynchronousTestCase):
    """A slot's generation stays within 31 bits: epoll's data is the handle shifted left by one."""

    def test_wraps_within_31_bits(self) -> None:
        import ctypes

        library = ctypes.CDLL(_splice.__file__)
        library.next_generation.restype = ctypes.c_uint32
        library.next_generation.argtypes = [ctypes.c_uint32]
        self.assertEqual(library.next_generation(1), 2)
        self.assertEqual(library.next_generation(0x7FFFFFFE), 0x7FFFFFFF)
        self.assertEqual(library.next_generation(0x7FFFFFFF), 1)  # past 2**31 - 1: not 0, not bit 31
        for generation in (1, 0x7FFFFFFF):
            handle = (generation << 32) | 0xFFFFFFFF
            for side in (0, 1):
                self.assertEqual((((handle << 1) | side) & (2**64 - 1)) >> 1, handle)


class PumpArbitraryInputTests(SynchronousTestCase):
    """
    Whatever a sender writes, the thread relays exactly what Python would have, and hands back the rest.

    A generated stream (valid messages, maybe one broken frame or garbage, maybe cut short) is written in
    pieces of any size, then the writer's end shuts. Wherever the thread stopped (a control frame, a broken
    one, the end), Python fed the part the thread consumed must produce the bytes the listener received
    plus those the thread could not send yet, and be left in the state the thread hands back; the rest is
    the start of a header in that state, the leftover, and what the thread never read. Run under the sanitizers too (C{scripts/test-native-sanitized}).
    """

    pump = None

    @given(
        stream=streams(), cuts=st.lists(st.integers(1, 70000), min_size=1, max_size=5), reverse=st.booleans()
    )
    @settings(max_examples=40, deadline=None)
    def test_any_stream(self, stream: bytes, cuts: list[int], reverse: bool) -> None:
        if PumpArbitraryInputTests.pump is None:  # one thread for every example
            PumpArbitraryInputTests.pump = _splice.Pump(65536)
        sockets = [*socket.socketpair(), *socket.socketpair()]
        try:
            self.relay_one(PumpArbitraryInputTests.pump, sockets, stream, cuts, reverse)
        finally:
            for sock in sockets:
                sock.close()

    def relay_one(
        self, pump: Any, sockets: list[socket.socket], stream: bytes, cuts: list[int], reverse: bool
    ) -> None:
        sender, sender_gateway, listener, listener_gateway = sockets
        for sock in (sender_gateway, listener_gateway):
            sock.setblocking(False)
        handle = pump.add(sender_gateway.fileno(), listener_gateway.fileno(), FRESH, FRESH)
        side = 0
        if reverse:  # the listener writes, the sender reads
            sender, sender_gateway, listener, listener_gateway = (
                listener,
                listener_gateway,
                sender,
                sender_gateway,
            )
            side = 1

        def write() -> None:
            try:
                for piece in in_pieces(stream, cuts):
                    sender.sendall(piece)
                sender.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the example ended early (a failure elsewhere)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            received = self.receive_until_ejected(pump, handle, listener)
            _, *sides = pump.take(handle)
            state, leftover, pending, _, _ = sides[side]
            sender_gateway.setblocking(True)
            sender_gateway.settimeout(30)
            unread = []
            while chunk := sender_gateway.recv(1 << 20):
                unread.append(chunk)
        finally:
            sender_gateway.shutdown(socket.SHUT_RDWR)  # unblocks the writer if the example failed early
            writer.join(30)
        held = state[4]  # the start of a header, which Python finishes
        rest = held + leftover + b"".join(unread)
        consumed = len(stream) - len(rest)
        self.assertEqual(rest, stream[consumed:])
        python = FrameRelay()
        relayed = b"".join(bytes(item) for item in python.feed(stream[:consumed]))  # type: ignore[arg-type]
        self.assertEqual(received + pending, relayed)
        self.assertEqual(state, (*python.saved_state()[:4], held))  # type: ignore[index]

    def receive_until_ejected(self, pump: Any, handle: int, listener: socket.socket) -> bytes:
        """What the listener's end received until the pump handed the pair back."""
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        poller.register(pump.fileno(), select.POLLIN)
        listener.setblocking(False)
        received = []
        deadline = time.monotonic() + 30
        ejected = False
        while not ejected:
            self.assertLess(time.monotonic(), deadline, "the pump neither relayed nor handed the pair back")
            ready = {fd for fd, _ in poller.poll(1000)}
            if pump.fileno() in ready:
                self.assertEqual(pump.ejected(), [handle])
                ejected = True
            if listener.fileno() in ready or ejected:
                try:
                    while chunk := listener.recv(1 << 20):
                        received.append(chunk)
                except BlockingIOError:
                    pass
        return b"".join(received)
