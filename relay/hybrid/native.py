"""
The splice's native thread (the optional C extension C{relay._splice}) seen from the reactor.

A pair whose legs are both plain TCP, with nothing queued and no closing under way, is handed to the
thread, which relays its data frames without the interpreter (see C{relay/_splice.c} for why). The
thread gives the pair back at the first frame it does not relay (ping, pong, close, anything broken), at
end of file and at a socket error; L{NativeSplices} notices (the pump's descriptor turns readable) and the
splice takes over with every byte and the rewriter's state, as if it had read them itself. The splice
hands the pair over again once it is back in its steady state.

Where the extension did not build, or with C{native_splice = 0}, L{NativeSplices.create} gives C{None}
and every pair is relayed in Python.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer

from relay.hybrid.frames import RewriterState
from relay.logger import Logger

if TYPE_CHECKING:  # pragma: no cover
    from types import ModuleType

_splice: ModuleType | None
_missing = ""
try:
    from relay import _splice  # type: ignore[attr-defined,no-redef]
except ImportError as e:  # not built here: the gateway relays in Python
    _splice = None
    _missing = str(e)

REASON_TAKEN = 0
REASON_FRAME = 1
REASON_EOF = 2
REASON_ERROR = 3
REASON_NOMEM = 4
"""The thread could not keep bytes it had read or rewritten (out of memory): the pair cannot go on."""

COUNT_INTERVAL = 1.0
"""Seconds between copying the thread's byte counts into the metrics (and the pairs' totals)."""

THREAD_READ_BYTES = 65536
"""
The most the thread reads at once, and so holds per direction for a slow reader (Python: one read of
C{splice_buffer_bytes}). Python reads big to spread its per-read cost; the thread's per-read cost is a
few system calls, so reading more at once would only hold more memory.
"""

SideResult = tuple[RewriterState, bytes, bytes, int, int]
"""Per leg, taken back: rewriter state, input not rewritten, output not sent, bytes read, bytes relayed."""


def available() -> bool:
    """Whether the extension is built and importable here."""
    return _splice is not None


def which(enabled: bool) -> str:
    """For the start-up log: what relays WebSocket pairs here, and if not the thread, why."""
    if _splice is None:
        return f"in Python (the extension relay._splice is not built here: {_missing})"
    if not enabled:
        return "in Python (native_splice = 0)"
    return "by the native thread (relay._splice) on plain TCP legs, in Python on TLS legs"


class NativePair(Protocol):
    """What L{NativeSplices} calls on a splice it relays."""

    def native_ejected(self) -> None:
        """The thread stopped relaying the pair: take it back."""

    def native_counted(self, read: tuple[int, int], relayed: tuple[int, int]) -> None:
        """Bytes the thread read from and relayed for each leg (sender, listener) since the last count."""


@implementer(IReadDescriptor)
class _EjectedReader:
    """The reactor's view of the pump's descriptor: readable when the thread gave pairs back."""

    def __init__(self, fileno: int, ready: Callable[[], None]) -> None:
        self._fileno = fileno
        self._ready = ready

    def fileno(self) -> int:
        return self._fileno

    def doRead(self) -> None:  # noqa: N802  (Twisted's name)
        self._ready()

    def connectionLost(self, reason: Failure) -> None:
        """The pump lives as long as the process; nothing to do."""

    def logPrefix(self) -> str:  # noqa: N802  (Twisted's name)
        return "native-splice"


class NativeSplices:
    """
    The pump (one thread) and the pairs it relays, for one reactor.

    @ivar read_size: the most the thread reads at once per leg (the splice's C{buffer_size}).
    """

    log = Logger()

    @classmethod
    def create(cls, reactor: Any, read_size: int, enabled: bool = True) -> NativeSplices | None:
        """L{NativeSplices} when the extension is built and C{enabled}, else C{None}."""
        if not enabled or _splice is None or not IReactorFDSet.providedBy(reactor):
            return None
        return cls(reactor, read_size)

    def __init__(self, reactor: Any, read_size: int) -> None:
        self.read_size = read_size
        self._reactor = reactor
        self._pump: Any = None
        self._pairs: dict[int, NativePair] = {}
        self._reader: _EjectedReader | None = None
        self._counting = LoopingCall(self.count)
        self._counting.clock = reactor
        self._closed = False
        self._start_failed = False  # logged: the thread could not start, and has not started since

    def __len__(self) -> int:
        return len(self._pairs)

    def prepare(self) -> bool:
        """
        Start the thread, if it is not running yet: called for every new pair.

        Its read buffer is then part of the process's footprint from the first pair on, as the Python
        splice's shared read buffer is (L{relay.hybrid.sockets.shared_read_buffer}).

        @return: whether the thread runs. When it cannot start (the process has no descriptor or thread
            left for it, or no memory), that is logged, once until it starts, and the pair is relayed in
            Python; the next pair tries again. After L{close}, C{False}.
        """
        if self._pump is None:
            if self._closed:
                return False
            read_size = min(self.read_size, THREAD_READ_BYTES)
            try:
                self._pump = _splice.Pump(read_size)  # type: ignore[union-attr]  # create() checked
            except (OSError, MemoryError) as e:
                if not self._start_failed:
                    self._start_failed = True
                    self.log.error(
                        "the native thread could not start ({error}): pairs are relayed in Python until it can",
                        error=e,
                    )
                return False
            self._start_failed = False
            self._reader = _EjectedReader(self._pump.fileno(), self._ejected)
            self._reactor.addReader(self._reader)
        return True

    def add(self, pair: NativePair, fds: tuple[int, int], states: tuple[RewriterState, RewriterState]) -> int:
        """
        Let the thread relay between the two sockets; the handle names the pair to L{take}.

        @raise OSError: the thread refused the sockets, or it has stopped (L{close}): the pair stays in
            Python.
        """
        if self._closed:
            raise OSError(errno.ESHUTDOWN, "the native thread has stopped")
        if not self.prepare():
            raise OSError(errno.EAGAIN, "the native thread could not start")
        handle: int = self._pump.add(fds[0], fds[1], states[0], states[1])
        self._pairs[handle] = pair
        if not self._counting.running:
            self._counting.start(COUNT_INTERVAL, now=False)
        return handle

    def take(self, handle: int) -> tuple[int, SideResult, SideResult]:
        """Stop relaying the pair; everything the thread held for it, with its last byte counts."""
        del self._pairs[handle]
        result: tuple[int, SideResult, SideResult] = self._pump.take(handle)
        if not self._pairs and self._counting.running:
            self._counting.stop()
            # Counting restarts a full interval after the next add: a pair handed back sooner each time
            # would keep the pump's list of moved counters (every taken pair's stale handle) from ever
            # being emptied. With no pair left there is nothing on it to count.
            self._pump.collect()
        return result

    def buffered(self, handle: int) -> int:
        """Bytes the thread holds for the pair (unsent, not yet rewritten, partial headers)."""
        held: int = self._pump.buffered(handle)
        return held

    def count(self) -> None:
        """Give each relaying pair the bytes the thread moved since the last count."""
        if self._pump is None:
            return
        for handle, read_sender, read_listener, relayed_sender, relayed_listener in self._pump.collect():
            pair = self._pairs.get(handle)
            if pair is not None:
                pair.native_counted((read_sender, read_listener), (relayed_sender, relayed_listener))

    def close(self) -> None:
        """
        Stop the thread (the gateway stopped): pairs it still relays are taken back first.

        After a stop every pair has been shut down, which takes it back, so normally there are none. A pair
        taken back here stays in Python: L{add} refuses it from now on.
        """
        self._closed = True
        for pair in list(self._pairs.values()):
            pair.native_ejected()
        if self._counting.running:
            self._counting.stop()
        if self._reader is not None:
            self._reactor.removeReader(self._reader)
            self._reader = None
        self._pump = None  # its thread is joined when the last reference goes

    def _ejected(self) -> None:
        for handle in self._pump.ejected():
            pair = self._pairs.get(handle)
            if pair is None:  # already taken back (a stop, a lost connection)
                continue
            try:
                pair.native_ejected()
            except Exception:
                # one pair's failure must not leave the others of this signal with the thread
                self.log.failure("taking back pair {handle} from the native thread", handle=handle)
                if handle in self._pairs:
                    self.take(handle)
