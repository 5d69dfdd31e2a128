"""
The request a listener's HTTP application gets: a L{RelayedRequest} and its L{RequestBody}, read as it arrives.

Request bodies are streamed with back-pressure: the socket they come from stops being read while the
application lags behind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred, fail, succeed

from relay.client.errors import ConnectionClosedError
from relay.client.headers import Headers
from relay.client.options import MIB
from relay.hybrid.messages import RemoteEndpoint


class BodyTooLarge(ValueError):
    """A request body exceeds the limit given to L{RequestBody.read_all}."""


class RequestBody:
    """
    The body of a relayed request, read as it arrives.

    Unread pieces queue up to C{high_water} bytes; beyond that the socket they come from stops being
    read until the application has taken half of it, so a slow application slows the sender down.

    @ivar present: whether the request has a body at all.
    @ivar received: bytes received so far.
    """

    def __init__(
        self,
        *,
        present: bool = True,
        high_water: int = 1 * MIB,
        pause: Callable[[], None] | None = None,
        resume: Callable[[], None] | None = None,
    ) -> None:
        self.present = present
        self.received = 0
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._ended = not present
        self._error: Exception | None = None
        self._waiters: deque[Deferred[bytes]] = deque()
        self._high_water = high_water
        self._pause = pause
        self._resume = resume
        self._paused = False

    @classmethod
    def whole(cls, data: bytes | None) -> RequestBody:
        """A body that is already complete (C{None}: the request has none)."""
        body = cls(present=data is not None)
        if data:
            body.feed(data)
        body.end()
        return body

    @property
    def complete(self) -> bool:
        """Whether the whole body has arrived (it may not be read yet)."""
        return self._ended

    def read(self) -> Deferred[bytes]:
        """
        The next piece of the body; C{b""} at its end.

        @return: a L{Deferred} failing with L{ConnectionClosedError} when the body was cut off.
        """
        if self._chunks:
            data = self._chunks.popleft()
            self._queued -= len(data)
            if self._paused and self._queued <= self._high_water // 2:
                self._paused = False
                if self._resume is not None:
                    self._resume()
            return succeed(data)
        if self._error is not None:
            return fail(self._error)
        if self._ended:
            return succeed(b"")
        waiter: Deferred[bytes] = Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        return waiter

    async def read_all(self, limit: int | None = None) -> bytes:
        """
        The whole body.

        @param limit: the most bytes to accept.
        @raise BodyTooLarge: when the body is longer than C{limit}.
        """
        parts = []
        size = 0
        while data := await self.read():
            size += len(data)
            if limit is not None and size > limit:
                raise BodyTooLarge(f"the request body exceeds {limit} bytes")
            parts.append(data)
        return b"".join(parts)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while data := await self.read():
            yield data

    def feed(self, data: bytes) -> None:
        """A piece arrived."""
        if not data or self._ended or self._error is not None:
            return
        self.received += len(data)
        if self._waiters:
            self._waiters.popleft().callback(data)
            return
        self._chunks.append(data)
        self._queued += len(data)
        if not self._paused and self._queued >= self._high_water:
            self._paused = True
            if self._pause is not None:
                self._pause()

    def end(self) -> None:
        """The body is complete."""
        if self._ended or self._error is not None:
            return
        self._ended = True
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            waiter.callback(b"")

    def cut(self, error: Exception) -> None:
        """The body will never be complete."""
        if self._ended or self._error is not None:
            return
        self._error = error
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            waiter.errback(error)

    def discard(self) -> None:
        """
        Nobody will read the rest: the request was answered.

        What is queued is dropped, what still comes is ignored, and the source flows again so that it is
        drained or its close is seen.
        """
        dropped = bool(self._chunks)
        self._chunks.clear()
        self._queued = 0
        error = ConnectionClosedError("the request was answered before its body was read")
        self.cut(error)
        if dropped:
            self._error = error  # a complete body is not complete to whoever reads on
        if self._paused:
            self._paused = False
            if self._resume is not None:
                self._resume()


@dataclass(frozen=True, slots=True)
class RelayedRequest:
    """
    An HTTP request a sender made to the hybrid connection.

    @ivar id: the request id, also the tracking id the relay logs.
    @ivar method: C{GET}, C{POST}, ...
    @ivar target: the request target as relayed, hybrid connection name included (C{/hyco/api?x=1}).
    @ivar path: the path below the hybrid connection (C{/api}), or C{""}.
    @ivar query: the query string (C{x=1}), or C{""}.
    @ivar headers: the request headers (the relay removed its token and hop-by-hop headers and added
        C{Via}, C{X-Forwarded-For} and C{X-Forwarded-Proto}).
    @ivar remote_endpoint: the sender's address as the relay saw it.
    @ivar body: the body, streamed.
    """

    id: str
    method: str
    target: str
    path: str
    query: str
    headers: Headers
    remote_endpoint: RemoteEndpoint | None
    body: RequestBody
