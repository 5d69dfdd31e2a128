"""
An HTTP exchange's timers and back-pressure: how long each side may keep the other waiting.

The response is due one C{request_timeout} after the request reached the listener (one timer for all
exchanges with that timeout, L{relay.deadlines.Deadlines}); a streamed body may pause for as long; a
listener that takes none of a request body, or a sender that reads none of its answer, is cut off after
its own timeout. Part of L{relay.hybrid.httpexchange.Exchange} (see L{relay.hybrid.exchangefields}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.errors import ErrorKind, RelayError
from relay.hybrid.exchangefields import ExchangeFields, State

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall


def _cancel(call: IDelayedCall | None) -> None:
    """Cancel C{call} if it is still pending (the caller forgets it)."""
    if call is not None and call.active():
        call.cancel()


class ExchangeFlow(ExchangeFields):
    """The timers and back-pressure of an exchange."""

    __slots__ = ()

    def _stop_upload(self) -> None:
        self.upload_resumed()
        if self._uploading:
            self._uploading = False
            role = self.rendezvous
            if role is not None and role.transport is not None:
                role.transport.unregisterProducer()

    def response_overdue(self, timeout: float) -> None:
        """The response did not come within C{timeout} (its deadline in L{HybridHttpRelay.response_deadlines})."""
        self._response_deadline = None
        self.fail(RelayError(ErrorKind.LISTENER_TIMEOUT, f"The listener did not respond within {timeout:g}s"))

    def _cancel_response_timer(self) -> None:
        deadlines = self._response_deadline
        if deadlines is not None:
            self._response_deadline = None
            deadlines.clear(self)

    def _arm_idle(self) -> None:
        if self._download_paused:
            return
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.reset(self._settings.request_timeout)
        elif self.state is State.RESPONDING:
            self._idle_timer = self.clock.callLater(self._settings.request_timeout, self._idle_expired)

    def _disarm_idle(self) -> None:
        _cancel(self._idle_timer)
        self._idle_timer = None

    def _idle_expired(self) -> None:
        self._idle_timer = None
        self._abort(
            f"The listener sent nothing for {self._settings.request_timeout:g}s in the middle of the body"
        )

    def _stop_timers(self) -> None:
        self._cancel_response_timer()
        self._disarm_idle()
        self.upload_resumed()
        _cancel(self._download_stall)
        self._download_stall = None

    def upload_paused(self) -> None:
        """
        The listener's rendezvous takes no more of the request body: the sender is held back.

        The sender's idle timeout stops counting (L{relay.idletimer.OneIdleTimer.hold_idle}); the
        listener gets the hybrid connection's C{request_timeout} to take more, as for a silence in its
        answer, and the sender a 504 after that. Once the listener answers, the held upload ends with
        the answer (a download that keeps moving is never cut), so the stall is timed only before it.
        """
        if self._upload_stall is None and self.state is State.WAITING:
            timeout = self._settings.request_timeout
            self._upload_stall = self.clock.callLater(timeout, self._upload_stalled, timeout)

    def upload_resumed(self) -> None:
        """The listener took more of the body (or the upload ended, or the answer began)."""
        _cancel(self._upload_stall)
        self._upload_stall = None

    def _upload_stalled(self, timeout: float) -> None:
        self._upload_stall = None
        self.fail(
            RelayError(
                ErrorKind.LISTENER_TIMEOUT,
                f"The listener took none of the request body for {timeout:g}s",
            )
        )

    def download_paused(self) -> None:
        """
        The sender's buffer is full: waiting on it is no stall of the listener.

        A sender that takes none of its answer for the gateway's C{http_idle_timeout} is idle, though:
        it is cut off, and the listener's rendezvous let go, rather than held for ever.
        """
        self._download_paused = True
        self._disarm_idle()
        if self._download_stall is None and self.state is not State.DONE:
            timeout = self.relay.sender_stall_timeout
            self._download_stall = self.clock.callLater(timeout, self._download_stalled, timeout)

    def download_resumed(self) -> None:
        """The sender drained its buffer."""
        self._download_paused = False
        _cancel(self._download_stall)
        self._download_stall = None
        self._arm_idle()

    def _download_stalled(self, timeout: float) -> None:
        self._download_stall = None
        self.fail(
            RelayError(ErrorKind.LISTENER_TIMEOUT, f"The sender read none of the answer for {timeout:g}s")
        )

    def _unregister_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.release()
            if not self.request._disconnected:
                self.request.unregisterProducer()
