"""
Log lines written once per reactor turn, not once per event.

The gateway writes an access line for every relayed request. Twisted's file observer writes and flushes
each event on its own, a C{write} system call per request: a sixth of the gateway's system calls on the
HTTP path (C{strace -c}), dear on machines where a system call is. L{TurnLines} keeps the lines a reactor
turn logs and writes them together when the turn's I/O is handled (L{relay.eventloop.at_turn_end}), before
the reactor waits again, so a turn that answered ten requests writes ten lines in one call.

Nothing waits longer than that turn, and some lines are not held at all:
    - before the reactor runs and after it stops, and from other threads, each line is written at once;
    - an error or critical event, or one carrying a failure, is written at once, with the lines before it;
    - the lines are written as soon as they hold 64 KiB;
    - the reactor's shutdown and the interpreter's exit write what is held.
"""

from __future__ import annotations

import atexit
import sys
from collections.abc import Callable
from typing import IO, Any

from twisted.logger import ILogObserver, LogEvent, LogLevel
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

from relay.eventloop import at_turn_end

_URGENT = frozenset({LogLevel.error, LogLevel.critical})
HOLD_LIMIT = 64 * 1024
"""Characters held before they are written without waiting for the turn's end."""


class TurnWriter:
    """
    Text written to C{out} at the end of the reactor turn that wrote it (see the module docstring).

    @param out: a text file (a C{LogFile}, stdout); written and flushed.
    @param reactor: the reactor whose turns batch the writes.
    """

    def __init__(self, out: IO[str], reactor: Any) -> None:
        self._out = out
        self._reactor = reactor
        self._held: list[str] = []
        self._size = 0
        self._turn_end = False  # whether the end of this turn will write the held text
        self._failed = False
        reactor.addSystemEventTrigger("after", "shutdown", self.flush)
        atexit.register(self.flush)

    def write(self, text: str, *, now: bool = False) -> None:
        """Hold C{text} until the turn ends, or write it (and what is held before it) C{now}."""
        if not isInIOThread():  # what is held is the reactor thread's alone: this is written now
            self._out.write(text)
            self._out.flush()
            return
        self._held.append(text)
        self._size += len(text)
        if now or self._size >= HOLD_LIMIT or not getattr(self._reactor, "running", False):
            self.flush()
        elif not self._turn_end:
            self._turn_end = True
            at_turn_end(self._reactor, self._end_turn)

    def _end_turn(self) -> None:
        self._turn_end = False
        try:
            self.flush()
        except Exception as e:  # a log that cannot be written must not stop the reactor
            if not self._failed:  # say it once, where an operator may see it; the log itself cannot
                self._failed = True
                sys.stderr.write(f"relay: cannot write the log: {e}\n")

    def flush(self) -> None:
        """Write and flush everything held, in order."""
        if not self._held:
            return
        held, self._held, self._size = self._held, [], 0
        text = "".join(held) if len(held) > 1 else held[0]
        self._out.write(text)
        self._out.flush()


@implementer(ILogObserver)
class TurnLines:
    """
    A log observer: each event's line, through C{format_event}, written to C{out} at the end of its turn.

    Errors, critical events and failures are written at once, with the lines before them.

    @param out: a text file (a C{LogFile}, stdout); written and flushed.
    @param format_event: an event's line, with its line end, or L{None} for none (L{relay.logtext.ClassicLines}).
    @param reactor: the reactor whose turns batch the lines.
    """

    def __init__(self, out: IO[str], format_event: Callable[[LogEvent], str | None], reactor: Any) -> None:
        self._format = format_event
        self._writer = TurnWriter(out, reactor)

    def __call__(self, event: LogEvent) -> None:
        """Hold the event's line until the turn ends, or write it now (see the module docstring)."""
        text = self._format(event)
        if text is not None:
            self._writer.write(text, now=event.get("log_level") in _URGENT or "log_failure" in event)

    def flush(self) -> None:
        """Write and flush every line held, in order."""
        self._writer.flush()
