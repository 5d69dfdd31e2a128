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

    They are kept in one buffer (Autobahn keeps a list of the frames' pieces, about 40 bytes of
    bookkeeping each: a 4 MiB request in one-byte fragments took 170 MB). The protocol supplies
    L{assembly_limit} (the name's current limit), L{message_too_large}, L{binary_message} and
    C{onMessage}.
    """

    failedByMe: bool  # noqa: N815 - Autobahn's name
    message_data: Any
    message_is_binary: bool
    _assembly_limit = 0
    _dropping = False
    _buffer = bytearray()

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
        self._buffer = bytearray()
        self._dropping = isBinary
        self._assembly_limit = 0 if isBinary else self.assembly_limit()
        if isBinary:
            self.binary_message()

    def onMessageFrameData(self, payload: bytes) -> None:  # noqa: N802 - Autobahn's name
        """Keep the message's bytes up to the limit; past it, refuse the message and keep nothing more."""
        if self._dropping or self.failedByMe:
            return
        limit = self._assembly_limit
        if len(self._buffer) + len(payload) <= limit:
            self._buffer += payload  # Autobahn's list of pieces cost ~40 bytes a piece: 1-byte fragments
            return
        head = bytes(self._buffer) + payload[: limit - len(self._buffer)]
        self._buffer = bytearray()
        self._dropping = True
        self.message_too_large(head, limit)

    def onMessageEnd(self) -> None:  # noqa: N802 - Autobahn's name
        """The message is complete: deliver it, unless it was refused on the way."""
        payload, self._buffer = bytes(self._buffer), bytearray()
        self.message_data = None
        if self._dropping:
            self._dropping = False
        elif not self.failedByMe:
            self.onMessage(payload, self.message_is_binary)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """A whole message (the protocol's own)."""
        raise NotImplementedError
