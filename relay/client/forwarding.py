"""
One relayed WebSocket's messages written to another as their frames arrive (L{HybridWebSocket.relay_to}).

Nothing is assembled: a small message read whole goes out whole, and any other goes out piece by piece,
each piece of a read as one frame of its own (between frames, the sink's pings, pongs and close frame
can always be written), then an empty final frame. Text stays text (validated as it comes, so an
invalid piece is never written), binary stays binary.

Back-pressure: while the sink's write buffer is above its high-water mark (its transport paused the
sink's L{WriteGate}), the source stops reading from the network, and reads again once the buffer has
drained. So what a message costs here is bounded by a read and a write buffer, whatever its size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.writes import WriteGate


class FrameForwarder:
    """
    Writes one source's messages to a sink protocol, holding the source's reading while the sink is full.

    @param sink: the sink's L{RelayClientProtocol}.
    @param gate: the push producer registered with the sink's transport.
    @param hold: called with C{True} to stop reading the source, with C{False} to read it again.
    """

    def __init__(self, sink: Any, gate: WriteGate, hold: Callable[[bool], None]) -> None:
        self._sink = sink
        self._gate = gate
        self._hold = hold
        self._holding = False
        self._binary = False
        self._started = False  # a frame of the current message went out

    @property
    def holding(self) -> bool:
        """Whether the source is held until the sink drains."""
        return self._holding

    def whole(self, payload: bytes, is_binary: bool) -> None:
        """A message that arrived whole."""
        if self._sink.can_send():
            self._sink.send_whole(payload, is_binary)
            self._written()

    def begin(self, is_binary: bool) -> None:
        """A message starts: nothing is written until its first piece (or its end) comes."""
        self._binary = is_binary
        self._started = False

    def data(self, payload: bytes) -> None:
        """A piece of the current message: written as a frame of its own."""
        if not payload or not self._sink.can_send():
            return
        if not self._started:
            self._started = True
            self._sink.beginMessage(isBinary=self._binary)
        self._sink.sendMessageFrame(payload)
        self._written()

    def end(self) -> None:
        """The current message is complete: its final frame (a message with no data goes out whole)."""
        started, self._started = self._started, False
        if not self._sink.can_send():
            return
        if started:
            self._sink.endMessage()
        else:  # Autobahn's endMessage alone would write a continuation frame that continues nothing
            self._sink.send_whole(b"", self._binary)
        self._written()

    def _written(self) -> None:
        if self._gate.paused and not self._holding:
            self._holding = True
            self._hold(True)
            self._gate.when_writable().addBoth(self._writable)

    def _writable(self, result: object) -> None:
        """The sink drained (or is gone: the source then reads on, and its messages go nowhere)."""
        self._holding = False
        self._hold(False)
