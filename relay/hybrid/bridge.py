"""
The splice: relay frames between a sender's and a listener's WebSocket after both handshakes.

Autobahn handles the handshakes; afterwards each leg's transport delivers to a small L{SplicedConnection}
(the Autobahn protocol is dropped), and its raw bytes go through a L{FrameRelay} straight to the other
leg. On plain TCP legs whose transport has nothing queued, the rewritten frames go to the socket
right away (L{SpliceLeg.send}); only what the socket does not take is queued on the transport, which
saves a reactor round trip and a copy per read. Back-pressure runs both ways: each transport has the
other leg's reader registered as its streaming producer, so queued bytes (on TCP legs: any; on TLS legs:
more than C{bufferSize}) pause reading on the other side, and TCP carries the slowdown to the writer.
Plain TCP legs are read into one buffer shared by all splices and rewritten in place there
(L{SpliceLeg.read}), so per direction the gateway holds only what it queued: at most one read's worth.

Close is end to end: a close frame from one leg is forwarded to the other, and the first leg's closing
handshake completes only when the other leg answers (or a timeout passes). A leg that vanishes without a
close becomes a 1001 close on the other leg; a leg that breaks the framing rules is failed with its close
code and the other leg gets 1001. Nothing one pair does reaches any other connection. The gateway's own
frames (pongs, its closes) never go inside a frame being relayed to the same leg.

Where the extension is built, a pair's data frames go to a native thread once the pair is in its
steady state (L{relay.hybrid.native}); the thread hands the pair back here for everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from relay.connectionquota import ConnectionLease
from relay.errors import CloseCode
from relay.firstread import attach
from relay.hybrid.frames import (
    HEADROOM,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    ControlFrame,
    FrameError,
    encode_close,
    encode_frame,
    parse_close,
)
from relay.hybrid.legs import SplicedConnection, SpliceLeg, _lose, _PauseReading
from relay.hybrid.native import (
    REASON_EOF,
    REASON_ERROR,
    REASON_NOMEM,
    NativeSplices,
    SideResult,
)
from relay.hybrid.sockets import shared_read_buffer
from relay.logger import Logger
from relay.metrics import Cell
from relay.writes import QUEUED_WRITE_COST, pending_write_bytes, queued_writes, tcp_transport, write_now

HAND_OVER_AFTER_READS = 16
"""
Reads a pair is relayed in Python before it goes to the native thread.

Handing a pair over and taking it back costs about as much as a dozen reads relayed in Python (system
calls to move the sockets between the two event loops, a wake-up of each): a pair that connects, says
little and closes is cheaper here.
"""


class Splice:
    """
    A joined sender/listener pair.

    @ivar connection_id: the tracking id of the pair (the C{sb-hc-id}).
    @ivar entity: the hybrid connection's name, for metrics and the log.
    @ivar listener_id: the listener whose control channel announced the sender, for the log.
    @ivar read_buffer: the buffer plain legs read into and its view after the headroom
        (L{shared_read_buffer}).
    @ivar metered: where each read's size is added (the entity's C{relay_bytes_transferred_total}).
    @ivar native_handle: the pair's handle while the native thread relays it (L{relay.hybrid.native}).
    @ivar connection_lease: the sender's lease on its namespace's connections, released when the pair
        ends (L{relay.connectionquota}).
    """

    log = Logger()

    def __init__(
        self,
        sender: Any,
        listener: Any,
        clock: IReactorTime,
        connection_id: str,
        buffer_size: int = 262144,
        close_timeout: float = 5.0,
        entity: str = "",
        metered: Cell | None = None,
        listener_id: str = "",
        native: NativeSplices | None = None,
    ) -> None:
        self.connection_id = connection_id
        self.entity = entity
        self.listener_id = listener_id
        self.metered = metered if metered is not None else Cell()
        self._clock = clock
        self._close_timeout = close_timeout
        self._buffer_size = buffer_size
        self.read_buffer = shared_read_buffer(buffer_size)
        self.sender = SpliceLeg(self, sender, "sender")
        self.listener = SpliceLeg(self, listener, "listener")
        self.sender.other = self.listener
        self.listener.other = self.sender
        self._close_timer: IDelayedCall | None = None
        self._started = clock.seconds()
        self.bytes_relayed = {"sender": 0, "listener": 0}
        plain = self.sender.socket is not None and self.listener.socket is not None
        if not plain or (native is not None and not native.prepare()):
            native = None  # TLS legs, or a thread that could not start (logged): relayed in Python
        self._native = native
        self._may_hand_over = native is not None  # False from when the pair is ending
        self.native_handle: int | None = None
        self.connection_lease: ConnectionLease | None = None
        self._taking_back = False
        self._reads = 0  # relayed here, counted until the pair may go to the native thread
        self._guarded = False  # the legs' connectionLost takes the pair back first (_take_back_before)

    def start(self, closed: Callable[[SplicedConnection], None] = lambda connection: None) -> None:
        """
        Take over both sockets and relay whatever Autobahn had already buffered.

        Each transport gets a L{SplicedConnection} in place of its Autobahn protocol.

        @param closed: called with each leg's connection once its socket is gone.
        """
        early: list[bytes] = []
        for leg in (self.sender, self.listener):
            tcp = tcp_transport(leg.transport)
            tcp.bufferSize = self._buffer_size
            leg.transport.unregisterProducer()
            early.append(bytes(leg.protocol.data))
            leg.protocol.data = b""  # Autobahn may still be on the stack: leave it nothing to parse
            leg.connection = SplicedConnection(leg, closed)
            attach(leg.transport, leg.connection)
            leg.protocol = None
            if leg.socket is not None:
                tcp.doRead = leg.read  # the reactor looks doRead up on the transport for every read
        for leg in (self.sender, self.listener):
            leg.transport.registerProducer(_PauseReading(leg.other.transport, self), True)
        for leg, data in zip((self.sender, self.listener), early, strict=True):
            if data:
                self.data_received(leg, data)

    @property
    def ended(self) -> bool:
        """Both legs' sockets are gone."""
        return self.sender.lost and self.listener.lost

    def shutdown(self, code: int, reason: str) -> None:
        """Close both legs on the relay's initiative (server shutdown: 1001), waiting for their answers."""
        if self.native_handle is not None:
            self._take_back(resume=False)
        for leg in (self.sender, self.listener):
            if not leg.finished:
                self._send_close(leg, code, reason)
        self._arm_close_timer()

    def buffered_bytes(self) -> int:
        """Bytes the gateway holds for this pair: unsent writes on both legs plus partial frames."""
        queued = sum(pending_write_bytes(leg.transport) for leg in (self.sender, self.listener))
        if self.native_handle is not None and self._native is not None:
            return queued + self._native.buffered(self.native_handle)  # the rewriters' state is the thread's
        return queued + sum(leg.relay.buffered for leg in (self.sender, self.listener))

    def data_received(self, leg: SpliceLeg, data: bytes) -> None:
        """Rewrite and forward bytes that were not read into the shared buffer (TLS, or before the splice)."""
        buffer = bytearray(HEADROOM)
        buffer += data
        self.read_received(leg, buffer, HEADROOM, len(buffer))

    def read_received(self, leg: SpliceLeg, buffer: bytearray, start: int, end: int) -> None:
        """
        Rewrite in place and forward what one leg sent, now in C{buffer[start:end]}; answer control frames.

        C{buffer[:start]} is scratch space of at least C{HEADROOM} bytes (L{FrameRelay.feed_into}).
        """
        if leg.close_received or leg.finished:
            return
        self.metered.value += end - start  # per read, not per frame: one addition on the hot path
        other = leg.other
        if other.pong_waiting is not None:
            # The other leg pinged while a frame from this one was half sent to it: relay up to that
            # frame's end, answer the ping there, then the rest of the read.
            remaining = leg.relay.frame_remaining
            if remaining < end - start:
                middle = start + remaining
                if not self._relay(leg, buffer, start, middle):
                    return
                self._answer_waiting_ping(other)
                start = middle
        if not self._relay(leg, buffer, start, end):
            return
        if other.pong_waiting is not None and not leg.relay.frame_remaining:
            self._answer_waiting_ping(other)  # the frame ended with this read
        if self._may_hand_over:
            self._reads += 1
            if self._reads >= HAND_OVER_AFTER_READS:
                self._hand_over()

    def _relay(self, leg: SpliceLeg, buffer: bytearray, start: int, end: int) -> bool:
        """Rewrite and forward C{buffer[start:end]}, answering its control frames; C{False} once C{leg} closes."""
        violation: FrameError | None = None
        try:
            items = leg.relay.feed_into(buffer, start, end)
        except FrameError as e:  # the frames before the broken one still go on, then the leg is failed
            violation, items = e, e.items
        other = leg.other
        runs: list[memoryview] = []  # for the other leg, in one write (SpliceLeg.send_runs)
        for item in items:
            if type(item) is memoryview:
                if not other.close_sent:
                    self.bytes_relayed[leg.name] += len(item)
                    runs.append(item)
            else:
                frame: ControlFrame = item  # type: ignore[assignment]
                if runs and frame.opcode == OP_CLOSE:  # the close goes to the other leg after them
                    other.send_runs(runs)
                    runs = []
                self._control(leg, frame)
                if leg.close_received or leg.finished:
                    return False
        if runs:
            other.send_runs(runs)
        if violation is not None:
            self._fail_leg(leg, violation.code, violation.reason)
            return False
        return True

    def _hand_over(self) -> None:
        """
        Let the native thread relay the pair, if it is in its steady state.

        That is: neither leg closing or gone, nothing queued on either transport, reading not paused,
        and neither rewriter in the middle of a control frame. Otherwise the pair stays here for now;
        the next read tries again.
        """
        native = self._native
        if native is None or not self._may_hand_over or self.native_handle is not None or self._taking_back:
            return
        states = []
        for leg in (self.sender, self.listener):
            transport = leg.transport
            if (
                leg.pong_waiting is not None
                or leg.close_sent
                or leg.close_received
                or leg.finished
                or transport.disconnecting
                or transport.producerPaused
                or pending_write_bytes(transport)
            ):
                return
            state = leg.relay.saved_state()
            if state is None:
                return
            states.append(state)
        fds = (self.sender.socket.fileno(), self.listener.socket.fileno())  # type: ignore[union-attr]
        if not self._guarded:  # at the first hand-over: pairs that never go to the thread pay nothing
            self._guarded = True
            for leg in (self.sender, self.listener):
                tcp = tcp_transport(leg.transport)
                tcp.connectionLost = self._take_back_before(tcp.connectionLost)
        for leg in (self.sender, self.listener):
            leg.transport.stopReading()
        try:
            self.native_handle = native.add(self, fds, (states[0], states[1]))
        except OSError as e:  # the thread's epoll refused the sockets (out of memory or watches)
            self.log.warn("pair {pair_id}: relaying in Python ({error})", pair_id=self.connection_id, error=e)
            self._may_hand_over = False
            for leg in (self.sender, self.listener):
                leg.transport.startReading()

    def _take_back_before(self, connection_lost: Callable[[Failure], None]) -> Callable[[Failure], None]:
        """
        Wrap a leg transport's C{connectionLost}, which closes its socket, to take the pair back first.

        The native thread uses the legs' descriptors; taken back before the close, it never sees a
        descriptor closed (or its number reused by the next connection) under it.
        """

        def closing(reason: Failure) -> None:
            self._may_hand_over = False  # the pair is ending
            if self.native_handle is not None:
                self._take_back(resume=False)
            connection_lost(reason)

        return closing

    def native_ejected(self) -> None:
        """The native thread met something for Python (a control frame, end of file, an error): take over."""
        self._take_back()

    def native_counted(self, read: tuple[int, int], relayed: tuple[int, int]) -> None:
        """Add what the native thread read and relayed to the metrics and the pair's totals."""
        self.metered.value += read[0] + read[1]
        self.bytes_relayed["sender"] += relayed[0]
        self.bytes_relayed["listener"] += relayed[1]

    def _take_back(self, resume: bool = True) -> None:
        """
        Relay here again, from exactly where the thread stopped.

        The rewriters get the thread's state back; what the thread could not send goes out first (in
        order, and pausing the other leg's reading if the socket is full); then the input the thread
        left, from the first frame it does not relay, is rewritten here as if just read. With
        C{resume}, the pair goes back to the thread afterwards if it is in its steady state again.
        """
        handle = self.native_handle
        if handle is None or self._native is None:
            return
        self.native_handle = None
        reason, sender, listener = self._native.take(handle)
        self.native_counted((sender[3], listener[3]), (sender[4], listener[4]))
        if reason == REASON_NOMEM:
            self._drop_both("the native thread lost bytes of the stream for want of memory")
            return
        sides: tuple[tuple[SpliceLeg, SideResult], ...] = ((self.sender, sender), (self.listener, listener))
        leftover_bytes = sum(len(side[1]) for _, side in sides)
        self.metered.value -= leftover_bytes  # counted again when rewritten below
        if reason in (REASON_EOF, REASON_ERROR):
            self._may_hand_over = False  # the pair is ending: Python reads the end and closes
        for leg, (state, _, _, _, _) in sides:
            leg.relay.restore(state)
            transport = leg.transport
            if transport.connected and not transport.disconnecting:
                transport.startReading()
        for leg, (_, _, pending, _, _) in sides:
            if pending:
                leg.other.send(memoryview(pending))
        self._taking_back = True
        try:
            for leg, (_, leftover, _, _, _) in sides:
                if leftover:
                    self.data_received(leg, leftover)
        finally:
            self._taking_back = False
        if resume:
            self._hand_over()

    def _drop_both(self, why: str) -> None:
        """
        Drop both legs at once (they see 1006): their streams cannot be continued without corrupting them.

        Not even a close frame can be written: one may be due in the middle of a frame.
        """
        self._may_hand_over = False
        self.log.error("pair {pair_id}: both legs dropped: {why}", pair_id=self.connection_id, why=why)
        for leg in (self.sender, self.listener):
            leg.finished = True
            leg.transport.abortConnection()

    def _control(self, leg: SpliceLeg, frame: ControlFrame) -> None:
        if frame.opcode == OP_PING:
            self._answer_ping(leg, frame.payload)
        elif frame.opcode == OP_PONG:
            return
        elif frame.opcode == OP_CLOSE:
            try:
                code, reason = parse_close(frame.payload)
            except FrameError as e:
                self._fail_leg(leg, e.code, e.reason)
                return
            self._close_received(leg, CloseCode.NORMAL if code is None else code, reason)

    def _answer_ping(self, leg: SpliceLeg, payload: bytes) -> None:
        if leg.close_sent:
            return
        if leg.other.relay.frame_remaining:
            # A frame to this leg is half sent: the pong goes after it (only the latest ping's, as RFC
            # 6455 5.5.3 allows), or it would land inside the frame.
            leg.pong_waiting = payload
            return
        transport = leg.transport
        if pending_write_bytes(transport) + QUEUED_WRITE_COST * queued_writes(transport) < self._buffer_size:
            # at once, like relayed frames: queued, it would also keep the pair off the native thread
            write_now(transport, encode_frame(OP_PONG, payload), leg.socket)
        elif not leg.pongs_skipped:
            # A leg that pings without reading would have the gateway queue pongs without end. RFC 6455
            # (5.5.3) lets an endpoint leave earlier pings unanswered; past one read's worth queued
            # (each write queued counted with what it holds beyond its bytes), this one is.
            leg.pongs_skipped = True
            self.log.info(
                "pair {pair_id}: the {leg} pings without reading; pongs skipped while its queue is full",
                pair_id=self.connection_id,
                leg=leg.name,
            )

    def _answer_waiting_ping(self, leg: SpliceLeg) -> None:
        payload, leg.pong_waiting = leg.pong_waiting, None
        if payload is not None:
            self._answer_ping(leg, payload)

    def _close_received(self, leg: SpliceLeg, code: int, reason: str) -> None:
        leg.close_received = True
        leg.close_code = code
        leg.close_reason = reason
        other = leg.other
        if leg.close_sent:
            # This answers a close we forwarded from the other leg: finish this leg, answer the other.
            self._finish(leg)
            if other.close_received and not other.close_sent:
                self._send_close(other, code, reason)
                self._finish(other)
            return
        if not other.close_sent and not other.finished:
            self._send_close(other, code, reason)
            self._arm_close_timer()
        elif other.finished:
            self._send_close(leg, code, reason)
            self._finish(leg)

    def _send_close(self, leg: SpliceLeg, code: int, reason: str) -> None:
        if leg.close_sent or leg.finished:
            return
        leg.close_sent = True
        if leg.other.relay.frame_remaining:
            # The gateway's own close (stopping, the other leg gone or broken) while a frame to this leg
            # is half sent: written now it would land inside that frame, and the rest of the frame may
            # never come. End the connection without a close frame instead (the peer sees 1006).
            self.log.info(
                "pair {pair_id}: {leg} disconnected without a close frame ({code} {reason}): "
                "a frame to it was half sent",
                pair_id=self.connection_id,
                leg=leg.name,
                code=code,
                reason=reason,
            )
            leg.close_received = True
            self._finish(leg)
            return
        # at once, like relayed frames: queued, it cost a reactor turn and two epoll_ctl calls per leg
        write_now(leg.transport, encode_close(code, reason), leg.socket)

    def _finish(self, leg: SpliceLeg) -> None:
        if leg.finished:
            return
        leg.finished = True
        _lose(leg.transport)
        leg.other.transport.resumeProducing()
        if self.sender.finished and self.listener.finished:
            # Both closed: what is left is for their sockets to drain, which a peer that stopped reading
            # never lets happen. The close timer bounds that too (L{_close_timed_out} aborts them).
            self._arm_close_timer()

    def _arm_close_timer(self) -> None:
        if self._close_timer is None:
            self._close_timer = self._clock.callLater(self._close_timeout, self._close_timed_out)

    def _cancel_close_timer(self) -> None:
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None

    def _close_timed_out(self) -> None:
        self._close_timer = None
        self.log.info("closing handshake of {connection_id} timed out", connection_id=self.connection_id)
        draining = False
        for leg in (self.sender, self.listener):
            if not leg.finished:
                if leg.close_received:
                    self._send_close(leg, leg.close_code or CloseCode.NORMAL, leg.close_reason)
                leg.finished = True
                if leg.close_received:
                    _lose(leg.transport)
                    draining = True
                else:
                    leg.transport.abortConnection()
            elif not leg.lost:  # closed, but its socket never drained: its peer stopped reading
                leg.transport.abortConnection()
        if draining:  # a graceful end completes only if the peer reads: the next expiry aborts it
            self._arm_close_timer()

    def _ended(self) -> None:
        # One event per pair, when it ends (as nginx and HAProxy log a connection): logging is a large
        # share of what a short-lived pair costs the gateway. Refusals and failed rendezvous log their own.
        # The text is made here, once: twistd's formatter would run each field of a format string through
        # string.Formatter, a tenth of the gateway's CPU per pair. The fields stay for structured observers.
        entity = self.entity or "-"
        listener_id = self.listener_id or "-"
        seconds = self._clock.seconds() - self._started
        sender_code = "-" if self.sender.close_code is None else self.sender.close_code
        listener_code = "-" if self.listener.close_code is None else self.listener.close_code
        sender_bytes = self.bytes_relayed["sender"]
        listener_bytes = self.bytes_relayed["listener"]
        self.log.info(
            "{pair}",
            pair=f"pair {self.connection_id} on {entity} (listener {listener_id}) ended after "
            f"{seconds:.1f}s; close codes: sender {sender_code}, listener {listener_code} (- for none); "
            f"bytes relayed: {sender_bytes} from the sender, {listener_bytes} from the listener",
            connection_id=self.connection_id,
            entity=entity,
            listener_id=listener_id,
            seconds=seconds,
            sender_code=sender_code,
            listener_code=listener_code,
            sender_bytes=sender_bytes,
            listener_bytes=listener_bytes,
        )

    def _fail_leg(self, leg: SpliceLeg, code: int, reason: str) -> None:
        self.log.warn(
            "{side} of {connection_id} broke the WebSocket framing rules: {reason}",
            side=leg.name,
            connection_id=self.connection_id,
            code=code,
            reason=reason,
        )
        self._send_close(leg, code, reason)
        leg.close_received = True
        self._finish(leg)
        other = leg.other
        if not other.finished:
            self._send_close(other, CloseCode.GOING_AWAY, f"{leg.name} failed: {reason}")
            self._arm_close_timer()

    def connection_lost(self, leg: SpliceLeg, reason: Failure) -> None:
        """A leg's socket closed; close the other leg if it is still open."""
        leg.lost = True
        leg.finished = True
        leg.close_received = True
        other = leg.other
        other.transport.resumeProducing()
        if other.lost:
            self._ended()
            self._cancel_close_timer()
        if other.finished:
            return  # its socket still drains, under the close timer
        if other.close_received and not other.close_sent:
            # The other leg is waiting for its close to be answered: answer with its own code.
            self._send_close(other, other.close_code or CloseCode.NORMAL, other.close_reason)
            self._finish(other)
            return
        if not other.close_sent:
            code = CloseCode.GOING_AWAY if leg.close_code is None else leg.close_code
            text = f"{leg.name} went away" if leg.close_code is None else leg.close_reason
            self._send_close(other, code, text)
        self._arm_close_timer()
