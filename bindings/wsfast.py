"""
The read side of the C{$wcf} fast path, for both ends of the channel (gateway and client library).

Autobahn parses every frame through a frame object, a masker object, an incremental UTF-8 validator and
four callbacks before a message reaches C{onMessage}; for a 1 KB envelope that is as much work as parsing
the envelope. While a connection is open and Autobahn holds nothing (no buffered bytes, no message being
assembled), L{FastTextReader.dataReceived} takes the whole, simple text frames out of each read itself
(L{bindings.wsframes.read_frame}) and hands every other frame, whole, to Autobahn's parser, which
answers it as before: pings, pongs and closes, fragmented and binary messages, protocol errors (a frame
with the wrong mask bit, reserved bits), invalid UTF-8 (1007) and messages over the size limit (1009).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bindings.wsframes import HAND_OVER, INCOMPLETE, read_frame


class FastTextReader:
    """
    Mixed into an Autobahn WebSocket protocol (before it in the bases) to read simple text frames itself.

    @cvar masked_frames: whether the frames this side receives are masked (a server's are).
    """

    masked_frames = True
    _unread = b""

    if TYPE_CHECKING:  # provided by Autobahn's WebSocketProtocol and the protocol itself
        state: int
        STATE_OPEN: int
        data: bytes
        inside_message: bool
        current_frame: Any
        maxMessagePayloadSize: int

        def _dataReceived(self, data: bytes) -> None: ...

        def onMessage(self, payload: bytes, isBinary: bool) -> None: ...

    def _autobahn_idle(self) -> bool:
        return (
            self.state == self.STATE_OPEN
            and not self.data
            and not self.inside_message
            and self.current_frame is None
        )

    def dataReceived(self, data: bytes) -> None:
        """Read whole simple text frames here; hand everything else to Autobahn, in order."""
        if self._unread:
            data, self._unread = self._unread + data, b""
        elif not self._autobahn_idle():
            self._dataReceived(data)  # handshake, closing, or Autobahn in the middle of something
            return
        offset, size = 0, len(data)
        limit = self.maxMessagePayloadSize or (1 << 62)
        while offset < size:
            if not self._autobahn_idle():
                self._dataReceived(data[offset:])
                return
            end, text = read_frame(data, offset, self.masked_frames, limit)
            if end == INCOMPLETE:
                self._unread = data[offset:]
                return
            if end == HAND_OVER:
                self._dataReceived(data[offset:])
                return
            if text is None:
                self._dataReceived(data[offset:end])
            else:
                self.onMessage(text, False)
            offset = end
