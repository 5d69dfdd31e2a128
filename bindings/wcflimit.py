"""
A C{$wcf} message assembled from its WebSocket frames within its name's size limit (spec 4 and 12).

Whole frames of up to 64 KiB are read by L{relay.wsfast}; a larger frame, or a message in several
fragments, is assembled by Autobahn, which only knows the connection's C{maxMessagePayloadSize}: the
kind's hard cap (64 MiB for request/reply). L{LimitedAssembly} stops keeping a message once its bytes
pass the limit of its name (64 KiB by default for one-way names, say), hands the role the first
C{limit} bytes (where its C{MessageID} is) to refuse it with C{MessageTooLarge} right then, and reads
the rest of the message without keeping it; the socket stays open. A message past the hard cap still
closes with 1009 (Autobahn). A binary message is refused (1003) as soon as it begins, not once it is in.
"""

from __future__ import annotations

from typing import Any


class LimitedAssembly:
    """
    Mixed in before Autobahn's protocol: at most C{assembly_limit()} bytes of a message are kept.

    The protocol supplies L{assembly_limit} (the name's current limit), L{message_too_large} and
    L{binary_message}.
    """

    failedByMe: bool  # noqa: N815 - Autobahn's name
    message_data: Any
    frame_data: Any
    _assembly_limit = 0
    _assembled = 0
    _dropping = False

    def assembly_limit(self) -> int:
        """The most bytes the message that begins may have."""
        raise NotImplementedError

    def message_too_large(self, head: bytes, limit: int) -> None:
        """Refuse the message whose bytes passed C{limit}; C{head} is its first C{limit} bytes."""
        raise NotImplementedError

    def binary_message(self) -> None:
        """Refuse a binary message (it has just begun)."""
        raise NotImplementedError

    def onMessageBegin(self, isBinary: bool) -> None:  # noqa: N802 - Autobahn's names
        """A message begins: note its limit; a binary one is refused at once and dropped."""
        super().onMessageBegin(isBinary)  # type: ignore[misc]
        self._assembled = 0
        self._dropping = isBinary
        self._assembly_limit = 0 if isBinary else self.assembly_limit()
        if isBinary:
            self.binary_message()

    def onMessageFrameData(self, payload: bytes) -> None:  # noqa: N802 - Autobahn's name
        """Keep the message's bytes up to the limit; past it, refuse the message and keep nothing more."""
        if self._dropping or self.failedByMe:
            return
        self._assembled += len(payload)
        if self._assembled <= self._assembly_limit:
            super().onMessageFrameData(payload)  # type: ignore[misc]
            return
        limit = self._assembly_limit
        head = b"".join((*(self.message_data or ()), *(self.frame_data or ()), payload))[:limit]
        self.message_data, self.frame_data = [], []
        self._dropping = True
        self.message_too_large(head, limit)

    def onMessageEnd(self) -> None:  # noqa: N802 - Autobahn's name
        """The message is complete: deliver it, unless it was refused on the way."""
        if not self._dropping:
            super().onMessageEnd()  # type: ignore[misc]
            return
        self._dropping = False
        self.message_data = None
