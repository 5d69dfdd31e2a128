"""
One idle timer per HTTP connection, for twisted.web's channel.

twisted.web's channel stops its idle timer while a request is handled (C{setTimeout(None)}: a cancel)
and starts a new one when the request is done (a C{callLater}): two timer-heap operations per request,
on a keep-alive connection that relays thousands of them. L{OneIdleTimer} keeps one timer for the
connection instead: a request in hand only marks it suspended, and the request's end pushes it back.
A timer that comes due while a request is in hand is dropped (the request's own deadlines apply) and
made again when the request is done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall


class OneIdleTimer:
    """
    C{setTimeout}/C{resetTimeout} for an C{HTTPChannel} subclass (listed before it), with one timer.

    The channel provides C{callLater} and C{timeoutConnection}, and its C{timeOut} is the idle period
    (C{None} while a request is in hand), as twisted's C{TimeoutMixin} expects.
    """

    timeOut: Any  # noqa: N815 - twisted's names, here and below
    callLater: Callable[..., IDelayedCall]  # noqa: N815
    timeoutConnection: Callable[[], None]  # noqa: N815 - the channel's: it closes the connection
    _idle_call: IDelayedCall | None = None
    _idle_suspended = False
    _idle_held = False

    def setTimeout(self, period: float | None) -> float | None:  # noqa: N802
        """Start, suspend (C{None}: while a request is handled) or resume the idle timeout."""
        previous: float | None = self.timeOut
        self.timeOut = period
        if period is None:
            self._idle_suspended = True
            return previous
        self._idle_suspended = False
        call = self._idle_call
        if call is not None and call.active():
            call.reset(period)
        else:
            self._idle_call = self.callLater(period, self._idle_expired)
        return previous

    def resetTimeout(self) -> None:  # noqa: N802
        """Activity on the connection: the idle time starts again, unless a request is in hand."""
        call = self._idle_call
        if call is not None and not self._idle_suspended and self.timeOut is not None and call.active():
            call.reset(self.timeOut)

    def hold_idle(self) -> None:
        """
        The relay stopped reading the sender (a body's consumer is full, or not there yet).

        The silence that follows is the relay's, not the sender's: the idle timeout does not end the
        connection until reading resumes. What holds the sender back has its own deadline.
        """
        self._idle_held = True

    def release_idle(self) -> None:
        """Reading the sender again: its idle time starts over (a timer that came due while held is made anew)."""
        self._idle_held = False
        if self._idle_suspended or self.timeOut is None:
            return
        call = self._idle_call
        if call is not None and call.active():
            call.reset(self.timeOut)
        else:
            self._idle_call = self.callLater(self.timeOut, self._idle_expired)

    def taken_over(self) -> None:
        """Another protocol has the connection now (an upgrade): the idle timer goes."""
        self.stop_idle_timer()

    def stop_idle_timer(self) -> None:
        """The connection is gone: no timer is left behind."""
        call, self._idle_call = self._idle_call, None
        if call is not None and call.active():
            call.cancel()

    def _idle_expired(self) -> None:
        self._idle_call = None
        if not self._idle_suspended and not self._idle_held:  # else deadlines of their own apply
            self.timeoutConnection()
