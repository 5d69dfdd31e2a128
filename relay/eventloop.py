"""
The reactor's event dispatch, without a logging context built for every event.

Twisted's epoll reactor hands each ready socket to its protocol inside C{log.callWithLogger}, which copies
the legacy logging context twice and pushes it, so that C{log.msg} calls made while the event is handled
name the connection (the C{system} of a log line, e.g. C{[RelayHTTPChannel,12,127.0.0.1]}). Measured with
C{python -m benchmarks -s cost.instructions}, dropping it altogether would save a quarter of the gateway's
instructions per relayed 64-byte round trip and a tenth per established pair.

L{lean_dispatch} keeps what the context is for at about half its cost (12 % and 6 % saved): the reactor
pushes one context per poll and sets its C{system} per event. Legacy log lines keep naming the
connection, and an exception that escapes an event is logged under it and does not stop the other events
of the same poll, as before. It relies on two internals of Twisted
that have not changed in many years (the epoll reactor's C{_poller}, C{_selectables} and
C{_doReadOrWrite}; the context tracker's per-thread C{contexts} stack) and leaves any other reactor alone.

The lean dispatch also runs what L{at_turn_end} was given during a poll's events right after the last
of them: work that should happen once per turn (writing the turn's log lines) costs a list append, not a
timer.
"""

from __future__ import annotations

import errno
import signal
from collections.abc import Callable
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.python import context, log

_NEEDED = ("_poller", "_selectables", "_doReadOrWrite", "doIteration")


def _has_context_stack() -> bool:
    tracker = getattr(context.theContextTracker, "currentContext", None)
    return tracker is not None and isinstance(getattr(tracker(), "contexts", None), list)


def lean_dispatch(reactor: Any) -> Callable[[], None] | None:
    """
    Make an epoll reactor dispatch its events with one logging context per poll.

    Only a plain L{EPollReactor} is changed (a subclass may poll its own way; other reactors keep theirs).

    @return: a function that puts the reactor's own dispatch back, or C{None} when nothing was changed.
    """
    if type(reactor) is not EPollReactor or not all(hasattr(reactor, name) for name in _NEEDED):
        return None
    if not _has_context_stack():
        return None
    if "doIteration" in vars(reactor):  # already done
        return None
    poller = reactor._poller
    selectables: dict[int, Any] = reactor._selectables
    handle = reactor._doReadOrWrite
    turns: Any = reactor  # holds the list of calls for the end of the poll being dispatched (at_turn_end)

    def dispatch(events: list[tuple[int, int]], shared: dict[str, Any]) -> None:
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                system = selectable.logPrefix()
            except KeyboardInterrupt:
                raise
            except BaseException:
                system = "(buggy logPrefix method)"
                log.err(system=system)
            shared["system"] = system
            try:
                handle(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.err(system=system)

    def poll(timeout: float | None) -> None:
        try:
            events = poller.poll(-1 if timeout is None else timeout, len(selectables))
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            raise
        if not events:
            return
        # One frame on this thread's context stack for the whole poll (what context.call would push,
        # without its layers of calls): every event's legacy log lines read their "system" from it.
        contexts = context.theContextTracker.currentContext().contexts
        top = contexts[-1]
        shared = dict(top.get(log.ILogContext) or {})
        contexts.append({**top, log.ILogContext: shared})
        after: list[Callable[[], object]] = []
        turns._relay_poll_end = after
        try:
            dispatch(events, shared)
        finally:
            turns._relay_poll_end = None
            contexts.pop()
        for call in after:
            try:
                call()
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.err(system="-")

    reactor.doIteration = poll  # type: ignore[method-assign]

    def undo() -> None:
        if vars(reactor).get("doIteration") is poll:
            del reactor.doIteration

    return undo


def at_turn_end(reactor: Any, call: Callable[[], object]) -> None:
    """
    Call C{call} once the reactor has handled the I/O it is handling now, before it waits again.

    With L{lean_dispatch}, during a poll's events that is right after the last of them, for the cost of a
    list append; otherwise (another reactor, or from a timer) it is a C{callLater(0)}, which the reactor runs
    before it waits again as well.
    """
    after = getattr(reactor, "_relay_poll_end", None)
    if after is None:
        reactor.callLater(0, call)
    else:
        after.append(call)


def on_second_signal(reactor: Any, hurry: Callable[[], object]) -> None:
    """
    From now on, have a SIGINT or SIGTERM call C{hurry} in the reactor's thread (a stop under way).

    Installed once stopping has begun: twistd's and the reactor's own handlers would call C{reactor.stop()}
    again, which only logs C{ReactorNotRunning} as a critical error with a traceback, and the stop went on.
    """

    def again(signum: int, frame: object) -> None:
        reactor.callFromThread(hurry)

    signal.signal(signal.SIGINT, again)
    signal.signal(signal.SIGTERM, again)
