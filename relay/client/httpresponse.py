"""
The answer a listener's HTTP application writes: a L{RelayedResponse}, and the way it takes back to the relay.

Responses are buffered up to 64 kB: a response that is complete by then goes back on the control channel,
anything larger or slower (2 s, as .NET does) streams over a rendezvous.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, MutableMapping
from enum import Enum
from http import HTTPStatus
from typing import Any

from autobahn.exception import Disconnected
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from relay.client.errors import ConnectionClosedError
from relay.client.protocol import RelayClientProtocol
from relay.hybrid.headers import forwardable_value, is_token
from relay.hybrid.messages import encode
from relay.logger import Logger
from relay.writes import WriteGate

CONTROL_RESPONSE_LIMIT = 64 * 1024
"""A response body up to this size, complete in time, goes back on the control channel."""

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

FLUSH_DELAY = 2.0
"""Seconds a response may sit in the buffer before it is streamed over a rendezvous anyway."""

RESPONSE_STATUSES = range(200, 600)
"""
The statuses a response may have (200 to 599). The relay refuses a C{statusCode} outside 100-599 as an
invalid message, and an interim status (1xx) as the final one; either way the sender gets 502 and the
listener the blame.
"""


class _State(Enum):
    BUFFERING = "buffering"
    OPENING = "opening a rendezvous"
    STREAMING = "streaming"
    DONE = "done"


class _SocketSink:
    """A response on a rendezvous socket: the C{response} text, then the body as one fragmented message."""

    def __init__(self, protocol: RelayClientProtocol, gate: WriteGate, *, close_after: bool) -> None:
        self.protocol = protocol
        self.gate = gate
        self.close_after = close_after
        self.closed = False
        self.on_closed: Callable[[], object] | None = None  # the response a dedicated rendezvous carries

    @property
    def open(self) -> bool:
        """Whether what is sent still leaves: not after the socket closed, nor after a close frame."""
        return not self.closed and self.protocol.can_send()

    def socket_closed(self) -> None:
        """The socket is gone: writes fail from now on, and the response it carries hears it."""
        self.gate.stop()
        self.closed = True
        if self.on_closed is not None:
            self.on_closed()

    def send_head(self, payload: bytes, has_body: bool) -> None:
        self.protocol.sendMessage(payload, isBinary=False)
        if has_body:
            self.protocol.beginMessage(isBinary=True)

    def send_data(self, data: bytes) -> None:
        self.protocol.sendMessageFrame(data)

    def end(self, has_body: bool) -> None:
        if has_body:
            self.protocol.endMessage()
        if self.close_after:
            self.protocol.sendClose(1000)

    def abort(self) -> None:
        self.protocol.dropConnection(abort=True)


class ResponseHeaders(MutableMapping[str, "str | list[str]"]):
    """
    Response headers: names are matched without regard to case; a list value sends one line per item.

    Names must be HTTP tokens and values free of control characters (the tab aside) and lone surrogates, as
    the relay checks them (L{relay.hybrid.headers}): it would answer the sender 502 for anything else,
    blaming the listener.
    """

    def __init__(self) -> None:
        self._items: dict[str, tuple[str, str | list[str]]] = {}

    def __getitem__(self, name: str) -> str | list[str]:
        return self._items[name.lower()][1]

    def __setitem__(self, name: str, value: str | list[str]) -> None:
        for item in [value] if isinstance(value, str) else value:
            if not isinstance(item, str) or not forwardable_value(item):
                raise ValueError(
                    f"header {name!r:.60} needs string values without control characters (the tab aside) "
                    "or lone surrogates"
                )
        if not isinstance(name, str) or not is_token(name):
            raise ValueError(f"header name {name!r:.60} is not an HTTP token (RFC 9110)")
        self._items[name.lower()] = (name, value)

    def __delitem__(self, name: str) -> None:
        del self._items[name.lower()]

    def __iter__(self) -> Any:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def add(self, name: str, value: str) -> None:
        """Add a value, keeping those already set (C{Set-Cookie})."""
        current = self._items.get(name.lower())
        if current is None:
            self[name] = value
        else:
            values = [current[1]] if isinstance(current[1], str) else list(current[1])
            self[current[0]] = [*values, value]

    def to_json(self) -> dict[str, str | list[str]]:
        """The C{responseHeaders} object."""
        return {name: value for name, value in self._items.values()}


class RelayedResponse:
    """
    The answer to a L{RelayedRequest}.

    Set L{status_code}, L{status_description} and L{headers} before the first L{write}; they are sent
    with the first bytes that leave (or at L{finish}).

    @ivar headers: the response headers.
    """

    log = Logger()

    def __init__(
        self,
        request_id: str,
        *,
        reactor: Any,
        sink: _SocketSink | None = None,
        control: Any = None,
        open_rendezvous: Callable[[], Deferred[_SocketSink]] | None = None,
    ) -> None:
        self.request_id = request_id
        self._status_code = 200
        self._status_description: str | None = None
        self.headers = ResponseHeaders()
        self.bytes_sent = 0
        self._reactor = reactor
        self._sink = sink
        self._control = control
        self._open_rendezvous = open_rendezvous
        self._state = _State.STREAMING if sink is not None else _State.BUFFERING
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._ending = False
        self._head_sent = False
        self._has_body = True
        self._flush_timer: IDelayedCall | None = None
        self._waiters: list[Deferred[None]] = []
        self._done_waiters: list[Deferred[None]] = []
        self._lost_waiters: list[Deferred[Exception]] = []
        self._error: Exception | None = None
        self.on_settled: Callable[[], object] | None = None
        """Called once the response was delivered or failed (its request rendezvous is free again)."""
        watch = getattr(control, "watch", None) if sink is None else None
        if watch is not None and not watch(self._control_closed):
            self._fail(ConnectionClosedError(f"the control channel of request {request_id} is closed"))

    @property
    def status_code(self) -> int:
        """The status, 200 by default."""
        return self._status_code

    @status_code.setter
    def status_code(self, status: int) -> None:
        """
        Set the status.

        @raise ValueError: for anything but an C{int} from 200 to 599, which the relay would refuse (it
            answers the sender 502 instead, blaming the listener).
        """
        if not isinstance(status, int) or isinstance(status, bool):
            raise ValueError(f"a status code is an int from 200 to 599, not {status!r:.40}")
        if status not in RESPONSE_STATUSES:
            raise ValueError(
                f"status code {status} is out of range: the relay takes 200 to 599 (no interim 1xx status)"
            )
        self._status_code = int(status)

    @property
    def status_description(self) -> str | None:
        """The reason phrase; the standard one for the status when C{None}."""
        return self._status_description

    @status_description.setter
    def status_description(self, description: str | None) -> None:
        """
        Set the reason phrase.

        @raise ValueError: for anything but a string without lone surrogates (or C{None}): the response
            head could not be encoded, and nothing at all would reach the sender.
        """
        if description is not None and (
            not isinstance(description, str) or _LONE_SURROGATE.search(description) is not None
        ):
            raise ValueError(f"a reason phrase is text without lone surrogates, not {description!r:.60}")
        self._status_description = description

    @property
    def headers_sent(self) -> bool:
        """Whether status and headers have left; they cannot be changed any more."""
        return self._head_sent

    @property
    def lost(self) -> Exception | None:
        """Why the response could not be delivered (see L{when_lost}); C{None} while it can, or once it was."""
        return self._error

    @property
    def finished(self) -> bool:
        """Whether L{finish} was called (or the response failed)."""
        return self._ending or self._error is not None

    def write(self, data: bytes) -> Deferred[None]:
        """
        Send part of the body.

        @return: a L{Deferred} firing when more may be written; await it to respect back-pressure.
        @raise RuntimeError: after L{finish}.
        """
        if self._ending:
            raise RuntimeError("write() after finish()")
        if self._error is not None:
            return fail(self._error)
        if data:
            self._queue.append(bytes(data))
            self._queued += len(data)
            self._pump()
        return self._writable()

    def finish(self, data: bytes = b"") -> Deferred[None]:
        """
        Send the rest of the body (if any) and end the response.

        @return: a L{Deferred} firing once everything was handed to the socket.
        """
        if self._error is not None:
            return fail(self._error)
        if not self._ending:
            if data:
                self._queue.append(bytes(data))
                self._queued += len(data)
            self._ending = True
            self._pump()
        if self._error is not None:
            return fail(self._error)
        if self._state is _State.DONE:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._done_waiters.append(waiter)
        return waiter

    def when_lost(self) -> Deferred[Exception]:
        """
        Learn when the response can no longer be delivered.

        That is when the relay gave up on the exchange (the sender disconnected, the relay's
        C{request_timeout} expired), its socket closed, or it was aborted.

        An application producing the body slowly (a stream of events, a long poll, a proxied download) uses
        it to stop that work instead of finding out at its next L{write}.

        A response that would go back on the control channel is lost when that channel closes while the
        response has not started a rendezvous: the relay answers the sender 502 then.

        @return: a L{Deferred} firing with the reason (a L{ConnectionClosedError}, not as a failure); it
            never fires for a response that was delivered.
        """
        if self._error is not None:
            return succeed(self._error)
        waiter: Deferred[Exception] = Deferred()
        if self._state is not _State.DONE:
            self._lost_waiters.append(waiter)
        return waiter

    def reset(self) -> bool:
        """
        Take back what was written but has not left, to answer anew (with an error, say).

        The body queued is dropped, and status, reason phrase and headers are back to their defaults.

        @return: whether that was still possible: not once the head has left, or the response was finished
            or failed.
        """
        if self._head_sent or self.finished:
            return False
        if self._state is _State.BUFFERING:
            self._cancel_flush()
        self._queue.clear()
        self._queued = 0
        self._status_code = 200
        self._status_description = None
        self.headers = ResponseHeaders()
        return True

    def abort(self, error: Exception | None = None) -> None:
        """Give up: drop the rendezvous if a response was started on it, else send nothing at all."""
        if self._state is _State.DONE:
            return
        self._fail(error or ConnectionClosedError("the response was aborted"))
        if self._sink is not None and self._head_sent:
            self._sink.abort()

    def socket_closed(self) -> None:
        """The socket the response goes to is gone."""
        if self._state is not _State.DONE:
            self._fail(ConnectionClosedError(f"the rendezvous of request {self.request_id} closed"))

    # -- internals -------------------------------------------------------------------------------------

    def _control_closed(self) -> None:
        """The control channel closed: the relay failed this request unless its answer went elsewhere."""
        if self._state is _State.BUFFERING:
            self._fail(
                ConnectionClosedError(
                    f"the control channel closed before the response to {self.request_id} was sent"
                )
            )

    def _unwatch_control(self) -> None:
        """The response no longer depends on the control channel (it left, or goes over a rendezvous)."""
        unwatch = getattr(self._control, "unwatch", None)
        if unwatch is not None:
            unwatch(self._control_closed)

    def _head(self) -> bytes:
        status = self.status_code
        description = self.status_description
        if description is None:
            try:
                description = HTTPStatus(status).phrase
            except ValueError:
                description = ""
        return encode(
            {
                "response": {
                    "requestId": self.request_id,
                    "statusCode": status,
                    "statusDescription": description,
                    "responseHeaders": self.headers.to_json(),
                    "body": self._has_body,
                }
            }
        )

    def _pump(self) -> None:
        state = self._state
        if state is _State.BUFFERING:
            if self._ending and self._queued <= CONTROL_RESPONSE_LIMIT and self._control is not None:
                self._send_on_control()
            elif self._ending or self._queued > CONTROL_RESPONSE_LIMIT or self._control is None:
                self._start_rendezvous()
            elif self._flush_timer is None:
                self._flush_timer = self._reactor.callLater(FLUSH_DELAY, self._flush_due)
        elif state is _State.STREAMING:
            self._stream()

    def _send_on_control(self) -> None:
        body = b"".join(self._queue)
        self._queue.clear()
        self._queued = 0
        self._has_body = bool(body)
        messages = [(self._head(), False)]
        if body:
            messages.append((body, True))
        sent = self._control.send_messages(messages)
        if not sent:  # nothing left: headers_sent stays false
            self._fail(ConnectionClosedError("the control channel closed before the response was sent"))
            return
        self._head_sent = True
        self.bytes_sent = len(body)
        self._done()

    def _flush_due(self) -> None:
        self._flush_timer = None
        if self._state is _State.BUFFERING:
            self._start_rendezvous()

    def _start_rendezvous(self) -> None:
        self._cancel_flush()
        self._unwatch_control()
        if self._open_rendezvous is None:
            self._fail(ConnectionClosedError("no way to send this response"))
            return
        self._state = _State.OPENING
        self._open_rendezvous().addCallbacks(self._rendezvous_opened, self._rendezvous_failed)

    def _rendezvous_opened(self, sink: _SocketSink) -> None:
        if self._state is not _State.OPENING:
            sink.abort()
            return
        self._sink = sink
        sink.on_closed = self.socket_closed
        self._state = _State.STREAMING
        try:
            self._stream()
        except Exception as e:  # a writer waiting for the rendezvous must not wait for ever
            self.log.failure("sending the response to {request_id} failed", request_id=self.request_id)
            self._fail(ConnectionClosedError(f"the response could not be sent: {e}"))
            sink.abort()
        self._release_waiters()

    def _rendezvous_failed(self, failure: Failure) -> None:
        self.log.warn(
            "could not open a rendezvous for the response to {request_id}: {error}",
            request_id=self.request_id,
            error=str(failure.value),
        )
        self._fail(ConnectionClosedError(f"no rendezvous for the response: {failure.value}"))

    def _stream(self) -> None:
        sink = self._sink
        assert sink is not None  # noqa: S101 - streaming implies a sink
        if not sink.open:  # Autobahn would drop the bytes silently, and the response pass as delivered
            self._fail(ConnectionClosedError(f"the rendezvous of request {self.request_id} closed"))
            return
        try:
            self._send(sink)
        except Disconnected:
            self._fail(ConnectionClosedError(f"the rendezvous of request {self.request_id} closed"))

    def _send(self, sink: _SocketSink) -> None:
        if not self._head_sent:
            if not self._queue and not self._ending:
                return
            self._has_body = bool(self._queue)
            head = self._head()
            self._head_sent = True
            sink.send_head(head, self._has_body)
        while self._queue:
            data = self._queue.popleft()
            self._queued -= len(data)
            self.bytes_sent += len(data)
            sink.send_data(data)
        if self._ending:
            sink.end(self._has_body)
            self._done()

    def _writable(self) -> Deferred[None]:
        if self._state is _State.STREAMING and self._sink is not None:
            return self._sink.gate.when_writable()
        if self._state is _State.BUFFERING and self._queued <= CONTROL_RESPONSE_LIMIT:
            return succeed(None)
        if self._state is _State.DONE:
            return succeed(None) if self._error is None else fail(self._error)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def _release_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if self._error is not None:
                waiter.errback(self._error)
            elif self._sink is not None:
                self._sink.gate.when_writable().chainDeferred(waiter)
            else:
                waiter.callback(None)

    def _cancel_flush(self) -> None:
        if self._flush_timer is not None and self._flush_timer.active():
            self._flush_timer.cancel()
        self._flush_timer = None

    def _done(self) -> None:
        self._state = _State.DONE
        self._cancel_flush()
        self._unwatch_control()
        self._release_waiters()
        self._lost_waiters = []
        waiters, self._done_waiters = self._done_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        self._settled()

    def _settled(self) -> None:
        if self.on_settled is not None:
            self.on_settled()

    def _fail(self, error: Exception) -> None:
        if self._state is _State.DONE:
            return
        self._error = error
        self._state = _State.DONE
        self._cancel_flush()
        self._unwatch_control()
        self._queue.clear()
        self._queued = 0
        self._release_waiters()
        waiters, self._done_waiters = self._done_waiters, []
        for waiter in waiters:
            waiter.errback(error)
        lost, self._lost_waiters = self._lost_waiters, []
        for watcher in lost:
            watcher.callback(error)
        self._settled()
