"""
Slow down clients that keep failing, per source address.

The npm C{hyco-ws} listener reconnects immediately and forever when refused, so one misconfigured listener
produces hundreds of upgrades per second. Answering each refusal after a delay that grows with the
source's recent failures turns that loop into a trickle without affecting well-behaved clients.
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime


class FailureThrottle:
    """
    Per-source failure counters that decay, turned into a response delay.

    A source's first failure is answered after C{base} seconds, and each further failure within
    C{window} seconds doubles the delay up to C{maximum}. The table is bounded (least recently failing
    sources are forgotten first) so a flood of distinct addresses cannot grow memory.
    """

    def __init__(
        self,
        clock: IReactorTime,
        base: float = 1.0,
        maximum: float = 8.0,
        window: float = 60.0,
        max_sources: int = 10000,
        max_pending_per_source: int = 64,
    ) -> None:
        self._clock = clock
        self.base = base
        self.maximum = maximum
        self.window = window
        self.max_sources = max_sources
        self.max_pending_per_source = max_pending_per_source
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._pending: dict[str, int] = {}

    def failure_delay(self, source: str) -> float:
        """Record a failure from C{source} and return how long to wait before answering it."""
        now = self._clock.seconds()
        count, last = self._failures.pop(source, (0, now))
        if now - last > self.window:
            count = 0
        count += 1
        self._failures[source] = (count, now)
        while len(self._failures) > self.max_sources:
            self._failures.popitem(last=False)
        if self.base <= 0:
            return 0.0
        return float(min(self.maximum, self.base * 2 ** min(count - 1, 30)))

    def begin_wait(self, source: str) -> bool:
        """
        Count a delayed answer in progress; C{False} means the source already has too many waiting.

        Callers drop such connections without an answer, so that held-open sockets stay bounded too.
        """
        pending = self._pending.get(source, 0)
        if pending >= self.max_pending_per_source:
            return False
        self._pending[source] = pending + 1
        return True

    def end_wait(self, source: str) -> None:
        """A delayed answer was sent (or its connection went away)."""
        pending = self._pending.get(source, 0) - 1
        if pending > 0:
            self._pending[source] = pending
        else:
            self._pending.pop(source, None)

    def forget(self, source: str) -> None:
        """A source succeeded; stop penalising it."""
        self._failures.pop(source, None)
