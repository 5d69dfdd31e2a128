"""
Writes that reach the kernel at once: C{TCP_NODELAY}, and writes that skip the reactor's queue.

Twisted's C{write} queues bytes and sends them when the reactor next finds the socket writable. A process
that handles a batch of events (sixteen relayed HTTP requests read at once, say) therefore sends nothing
until it has handled the whole batch, and the peer process waits idle meanwhile: the two work in turns
instead of side by side. L{write_now} hands bytes to the kernel as they are produced, and L{no_delay}
turns Nagle's algorithm off so that a second small write is not held back until the first is
acknowledged (on loopback, by a delayed ACK 40 ms later).

These work on Twisted's TCP transports directly (their socket, their write queue); under a TLS layer
they fall back to the transport's own methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IPushProducer, ITCPTransport
from zope.interface import implementer


def no_delay(transport: Any) -> None:
    """
    Turn Nagle's algorithm off on a TCP transport (through a TLS layer too), as twisted.web's channels do.

    Every protocol here writes whole messages, so nothing is gained by holding small segments back.
    """
    if ITCPTransport.providedBy(transport):
        transport.setTcpNoDelay(True)


def tcp_transport(transport: Any) -> Any:
    """The TCP transport under a TLS wrapper, or the transport itself."""
    inner = getattr(transport, "transport", None)
    if inner is not None and hasattr(transport, "wrappedProtocol"):
        return inner
    return transport


def plain_socket(transport: Any) -> Any:
    """The socket of a plain TCP transport, or C{None} (never write around a TLS layer)."""
    if isinstance(transport, tcp.Connection) and not getattr(transport, "TLS", False):
        return transport.socket
    return None


def write_now(transport: Any, data: bytes | memoryview, sock: Any) -> bool:
    """
    Write C{data} to a plain TCP socket at once when nothing is queued on it; queue what it does not take.

    Twisted's C{write} always queues and sends when the reactor next finds the socket writable: a system
    call to watch for writability, a reactor event and a call to stop watching, for bytes the socket
    usually takes at once. Without a socket (TLS legs: L{plain_socket} gives C{None}) or with bytes
    already queued, everything goes through the transport, which keeps the order, signals back-pressure
    and reports errors. Queued bytes are copied (C{data} may be a view of a buffer that is reused).

    @return: whether the socket was found full: part of C{data} was sent and the rest is now queued.
    """
    if (
        sock is not None  # a plain TCP transport (L{plain_socket}): its write queue is read directly
        and transport.connected
        and not transport.disconnecting
        and not transport._aborting  # aborted: Twisted drops what is written until the loss arrives
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    ):
        try:
            sent = sock.send(data)
        except OSError:  # full (EAGAIN) or broken: the transport finds out on its own write
            sent = 0
        if sent == len(data):
            return False
        transport.write(bytes(data[sent:]))
        return True
    transport.write(bytes(data))
    return False


QUEUED_WRITE_COST = 64
"""
What a write queued on a transport holds beyond its bytes: Twisted keeps each as a bytes object of its
own in a list (about 50 bytes on CPython) until it sends them. For small frames (a pong is 2 to 127
bytes) that is most of what a queue holds, so bounds on what a peer that does not read can make us queue
count it (L{queued_writes}).
"""


def queued_writes(transport: Any) -> int:
    """How many writes a transport holds as objects of their own (Twisted joins them when it sends)."""
    return len(getattr(tcp_transport(transport), "_tempDataBuffer", ()))


def pending_write_bytes(transport: Any) -> int:
    """Bytes a transport has accepted but not yet handed to the kernel."""
    inner = tcp_transport(transport)
    buffered = (
        len(getattr(inner, "dataBuffer", b""))
        - getattr(inner, "offset", 0)
        + getattr(inner, "_tempDataLen", 0)
    )
    app = getattr(transport, "_appSendBuffer", None)
    if app:
        buffered += sum(len(chunk) for chunk in app)
    return max(buffered, 0)


@implementer(IPushProducer)
class WriteGate:
    """
    The push producer registered with the transport: it learns when the write buffer is full.

    Kept apart from the protocols that use it so the producer methods do not become application API.

    @param closed_error: the exception waiters get once the connection is gone (the client library passes
        its own C{ConnectionClosedError}).
    """

    def __init__(self, closed_error: Callable[[str], Exception] = ConnectionClosed) -> None:
        self.paused = False
        self.stopped = False
        self._closed_error = closed_error
        self._waiters: list[Deferred[None]] = []

    def pauseProducing(self) -> None:
        """The transport's buffer is above its high-water mark."""
        self.paused = True

    def resumeProducing(self) -> None:
        """The transport drained; release everyone waiting to send more."""
        self.paused = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def stopProducing(self) -> None:
        """The connection is gone; nobody waiting will be able to send."""
        self.stop()

    def stop(self) -> None:
        """Fail everyone still waiting, once."""
        if self.stopped:
            return
        self.stopped = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(self._closed_error("the connection closed while waiting to send"))

    def when_writable(self) -> Deferred[None]:
        """A L{Deferred} that fires when more may be written (at once, unless paused)."""
        if self.stopped:
            return fail(self._closed_error("the connection is closed"))
        if not self.paused:
            return succeed(None)
        waiter: Deferred[None] = Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        return waiter
