"""
A request body read while the request is handled: what arrives goes to a consumer, with back-pressure.

The gateway's HTTP server (L{relay.web}) makes one for each request whose body it streams; the HTTP relay
attaches the body to wherever it goes (a listener's rendezvous) and registers a producer on that
transport (L{relay.hybrid.httpflow.UploadProducer}), so a slow reader pauses reading from the sender.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import Interface, implementer


@runtime_checkable
class PausableBody(Protocol):
    """The channel a streamed body is read from (L{relay.webchannel.RelayHTTPChannel}): it can stop reading it."""

    def pause_body(self) -> None:
        """Stop reading the request body from the socket."""

    def resume_body(self) -> None:
        """Read the request body from the socket again."""


class IBodyConsumer(Interface):
    """Where a streamed request body goes."""

    def body_data(data: bytes) -> None:
        """A piece of the body arrived (in order; never empty)."""

    def body_end() -> None:
        """The body is complete."""

    def body_failed(reason: Failure) -> None:
        """The sender's connection went away before the body was complete."""


@implementer(IBodyConsumer)
class DiscardBody:
    """Read a body to its end and drop it, so the connection can carry the next request."""

    def body_data(self, data: bytes) -> None:
        """Drop it."""

    def body_end(self) -> None:
        """Nothing to do."""

    def body_failed(self, reason: Failure) -> None:
        """Nothing to do."""


class RequestBody:
    """
    A request body that is read while the request is handled.

    Until a consumer is attached, reading from the sender is paused (at most one socket read is held).
    The consumer may L{pause} and L{resume} reading at any time for back-pressure.

    @ivar length: the declared C{Content-Length}, or C{None} for a chunked body.
    @ivar received: bytes received so far.
    @ivar complete: whether the whole body has arrived.
    """

    def __init__(self, request: Request, length: int | None) -> None:
        self._request = request
        self.length = length
        self.received = 0
        self.complete = False
        self._failure: Failure | None = None
        self._consumer: IBodyConsumer | None = None
        self._held: list[bytes] = []
        self._consumer_paused = False
        self._reading_paused = False
        self._discarding = False
        self._update_reading()

    @property
    def failed(self) -> bool:
        """Whether the sender went away before the body was complete."""
        return self._failure is not None

    def attach(self, consumer: IBodyConsumer) -> None:
        """Start delivering the body (what arrived already, then the rest) to C{consumer}."""
        self._consumer = consumer
        held, self._held = self._held, []
        for data in held:
            consumer.body_data(data)
        if self._failure is not None:
            consumer.body_failed(self._failure)
        elif self.complete:
            consumer.body_end()
        self._update_reading()

    def detach(self) -> None:
        """
        Take the body from its consumer before any of it was delivered, to attach it elsewhere.

        Reading from the sender pauses again until then.
        """
        self._consumer = None
        self._consumer_paused = False
        self._update_reading()

    def discard(self) -> None:
        """Drop the rest of the body (and anything held), reading it at full speed."""
        self._held = []
        self._consumer_paused = False
        self._discarding = True
        self._consumer = DiscardBody()
        self._update_reading()

    def pause(self) -> None:
        """Stop reading from the sender (the consumer cannot take more now); ignored once discarding."""
        if self._discarding:
            return
        self._consumer_paused = True
        self._update_reading()

    def resume(self) -> None:
        """Read from the sender again."""
        self._consumer_paused = False
        self._update_reading()

    def feed(self, data: bytes) -> None:
        """A chunk arrived from the channel."""
        if not data:
            return
        self.received += len(data)
        if self._consumer is None:
            self._held.append(data)
        else:
            self._consumer.body_data(data)

    def end(self) -> None:
        """The channel read the last of the body."""
        self.complete = True
        self._update_reading()
        if self._consumer is not None:
            self._consumer.body_end()

    def fail(self, reason: Failure) -> None:
        """The connection was lost before the body was complete."""
        if self.complete or self._failure is not None:
            return
        self._failure = reason
        self._held = []
        if self._consumer is not None:
            self._consumer.body_failed(reason)

    def _update_reading(self) -> None:
        paused = not self.complete and (self._consumer is None or self._consumer_paused)
        if paused == self._reading_paused:
            return
        channel = self._request.channel
        if not isinstance(channel, PausableBody):
            return
        self._reading_paused = paused
        if paused:
            channel.pause_body()
        else:
            channel.resume_body()
