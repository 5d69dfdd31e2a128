"""
The read side of the C{$wcf} fast path, for both ends of the channel (gateway and client library).

Autobahn parses every frame through a frame object, a masker object, an incremental UTF-8 validator and
four callbacks before a message reaches C{onMessage}; for a 1 KB envelope that is as much work as parsing
the envelope. While a connection is open and Autobahn holds nothing (no buffered bytes, no message being
assembled), L{FastTextReader.data_received} takes the whole, simple text frames out of each read itself
(L{bindings.wsframes.read_frame}) and hands every other frame, whole, to Autobahn's parser, which
answers it as before: pings, pongs and closes, fragmented and binary messages, protocol errors (a frame
with the wrong mask bit, reserved bits), invalid UTF-8 (1007) and messages over the size limit (1009).
"""

from __future__ import annotations

from typing import Any

from bindings.wsframes import HAND_OVER, INCOMPLETE, read_frame


class FastTextReader:
    """
    The read side of one Autobahn WebSocket protocol: simple text frames here, the rest to Autobahn.

    The protocol calls L{data_received} from its C{dataReceived}; messages reach its C{onMessage}.
    """

    def __init__(self, protocol: Any, masked: bool) -> None:
        """
        Read for C{protocol}.

        @param protocol: an open-or-opening Autobahn C{WebSocketProtocol}.
        @param masked: whether the frames this side receives are masked (a server's are).
        """
        self._protocol = protocol
        self._masked = masked
        self._unread = b""

    def _autobahn_idle(self) -> bool:
        protocol = self._protocol
        return (
            protocol.state == protocol.STATE_OPEN
            and not protocol.data
            and not protocol.inside_message
            and protocol.current_frame is None
        )

    def data_received(self, data: bytes) -> None:
        """Read whole simple text frames here; hand everything else to Autobahn, in order."""
        protocol = self._protocol
        if self._unread:
            data, self._unread = self._unread + data, b""
        elif not self._autobahn_idle():
            protocol._dataReceived(data)  # handshake, closing, or Autobahn in the middle of something
            return
        offset, size = 0, len(data)
        limit = protocol.maxMessagePayloadSize or (1 << 62)
        while offset < size:
            if not self._autobahn_idle():
                protocol._dataReceived(data[offset:])
                return
            end, text = read_frame(data, offset, self._masked, limit)
            if end == INCOMPLETE:
                self._unread = data[offset:]
                return
            if end == HAND_OVER:
                protocol._dataReceived(data[offset:])
                return
            if text is None:
                protocol._dataReceived(data[offset:end])
            else:
                if protocol.autoPingTimeoutCall is not None and protocol.autoPingRestartOnAnyTraffic:
                    protocol._cancelAutoPingTimeoutCall()  # as Autobahn does for every data frame
                protocol.onMessage(text, False)
            offset = end
