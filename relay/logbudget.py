"""
A budget of log lines for events a peer can cause as fast as it sends.

One log line per bad message is what an operator wants to read, until one peer sends tens of thousands a
second: then the log (and the disk under it) grows at the peer's pace. A L{LogBudget} lets a burst of lines
through, then a steady rate, and counts the lines it held back so the next line that gets through (or a
summary at the end) can say how many there were. Counters and metrics still see every event.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogLevel

from relay.logger import Logger


def unlogged_note(unlogged: int) -> str:
    """What a line that got through adds to its format when lines were held back before it (C{{unlogged}})."""
    return " ({unlogged} lines before this one were not logged)" if unlogged else ""


def emit_within(lines: LogBudget | None, log: Logger, level: LogLevel, format: str, **fields: Any) -> None:
    """L{LogBudget.emit} the line through C{lines}; without a budget, log it."""
    if lines is None:
        log.emit(level, format, unlogged=0, **fields)
    else:
        lines.emit(log, level, format, **fields)


class LogBudget:
    """
    A token bucket for log lines: C{burst} at once, then C{per_second}.

    @ivar per_second: the steady rate of lines let through.
    @ivar held: lines held back since the last one let through.
    """

    def __init__(self, clock: IReactorTime, per_second: float = 10.0, burst: int = 20) -> None:
        self._clock = clock
        self.per_second = per_second
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = clock.seconds()
        self.held = 0

    def allow(self) -> int | None:
        """
        Take one line from the budget.

        @return: C{None} when the line must be held back (it is counted); otherwise how many lines were held
            back before it (usually 0), which the caller should say in the line.
        """
        now = self._clock.seconds()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self.per_second)
        self._stamp = now
        if self._tokens < 1.0:
            self.held += 1
            return None
        self._tokens -= 1.0
        held, self.held = self.held, 0
        return held

    def emit(self, log: Logger, level: LogLevel, format: str, **fields: Any) -> None:
        """
        Log one line if the budget allows, else count it as held back.

        A line after held-back ones says how many there were (field C{unlogged}).
        """
        unlogged = self.allow()
        if unlogged is not None:
            log.emit(level, format + unlogged_note(unlogged), unlogged=unlogged, **fields)

    def report_held(self, log: Logger, about: str, **fields: Any) -> None:
        """
        Say how many lines are still held back (at the end of what they were about), if any.

        @param about: what the lines were about, a format string (C{"listener {listener_id}"}).
        """
        if self.held:
            log.info(
                "{unlogged} more lines about " + about + " were not logged (at most {per_second:g} a second)",
                unlogged=self.held,
                per_second=self.per_second,
                **fields,
            )
            self.held = 0
