"""
A read fast path for Autobahn WebSocket protocols (C{$wcf} at both ends, Hybrid Connections control channels).

Autobahn parses every frame through a frame object, a masker object, an incremental UTF-8 validator and
four callbacks before a message reaches C{onMessage}; for a 1 KB envelope or an HTTP request's control
message that is as much work as handling the message. While a connection is open and Autobahn holds
nothing (no buffered bytes, no message being assembled), L{FastMessageReader.data_received} takes the
whole, simple frames out of each read itself (L{relay.wsframes.read_frame}) and hands every other frame,
whole, to Autobahn's parser, which answers it as before: pings, pongs and closes, fragmented messages,
protocol errors (a frame with the wrong mask bit, reserved bits), invalid UTF-8 (1007) and messages over
the size limit (1009).

A protocol that pauses its own reading from C{onMessage} (a C{$wcf} sender held back by a full listener
queue) can say so with C{held}: the frames after that message, in the same read or in reads that come
anyway, are kept until L{FastMessageReader.resume}, as the socket would have kept them had it been
paused before the read. So are those after a message Autobahn assembled (fragments, a large frame), if
the protocol's C{processData} asks L{FastMessageReader.keeps_autobahn_rest} before each frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.wsframes import FIN_BINARY, HAND_OVER, INCOMPLETE, frame_size, read_frame


class FastMessageReader:
    """
    The read side of one Autobahn WebSocket protocol: simple frames here, the rest to Autobahn.

    The protocol calls L{data_received} from its C{dataReceived}; messages reach its C{onMessage}.
    """

    def __init__(
        self, protocol: Any, masked: bool, binary: bool = False, held: Callable[[], bool] | None = None
    ) -> None:
        """
        Read for C{protocol}.

        @param protocol: an open-or-opening Autobahn C{WebSocketProtocol}.
        @param masked: whether the frames this side receives are masked (a server's are).
        @param binary: whether whole binary frames are read here too (else only text frames).
        @param held: whether the protocol takes no more messages for now; C{None}: it always does.
        """
        self._protocol = protocol
        self._masked = masked
        self._binary = binary
        self._held = held
        self._kept: list[bytes] = []  # bytes read while held, from a frame boundary on, for resume()
        self._unread = b""  # the start of a frame that is not all there yet
        self._more: list[bytes] = []  # reads since, joined once the frame can be whole
        self._missing = 0  # bytes the frame still lacks (0: not known until its header is all there)

    def _autobahn_idle(self) -> bool:
        protocol = self._protocol
        return (
            protocol.state == protocol.STATE_OPEN
            and not protocol.data
            and not protocol.inside_message
            and protocol.current_frame is None
        )

    def _holding(self) -> bool:
        return self._held is not None and self._held()

    @property
    def keeping(self) -> bool:
        """Whether bytes read while the protocol was held wait for L{resume}."""
        return bool(self._kept)

    def keeps_autobahn_rest(self) -> bool:
        """
        Whether Autobahn must stop parsing its buffer: the message it just delivered held the protocol.

        The protocol calls this from Autobahn's C{processData}, before each frame Autobahn parses. Between
        messages, while held, Autobahn's buffered bytes (the frames that came after a fragmented or large
        message in the same read) are kept for L{resume} as the fast path keeps its own.
        """
        protocol = self._protocol
        if protocol.current_frame is not None or protocol.inside_message or not protocol.data:
            return False
        if not self._holding():
            return False
        self._kept.insert(0, protocol.data)  # read before anything kept since
        protocol.data = b""
        return True

    def resume(self) -> None:
        """Read what was kept while the protocol was held, unless it is held again (or closed)."""
        if not self._kept or self._holding():
            return
        data = b"".join(self._kept)
        self._kept = []
        if self._protocol.state != self._protocol.STATE_CLOSED:
            self._read(data)

    def data_received(self, data: bytes) -> None:
        """Read whole simple frames here; hand everything else to Autobahn, in order."""
        if self._kept or self._holding():
            if self._unread:  # a frame begun before the hold is kept whole, from its start
                self._kept = [self._unread, *self._more]
                self._unread, self._more, self._missing = b"", [], 0
            self._kept.append(data)
            if self._holding():
                return
            data = b"".join(self._kept)
            self._kept = []
        self._read(data)

    def _read(self, data: bytes) -> None:
        protocol = self._protocol
        if self._unread:
            if len(data) < self._missing:  # a frame trickling in is joined once, not on every read
                self._more.append(data)
                self._missing -= len(data)
                return
            data = b"".join((self._unread, *self._more, data))
            self._unread, self._more = b"", []
        elif not self._autobahn_idle():
            protocol._dataReceived(data)  # handshake, closing, or Autobahn in the middle of something
            return
        offset, size = 0, len(data)
        limit = protocol.maxMessagePayloadSize or (1 << 62)
        while offset < size:
            if not self._autobahn_idle():
                protocol._dataReceived(data[offset:])
                return
            end, payload = read_frame(data, offset, self._masked, limit, self._binary)
            if end == INCOMPLETE:
                self._unread = data[offset:]
                whole = frame_size(self._unread, 0)
                self._missing = whole - len(self._unread) if whole else 0
                return
            if end == HAND_OVER:
                protocol._dataReceived(data[offset:])
                return
            if payload is None:
                protocol._dataReceived(data[offset:end])
            else:
                if protocol.autoPingTimeoutCall is not None and protocol.autoPingRestartOnAnyTraffic:
                    protocol._cancelAutoPingTimeoutCall()  # as Autobahn does for every data frame
                protocol.onMessage(payload, data[offset] == FIN_BINARY)
            offset = end
            if offset < size and self._holding():  # the message held the protocol: the rest waits
                self._kept.append(data[offset:])
                return
