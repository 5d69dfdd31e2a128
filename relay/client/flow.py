"""
Back-pressure on a listener's control channel: the listener stops reading it while it cannot keep up.

A relay can send C{request} and C{accept} commands faster than the listener's answers to them leave, and
the answers used to pile up without limit against a relay that misbehaves:

 - HTTP responses written on the control channel (up to 64 kB each) that the relay does not read: they
   waited in the transport's write buffer;
 - rejections: the protocol turns a sender away by connecting to its rendezvous address with a status,
   so every C{accept} the application declined was one more dial in progress;
 - accepts: with C{on_connection} set (no accept queue to fill up), every C{accept} command ran the
   accept handler and dialled the sender's rendezvous at once;
 - fetches: every C{request} command that only announces an address (a request too large for the control
   channel) had the HTTP listener dial that address at once to fetch the request.

Instead, and without dropping anything, the listener stops reading its control channel (the transport's
C{pauseProducing}) while its unsent answers are above the transport's high-water mark (Twisted's
C{bufferSize}, 64 KiB: the transport pauses the channel's L{ControlGate} and resumes it once everything
has been sent), or while L{MAX_REJECTION_DIALS} rejections, L{MAX_ACCEPT_DIALS} accepts or
L{MAX_FETCH_DIALS} fetches are in progress (each limit apart, each a keyword of the listener that dials),
and reads again once none holds (L{ControlReading}). The relay's further commands then wait in TCP
buffers, the relay's own included: the relay holds the backlog, not the listener.

What may still arrive is bounded: the commands of the read in progress (a read is at most 64 KiB), and
the answers of HTTP requests already being handled (at most C{HttpListener.max_concurrent} of them; the
rest were answered 503 at once). Dials beyond a limit that come in the same read wait for a slot
(L{DialSlots}) rather than being dialled.

While the channel is not read, the relay's pings are not answered, nor are the pongs to the listener's
own pings read: a long pause ends in a reconnect once one of its pings has waited C{ping_timeout}. A
relay that neither reads answers nor lets rejections complete for that long has stopped serving the
listener.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import DeferredSemaphore
from twisted.internet.interfaces import IReactorTime
from typing_extensions import override

from relay.client.errors import ConnectionClosedError
from relay.logbudget import LogBudget
from relay.logger import Logger
from relay.writes import WriteGate

MAX_REJECTION_DIALS = 64
"""
Rejections one listener dials at once; more wait, and the control channel is not read meanwhile.

A rejection costs a socket and an opening handshake, which the relay answers at once with 410: a few round
trips. With 64 at once a listener still rejects well over a hundred senders a second across an ocean (a
few hundred milliseconds each), and 64 is the default C{max_pending_connections}, so a listener whose
accept queue is full turns away a burst of that size at once. A flood costs at most 64 sockets and their
handshakes (well under a megabyte, and far from a process's descriptor limit).
"""

MAX_ACCEPT_DIALS = 64
"""
Senders one listener decides about and dials at once; more wait, and the control channel is not read.

A slot is held from the accept handler's call until the rendezvous is open (or failed): that is what a
flood of C{accept} commands costs the listener, in handler calls and in sockets. Once the connection is
handed over it no longer counts (connections are the application's). 64 is the default
C{max_pending_connections}, which bounds the same work for a listener that queues its connections, so
the two ways of accepting take the same burst at once; an upgrade takes a few round trips (a few hundred
milliseconds across an ocean), so 64 at once still accepts well over a hundred senders a second, and the
relay holds each waiting sender for 30 s. A sender waiting for a slot does not cost a socket.
"""

MAX_FETCH_DIALS = 64
"""
Requests one HTTP listener opens a rendezvous for at once to fetch them; more wait, unread.

A large request (its body over 64 kB or of unknown length) is only announced on the control channel; the
listener fetches it over a WebSocket to the announced address, which may then carry later requests of the
same sender connection. A slot is held while that socket is being opened. 64 at once fetch well over a
hundred large requests a second across an ocean (an upgrade is a few round trips), with each flood costing
at most 64 sockets in their handshake; the relay gives the listener 30 s to come for a request, plenty for
one waiting its turn.
"""

WRITE_BACKLOG = "its answers wait to be sent (the relay does not read them fast enough)"
"""Why reading stops while the control channel's write buffer is above its high-water mark."""

REJECTION_DIALS = "the rejections in progress are at the limit"
"""Why reading stops while L{MAX_REJECTION_DIALS} (or the listener's limit) rejections are dialled."""

ACCEPT_DIALS = "the accepts in progress are at the limit"
"""Why reading stops while L{MAX_ACCEPT_DIALS} (or the listener's limit) senders are being accepted."""

FETCH_DIALS = "the request fetches in progress are at the limit"
"""Why reading stops while L{MAX_FETCH_DIALS} (or the HTTP listener's limit) requests are being fetched."""

_T = TypeVar("_T")


class ControlReading:
    """
    Whether a control channel is read: paused while at least one reason holds, read again when none does.

    Reasons are kept apart, so the end of one never resumes reading that another still holds. A pause and
    the resume that ends it are logged (one line each; under a budget, since a channel under heavy but
    healthy load may pause often), never a line per command.
    """

    log = Logger()

    def __init__(self, transport: Any, *, listener_id: str, clock: IReactorTime | None = None) -> None:
        self._transport = transport
        self._listener_id = listener_id
        self._clock = clock
        self._budget = LogBudget(clock, per_second=1 / 60, burst=5) if clock is not None else None
        self._reasons: set[str] = set()
        self._since = 0.0
        self._logged = False
        self._ended = False

    @property
    def paused(self) -> bool:
        """Whether the channel is not being read."""
        return bool(self._reasons)

    @property
    def reasons(self) -> frozenset[str]:
        """The reasons holding reading now."""
        return frozenset(self._reasons)

    def hold(self, reason: str) -> None:
        """Stop reading for C{reason} (nothing changes if it already holds, or another does)."""
        if self._ended or reason in self._reasons:
            return
        self._reasons.add(reason)
        if len(self._reasons) > 1:
            return
        self._transport.pauseProducing()
        self._since = self._clock.seconds() if self._clock is not None else 0.0
        held = self._budget.allow() if self._budget is not None else 0
        self._logged = held is not None
        if held is not None:
            self.log.info(
                "listener {listener_id} stops reading its control channel: {reason}{unlogged}",
                listener_id=self._listener_id,
                reason=reason,
                unlogged=f" ({held} earlier pauses not logged)" if held else "",
            )

    def release(self, reason: str) -> None:
        """C{reason} no longer holds: read again unless another reason still does."""
        if reason not in self._reasons:
            return
        self._reasons.discard(reason)
        if self._reasons:
            return
        if self._logged:
            paused_for = self._clock.seconds() - self._since if self._clock is not None else 0.0
            self.log.info(
                "listener {listener_id} reads its control channel again after {seconds:.1f} s",
                listener_id=self._listener_id,
                seconds=paused_for,
            )
        # Last: a transport may deliver what it held at once, and that may stop reading again.
        self._transport.resumeProducing()

    def end(self, *, resume: bool) -> None:
        """
        The channel is closing or gone: hold it no more.

        @param resume: read again if paused (closing: the relay's close frame is behind what was not read).
        """
        if not self._ended:
            self._say_unlogged()
        self._ended = True
        if self._reasons:
            self._reasons.clear()
            if resume:
                self._transport.resumeProducing()

    def _say_unlogged(self) -> None:
        """
        Count the pauses the budget held back since its last line: only the next pause line said them.

        A channel that ends first (a reconnect makes a new one, with a new budget) would lose the count.
        """
        budget = self._budget
        if budget is None or not budget.held:
            return
        self.log.info(
            "listener {listener_id}: {unlogged} more pauses of its control channel were not logged "
            "(at most one every {interval:g} s)",
            listener_id=self._listener_id,
            unlogged=budget.held,
            interval=1 / budget.per_second,
        )
        budget.held = 0


class _Channel(Protocol):
    """What L{ReadingHolds} uses of a control channel."""

    def hold_reading(self, reason: str) -> None: ...

    def release_reading(self, reason: str) -> None: ...


class ReadingHolds:
    """
    The reasons a listener does not read its control channel, held on every channel it has and will have.

    A limit outlives the channel it was reached on: after a reconnect, the new channel is not read either
    until the dials of the old one have made room.
    """

    def __init__(self) -> None:
        self._reasons: set[str] = set()
        self._channels: set[_Channel] = set()

    @property
    def reasons(self) -> frozenset[str]:
        """The reasons holding reading now."""
        return frozenset(self._reasons)

    def attach(self, channel: _Channel) -> None:
        """A channel is connected: hold it for every reason that holds now."""
        self._channels.add(channel)
        for reason in sorted(self._reasons):
            channel.hold_reading(reason)

    def detach(self, channel: _Channel) -> None:
        """A channel is gone."""
        self._channels.discard(channel)

    def hold(self, reason: str) -> None:
        """Stop reading every channel for C{reason}."""
        self._reasons.add(reason)
        for channel in list(self._channels):
            channel.hold_reading(reason)

    def release(self, reason: str) -> None:
        """C{reason} no longer holds; each channel reads again once no other reason holds it."""
        self._reasons.discard(reason)
        for channel in list(self._channels):
            channel.release_reading(reason)

    def while_full(self, reason: str) -> Callable[[bool], None]:
        """The C{on_full} of a L{DialSlots}: hold reading for C{reason} while its slots are all taken."""

        def on_full(full: bool) -> None:
            if full:
                self.hold(reason)
            else:
                self.release(reason)

        return on_full


class ControlGate(WriteGate):
    """The control channel's push producer: a write buffer past its high-water mark holds reading."""

    def __init__(self, reading: ControlReading) -> None:
        super().__init__(ConnectionClosedError)
        self._reading = reading

    @override
    def pauseProducing(self) -> None:
        """The transport's buffer is above its high-water mark: stop reading the relay's commands."""
        super().pauseProducing()
        self._reading.hold(WRITE_BACKLOG)

    @override
    def resumeProducing(self) -> None:
        """Everything written has been sent: read again, unless a dial limit holds reading."""
        super().resumeProducing()
        self._reading.release(WRITE_BACKLOG)


def register_gate(protocol: Any, reading: ControlReading) -> ControlGate:
    """Register a L{ControlGate} with C{protocol}'s transport (nothing else produces for a control channel)."""
    gate = ControlGate(reading)
    protocol.registerProducer(gate, True)
    return gate


class DialSlots:
    """
    At most C{limit} dials in progress; further ones wait for a slot, in order.

    @param on_full: called with C{True} when the last slot is taken and with C{False} when one is free
        again with nobody waiting for it; not once per dial.
    """

    def __init__(self, limit: int, on_full: Callable[[bool], object]) -> None:
        if limit < 1:
            raise ValueError("the dial limit must be at least 1")
        self._semaphore = DeferredSemaphore(limit)
        self._on_full = on_full
        self.full = False

    @property
    def in_progress(self) -> int:
        """Dials holding a slot now."""
        return self._semaphore.limit - self._semaphore.tokens

    @property
    def waiting(self) -> int:
        """Dials waiting for a slot."""
        return len(self._semaphore.waiting)

    async def run(self, dial: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """Wait for a slot, then C{await dial(*args)} in it. Cancelling a waiting dial gives up its turn."""
        await self._semaphore.acquire()
        self._update()
        try:
            return await dial(*args)
        finally:
            self._semaphore.release()
            self._update()

    def _update(self) -> None:
        full = self._semaphore.tokens == 0
        if full != self.full:
            self.full = full
            self._on_full(full)
