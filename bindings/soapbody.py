"""
The body of an HTTP SOAP message, taken up to its name's size limit as it arrives.

The binding names' bodies are streamed (L{relay.web}: a chunked body, or one larger than a control
message, reaches the resource as a L{relay.httpbody.RequestBody} while it is read): buffered whole first,
as twisted.web does, a body was held up to the site's limit for any resource (64 MiB, the largest a
request/reply name may allow) before the name's own limit (64 KiB by default on a one-way name) was
looked at. L{LimitedBody} keeps at most the limit and says so as soon as the body passes it.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.python.failure import Failure
from zope.interface import implementer

from relay.httpbody import IBodyConsumer


@implementer(IBodyConsumer)
class LimitedBody:
    """
    Collects a streamed body of at most C{limit} bytes.

    Exactly one of the callbacks is called, once: C{complete} with the body, C{too_large} as soon as more
    than C{limit} bytes came (what came is dropped, and nothing more is kept), or C{failed} when the
    sender went away first.
    """

    def __init__(
        self,
        limit: int,
        complete: Callable[[bytes], object],
        too_large: Callable[[], object],
        failed: Callable[[Failure], object],
    ) -> None:
        self._limit = limit
        self._complete = complete
        self._too_large = too_large
        self._failed = failed
        self._parts: list[bytes] = []
        self._size = 0
        self._done = False

    def body_data(self, data: bytes) -> None:
        """Keep it, or refuse the body once it is over the limit."""
        if self._done:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._done = True
            self._parts = []
            self._too_large()
            return
        self._parts.append(data)

    def body_end(self) -> None:
        """The whole body is in."""
        if not self._done:
            self._done = True
            data, self._parts = b"".join(self._parts), []
            self._complete(data)

    def body_failed(self, reason: Failure) -> None:
        """The sender went away before the end."""
        if not self._done:
            self._done = True
            self._parts = []
            self._failed(reason)
