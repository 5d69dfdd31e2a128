"""
Deadlines of one length on one timer, for per-request timeouts.

Every relayed HTTP request had its own response timer: a C{callLater} when the request reached the
listener and a C{cancel} when the answer came, two operations on the reactor's timer heap and a
C{DelayedCall} per request, about 2 % of the gateway's instructions per request. Requests on the same
hybrid connection share one timeout, so their deadlines come due in the order they were set:
L{Deadlines} keeps them in an insertion-ordered dict (setting and clearing one is a dict operation) and
runs a single reactor timer for the earliest. The timer is cancelled when the last deadline is cleared,
so an idle gateway holds none.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Deadlines:
    """
    Keys that come due C{period} seconds after they were set, unless cleared first.

    @ivar period: the length of every deadline, in seconds.
    """

    def __init__(self, clock: IReactorTime, period: float, expire: Callable[[Any], object]) -> None:
        """
        Deadlines of C{period} seconds, expiring through C{expire}.

        @param clock: the reactor (or a test's clock).
        @param period: seconds from L{set} to C{expire}.
        @param expire: called with each key that comes due; it is cleared first.
        """
        self._clock = clock
        self.period = period
        self._expire = expire
        self._due: dict[Hashable, float] = {}  # insertion order is deadline order: one period for all
        self._call: IDelayedCall | None = None
        self._firing = False

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._due

    def set(self, key: Hashable) -> None:
        """C{key} comes due one period from now (a key already set starts again)."""
        due = self._due
        due.pop(key, None)  # re-set: it moves to the end, where its new deadline belongs
        due[key] = self._clock.seconds() + self.period
        if self._call is None and not self._firing:  # while firing, the timer is set for the first when done
            self._call = self._clock.callLater(self.period, self._fire)

    def clear(self, key: Hashable) -> None:
        """C{key} will not come due (nothing happens if it is not set); with none left, the timer stops."""
        due = self._due
        if due.pop(key, None) is not None and not due:
            call, self._call = self._call, None
            if call is not None and call.active():
                call.cancel()

    def _fire(self) -> None:
        due = self._due
        now = self._clock.seconds()
        self._firing = True
        try:
            while due:
                key = next(iter(due))
                if due[key] > now:
                    break
                del due[key]
                self._expire(key)
        finally:  # even if an expiry raised: the rest still come due
            self._firing = False
            self._call = None
            if due:
                wait = max(0.0, due[next(iter(due))] - now)
                self._call = self._clock.callLater(wait, self._fire)
