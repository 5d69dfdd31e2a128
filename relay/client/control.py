"""
The listener's control channel: commands in, C{renewToken} and HTTP responses out.

The channel only translates: accepts and requests go to callbacks the listener supplies, so all
decisions (accept or reject, reconnect or not) stay in L{relay.client.listener}. Robustness rules from
the protocol: unknown commands and stray binary messages are ignored, and a C{request} announcing a
body (C{"body": true}) is paired with the binary message that immediately follows it.

The channel is not read while its answers are not being sent or the listener asks it to wait (too many
rejections in progress): see L{relay.client.flow}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from autobahn.exception import Disconnected
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from relay.client.commands import (
    AcceptCommand,
    RequestCommand,
    UnknownCommand,
    parse_command,
    renew_token_message,
)
from relay.client.flow import ControlReading, register_gate
from relay.client.protocol import IWebSocketReceiver, RelayClientProtocol
from relay.hybrid.messages import ControlMessageError
from relay.logger import Logger


@implementer(IWebSocketReceiver)
class ControlChannel:
    """
    One connected control channel.

    It stops reading the relay's commands while its write buffer is above the transport's high-water
    mark, and while the listener holds it (L{hold_reading}); meanwhile the relay's pings go unanswered.

    @ivar listener_id: the listener's tracking id, for log events.
    """

    log = Logger()

    def __init__(
        self,
        protocol: RelayClientProtocol,
        *,
        listener_id: str,
        on_accept: Callable[[AcceptCommand], None],
        on_request: Callable[[RequestCommand, bytes | None], None],
        on_closed: Callable[[ControlChannel, bool, int | None, str | None], None],
        clock: IReactorTime | None = None,
    ) -> None:
        """
        Take over C{protocol}'s messages, and register the channel's producer with its transport.

        @param clock: times pauses in reading for their log lines, and keeps those lines to a budget.
        """
        self._protocol = protocol
        # Answers go out as they are made, not after the whole batch of requests (relay.wsdata).
        protocol.write_through = True
        self.listener_id = listener_id
        self._on_accept = on_accept
        self._on_request = on_request
        self._on_closed = on_closed
        self._awaiting_body: RequestCommand | None = None
        self._closed = False
        self._close_waiters: list[Deferred[None]] = []
        self._watchers: set[Callable[[], object]] = set()
        transport = getattr(protocol, "transport", None)
        self._reading: ControlReading | None = None
        if transport is not None:
            self._reading = ControlReading(transport, listener_id=listener_id, clock=clock)
            register_gate(protocol, self._reading)

    @property
    def reading_paused(self) -> bool:
        """Whether the relay's commands are not being read right now."""
        return self._reading is not None and self._reading.paused

    def hold_reading(self, reason: str) -> None:
        """Stop reading commands for C{reason} until L{release_reading} (other reasons count apart)."""
        if self._reading is not None and not self._closed:
            self._reading.hold(reason)

    def release_reading(self, reason: str) -> None:
        """C{reason} no longer holds; reading resumes once no other reason does."""
        if self._reading is not None:
            self._reading.release(reason)

    def message_received(self, payload: bytes, is_binary: bool) -> None:
        """Dispatch one control message."""
        if self._awaiting_body is not None:
            request, self._awaiting_body = self._awaiting_body, None
            if is_binary:
                self._on_request(request, payload)
                return
            self.log.warn(
                "request {request_id} announced a body but a text message followed on {listener_id}",
                request_id=request.id,
                listener_id=self.listener_id,
            )
            self._on_request(request, None)
        if is_binary:
            self.log.info(
                "ignoring a binary control message ({size} bytes) on {listener_id}",
                size=len(payload),
                listener_id=self.listener_id,
            )
            return
        try:
            command = parse_command(payload)
        except ControlMessageError as e:
            self.log.warn(
                "ignoring a malformed control message on {listener_id}: {error}",
                listener_id=self.listener_id,
                error=str(e),
            )
            return
        if isinstance(command, AcceptCommand):
            self._on_accept(command)
        elif isinstance(command, RequestCommand):
            if command.has_body:
                self._awaiting_body = command
            else:
                self._on_request(command, None)
        elif isinstance(command, UnknownCommand):
            self.log.info(
                "ignoring an unknown control message with keys {keys} on {listener_id}",
                keys=list(command.keys),
                listener_id=self.listener_id,
            )

    def send_message(self, payload: bytes, is_binary: bool = False) -> bool:
        """
        Send one message on the channel (a JSON command as text, or a body as binary).

        @return: C{False} when the channel is no longer open, so the caller can give up quietly.
        """
        return self.send_messages(((payload, is_binary),))

    def send_messages(self, messages: Sequence[tuple[bytes, bool]]) -> bool:
        """
        Send several messages (C{(payload, is_binary)}) in one write, e.g. a C{response} and its body.

        @return: C{False} when the channel is no longer open, so the caller can give up quietly.
        """
        if self._closed:
            return False
        try:
            self._protocol.send_wholes(messages)
        except Disconnected:
            return False
        return True

    def send_renew_token(self, token: str) -> bool:
        """Send C{renewToken}; C{False} when the channel is no longer open."""
        return self.send_message(renew_token_message(token))

    def watch(self, watcher: Callable[[], object]) -> bool:
        """
        Call C{watcher} when the channel closes, unless L{unwatch} came first.

        For an answer still due on the channel: the relay fails the requests due on a control channel that
        closes (502 to their senders), so that answer can no longer go.

        @return: C{False} (and C{watcher} is not kept) when the channel is closed already.
        """
        if self._closed:
            return False
        self._watchers.add(watcher)
        return True

    def unwatch(self, watcher: Callable[[], object]) -> None:
        """C{watcher} no longer wants to hear of the close."""
        self._watchers.discard(watcher)

    def close(self) -> Deferred[None]:
        """Close the channel normally (1000) and fire once it is gone."""
        if self._closed:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._close_waiters.append(waiter)
        if self._reading is not None:
            self._reading.end(resume=True)  # the relay's close frame is behind what was not read
        self._protocol.sendClose(1000, None)
        return waiter

    def abort(self) -> None:
        """Drop the channel without a closing handshake."""
        if not self._closed:
            self._protocol.dropConnection(abort=True)

    def connection_closed(self, was_clean: bool, code: int | None, reason: str | None) -> None:
        """Tell the listener, then release anyone waiting in L{close}."""
        if self._closed:
            return
        self._closed = True
        if self._reading is not None:
            self._reading.end(resume=False)
        self._on_closed(self, was_clean, code, reason)
        watchers, self._watchers = self._watchers, set()
        for watcher in watchers:
            watcher()
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)
