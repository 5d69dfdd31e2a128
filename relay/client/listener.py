"""
L{HybridConnectionListener}: register on a hybrid connection and accept the senders it announces.

The API is modelled on .NET's C{HybridConnectionListener}.

Life cycle: C{open()} dials the control channel once and fails with the relay's answer (404, 401, ...)
if that does not work, as .NET's C{OpenAsync} does. Once online, a dropped channel is redialled with
capped, jittered exponential back-off until C{close()} (started over only after a connection that stayed
up for the longest delay, so a relay that drops the listener at once is not redialled every second);
401/403 keep backing off (a key may be restored), 404 stops for good (the entity is gone), and so does
any status given in C{give_up_statuses}. Before the token expires a fresh one is sent as C{renewToken}
(L{relay.client.renewal}).

Accepting: each C{accept} command is put to the accept handler (if any); accepted senders are dialled
at the rendezvous address and handed to C{on_connection} or queued for C{accept_connection()}; rejected
ones get the handler's status via the reject URL, which the relay answers with 410. At most
C{max_accept_dials} senders are decided about and dialled at once, and at most C{max_rejection_dials}
rejections; at either limit the control channel is not read until a dial is done (L{relay.client.flow}),
so a relay flooding C{accept} commands is slowed down instead of making the listener dial without bound.
"""

from __future__ import annotations

import inspect
import random as _random
import uuid
from collections.abc import Callable, Collection
from dataclasses import replace
from enum import Enum
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from relay.client.accepting import ACCEPT_DECISION_TIMEOUT, AcceptContext, AcceptHandler
from relay.client.address import parse_address
from relay.client.backoff import Backoff
from relay.client.commands import AcceptCommand, RequestCommand
from relay.client.connection import HybridWebSocket
from relay.client.control import ControlChannel
from relay.client.errors import ConnectError, ControlChannelLost
from relay.client.flow import MAX_ACCEPT_DIALS, MAX_REJECTION_DIALS
from relay.client.intake import SenderIntake
from relay.client.options import MIB, WebSocketOptions
from relay.client.protocol import RelayClientProtocol, open_websocket
from relay.client.renewal import TokenRenewal
from relay.client.tokens import ITokenProvider, token_provider_from_connection_string
from relay.logger import Logger

RequestHandler = Callable[[RequestCommand, "bytes | None"], object]
"""The seam for HTTP relaying: called with each C{request} command and its body (if it had one)."""


class ListenerState(Enum):
    """Where a listener is in its life."""

    NEW = "new"
    CONNECTING = "connecting"
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"
    """Gave up reconnecting (the relay answered 404); only C{close()} remains."""
    CLOSED = "closed"


class HybridConnectionListener:
    """
    A listener on one hybrid connection.

    @ivar address: where the listener registers.
    @ivar listener_id: the tracking id sent as C{sb-hc-id} on every (re)connect.
    @ivar accept_handler: decides about each sender (see L{relay.client.accepting}); C{None} accepts all.
    @ivar accept_timeout: seconds an asynchronous accept handler has to decide (0: no limit).
    @ivar on_connection: if set, receives each accepted L{HybridWebSocket} instead of the queue behind
        L{accept_connection}; may be a coroutine function.
    @ivar on_accept_failed: called with the L{AcceptContext} of a sender the accept handler accepted but
        that never became a connection (the rendezvous failed: the sender left or the relay's window
        closed; or the listener closed meanwhile), so a handler that prepared something can let it go.
    @ivar request_handler: where HTTP C{request} commands go (L{relay.client.http.HttpListener} installs
        itself here). C{None} (the default) logs and drops them, consuming their body message.
    @ivar close_handler: called when L{close} is called, so a request handler closes the sockets it
        opened (L{relay.client.http.HttpListener} installs itself here too).
    @ivar on_connecting: called before every attempt to dial the control channel.
    @ivar on_online: called when the listener is registered.
    @ivar on_offline: called with the reason when the listener stops being online: a
        L{ControlChannelLost} (it will reconnect; see L{state}), the L{ConnectError} it gave up on (an
        L{EndpointNotFoundError}, or a status in C{give_up_statuses}), or C{None} after L{close}.
    @ivar last_error: the most recent failure, C{None} while online.
    """

    log = Logger()

    def __init__(
        self,
        endpoint_or_connection_string: str,
        path: str | None = None,
        token_provider: ITokenProvider | None = None,
        *,
        reactor: Any = None,
        accept_handler: AcceptHandler | None = None,
        on_connection: Callable[[HybridWebSocket], object] | None = None,
        on_accept_failed: Callable[[AcceptContext], object] | None = None,
        on_connecting: Callable[[], object] | None = None,
        on_online: Callable[[], object] | None = None,
        on_offline: Callable[[BaseException | None], object] | None = None,
        options: WebSocketOptions | None = None,
        backoff: Backoff | None = None,
        random: Callable[[], float] = _random.random,
        token_ttl: float = 3600.0,
        renew_fraction: float = 0.9,
        ping_interval: float = 60.0,
        ping_timeout: float = 30.0,
        max_pending_connections: int = 64,
        max_rejection_dials: int = MAX_REJECTION_DIALS,
        max_accept_dials: int = MAX_ACCEPT_DIALS,
        accept_timeout: float = ACCEPT_DECISION_TIMEOUT,
        listener_id: str | None = None,
        give_up_statuses: Collection[int] = (404,),
    ) -> None:
        """
        Configure the listener; nothing is dialled before L{open}.

        @param endpoint_or_connection_string: a connection string or endpoint URI (see
            L{relay.client.address.parse_address}).
        @param path: the hybrid connection, unless the first argument names it.
        @param token_provider: required unless the connection string has a key or signature.
        @param reactor: the reactor (the global one by default). Autobahn's own handshake and ping
            timers always use C{txaio.config.loop}.
        @param options: settings for the control channel and accepted connections.
        @param backoff: the reconnect schedule.
        @param random: the jitter source, C{[0, 1)}.
        @param token_ttl: the token lifetime requested from the provider, in seconds.
        @param renew_fraction: renew when this fraction of a token's remaining lifetime has passed.
        @param ping_interval: seconds between keep-alive pings on the control channel (0: none), so a
            dead connection is noticed and redialled.
        @param ping_timeout: seconds to wait for the pong before declaring the channel dead.
        @param max_pending_connections: accepted connections that may wait for L{accept_connection};
            senders beyond that are rejected with 503 rather than buffered without bound.
        @param max_rejection_dials: rejections dialled at once; at this limit the control channel is
            not read until one is done, and rejections already read wait for their turn.
        @param max_accept_dials: senders decided about and dialled at once (from the accept handler's
            call until the rendezvous is open; a connection handed over no longer counts); at this limit
            the control channel is not read until one is done, and accepts already read wait for their
            turn.
        @param accept_timeout: seconds an asynchronous accept handler has to decide; then it is
            cancelled and the sender rejected with 504, which frees its slot (0: no limit).
        @param give_up_statuses: the relay's answers to a reconnect after which the listener stops
            reconnecting (L{ListenerState.OFFLINE}); by default only 404. A program that cannot get other
            credentials adds 401: its key was refused, and trying the same key again cannot help.
        """
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.address, cs = parse_address(endpoint_or_connection_string, path)
        if token_provider is None and cs is not None:
            token_provider = token_provider_from_connection_string(cs)
        if token_provider is None:
            raise ValueError("a listener needs a token provider (or a connection string with a key)")
        if not 0 < renew_fraction < 1:
            raise ValueError("renew_fraction must be between 0 and 1")
        if max_pending_connections < 0:
            raise ValueError("max_pending_connections must not be negative")
        self.token_provider = token_provider
        self._give_up_statuses = frozenset(give_up_statuses) | {404}
        self.listener_id = listener_id or str(uuid.uuid4())
        self.accept_handler = accept_handler
        self.accept_timeout = accept_timeout
        self.on_connection = on_connection
        self.on_accept_failed = on_accept_failed
        self.request_handler: RequestHandler | None = None
        self.close_handler: Callable[[], object] | None = None
        self.on_connecting = on_connecting
        self.on_online = on_online
        self.on_offline = on_offline
        self.last_error: BaseException | None = None
        self._reactor = reactor
        self._options = options or WebSocketOptions()
        self._control_options = replace(
            self._options,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_message_size=min(self._options.max_message_size or 4 * MIB, 4 * MIB),
        )
        self._backoff = backoff or Backoff()
        self._random = random
        self._state = ListenerState.NEW
        self._channel: ControlChannel | None = None
        self._online_since = 0.0
        self._attempts = 0  # failed and short-lived connections since the listener last stayed up
        self._renewal = TokenRenewal(
            self, reactor, self._spawn, token_ttl=token_ttl, renew_fraction=renew_fraction
        )
        self._tasks: set[Deferred[Any]] = set()
        self._close_waiters: list[Deferred[None]] = []
        self._close_finished = False
        self._intake = SenderIntake(
            self,
            reactor,
            max_pending_connections=max_pending_connections,
            max_accept_dials=max_accept_dials,
            max_rejection_dials=max_rejection_dials,
        )

    def __repr__(self) -> str:
        return f"<HybridConnectionListener {self.address.path} {self.listener_id} {self._state.value}>"

    @property
    def state(self) -> ListenerState:
        """The listener's life-cycle state."""
        return self._state

    @property
    def closed(self) -> bool:
        """Whether L{close} was called."""
        return self._state is ListenerState.CLOSED

    @property
    def is_online(self) -> bool:
        """Whether the control channel is registered right now."""
        return self._state is ListenerState.ONLINE

    @property
    def options(self) -> WebSocketOptions:
        """The settings of accepted connections (and of HTTP rendezvous sockets)."""
        return self._options

    @property
    def control_channel(self) -> ControlChannel | None:
        """The current control channel, for a request handler that answers on it; C{None} offline."""
        return self._channel

    def open(self) -> Deferred[None]:
        """
        Register the listener; fires once online.

        @raise RuntimeError: when the listener is opening, was opened (successfully) or closed before.
        @return: a L{Deferred} failing with L{ConnectError} (L{EndpointNotFoundError},
            L{AuthorizationError}, ...) or a connection error if the first attempt fails; the listener
            can then be opened again.
        """
        if self._state is not ListenerState.NEW:
            raise RuntimeError(f"listener is {self._state.value}; open() is allowed once")
        self._state = ListenerState.CONNECTING
        return self._spawn(self._open(), report=False)

    async def _open(self) -> None:
        try:
            channel = await self._connect_once()
        except CancelledError:
            raise
        except Exception as e:
            self.last_error = e
            if self._state is ListenerState.CONNECTING:
                self._state = ListenerState.NEW
            self.log.warn(
                "listener {listener_id} could not open {path}: {error}",
                listener_id=self.listener_id,
                path=self.address.path,
                error=str(e),
            )
            raise
        self._went_online(channel)

    def close(self) -> Deferred[None]:
        """
        Unregister: stop reconnecting and renewing, and close the control channel.

        Pending L{accept_connection} calls return C{None}. Connections already accepted stay open; ones
        queued but never taken are closed with 1001. Every call fires once the first one has finished.
        """
        if self._close_finished:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._close_waiters.append(waiter)
        if self._state is not ListenerState.CLOSED:
            Deferred.fromCoroutine(self._close()).addBoth(self._closed)
        return waiter

    def _closed(self, result: Failure | None) -> None:
        self._close_finished = True
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)

    async def _close(self) -> None:
        was_online = self._state is ListenerState.ONLINE
        self._state = ListenerState.CLOSED
        self._renewal.cancel()
        for task in list(self._tasks):
            task.cancel()
        self._intake.queue.shut()
        for connection in self._intake.queue.drain():
            connection.close(1001, "listener closed")
        self._notify(self.close_handler)
        channel, self._channel = self._channel, None
        self.log.info("listener {listener_id} closing", listener_id=self.listener_id)
        if channel is not None:
            await channel.close()
        if was_online:
            self._notify(self.on_offline, None)

    def accept_connection(self) -> Deferred[HybridWebSocket | None]:
        """
        The next accepted connection, or C{None} once the listener is closed or has given up.

        Cancelling the returned L{Deferred} stops waiting without losing a connection.
        """
        return self._intake.queue.get()

    # -- control channel -------------------------------------------------------------------------

    async def _connect_once(self) -> ControlChannel:
        self._notify(self.on_connecting)
        token = await self._renewal.fetch()
        url = self.address.listen_url(self.listener_id)
        self.log.info("listener {listener_id} connecting to {url}", listener_id=self.listener_id, url=url)

        def make_channel(protocol: RelayClientProtocol) -> ControlChannel:
            channel = ControlChannel(
                protocol,
                listener_id=self.listener_id,
                on_accept=self._accept_received,
                on_request=self._request_received,
                on_closed=self._control_closed,
                clock=self._reactor,
            )
            self._intake.holds.attach(channel)  # dials from before a reconnect may still be at a limit
            return channel

        channel = await open_websocket(
            self._reactor,
            url,
            options=self._control_options,
            make_receiver=make_channel,
            headers={"ServiceBusAuthorization": token},
        )
        self._renewal.token = token
        return cast(ControlChannel, channel)

    def _went_online(self, channel: ControlChannel) -> None:
        self._channel = channel
        self._state = ListenerState.ONLINE
        self._online_since = self._reactor.seconds()
        self.last_error = None
        self.log.info(
            "listener {listener_id} online on {path}", listener_id=self.listener_id, path=self.address.path
        )
        self._renewal.schedule()
        self._notify(self.on_online)

    def _control_closed(
        self, channel: ControlChannel, was_clean: bool, code: int | None, reason: str | None
    ) -> None:
        self._intake.holds.detach(channel)
        if channel is not self._channel:
            return
        self._channel = None
        self._renewal.cancel()
        if self._state is not ListenerState.ONLINE:
            return
        error = ControlChannelLost(code, reason)
        self.last_error = error
        self._state = ListenerState.RECONNECTING
        self.log.warn(
            "listener {listener_id} lost its control channel: {code} {reason}",
            listener_id=self.listener_id,
            code=code,
            reason=reason,
        )
        self._notify(self.on_offline, error)
        if self._reactor.seconds() - self._online_since >= self._backoff.maximum:
            self._attempts = 0  # it stayed up: the schedule starts over
        self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        attempt = self._attempts
        while self._state is ListenerState.RECONNECTING:
            delay = self._backoff.delay(attempt, self._random)
            self.log.info(
                "listener {listener_id} reconnecting in {delay:.2f} s (attempt {attempt})",
                listener_id=self.listener_id,
                delay=delay,
                attempt=attempt + 1,
            )
            await deferLater(self._reactor, delay)
            try:
                channel = await self._connect_once()
            except CancelledError:
                raise
            except Exception as e:
                if isinstance(e, ConnectError) and e.status_code in self._give_up_statuses:
                    self._give_up(e)
                    return
                self.last_error = e
                attempt += 1
                self.log.warn(
                    "listener {listener_id} reconnect attempt {attempt} failed: {error}",
                    listener_id=self.listener_id,
                    attempt=attempt,
                    error=str(e),
                )
                continue
            self._attempts = attempt + 1  # unless this connection stays up
            self._went_online(channel)

    def _give_up(self, error: ConnectError) -> None:
        self.last_error = error
        self._state = ListenerState.OFFLINE
        self.log.error(
            "listener {listener_id} stops reconnecting: {error}",
            listener_id=self.listener_id,
            error=str(error),
        )
        self._intake.queue.shut()
        self._notify(self.on_offline, error)

    # -- accepting -------------------------------------------------------------------------------

    def _accept_received(self, command: AcceptCommand) -> None:
        if self._state is not ListenerState.CLOSED:
            self._spawn(self._intake.handle(command))

    def hold_reading(self, reason: str) -> None:
        """
        Stop reading the control channel (this one and any after a reconnect) for C{reason}.

        For a request handler that cannot take more (L{relay.client.http.HttpListener} at its fetch
        limit). Reasons count apart: reading resumes once L{release_reading} has ended every one.
        """
        self._intake.holds.hold(reason)

    def release_reading(self, reason: str) -> None:
        """C{reason} no longer holds; the control channel is read again unless another reason holds it."""
        self._intake.holds.release(reason)

    # -- HTTP seam -------------------------------------------------------------------------------

    def _request_received(self, command: RequestCommand, body: bytes | None) -> None:
        if self._state is ListenerState.CLOSED:  # read during the closing handshake; the relay fails it
            self.log.info("request {request_id} not served: the listener closed", request_id=command.id)
            return
        if self.request_handler is None:
            self.log.info(
                "ignoring HTTP request {request_id}: this listener has no request handler",
                request_id=command.id,
            )
            return
        self.call_app(self.request_handler, command, body)

    # -- plumbing --------------------------------------------------------------------------------

    def _spawn(self, coroutine: Any, *, report: bool = True) -> Deferred[Any]:
        """
        Run a coroutine as a tracked task, so L{close} can cancel it.

        @param report: log its failure (background work); C{False} when the caller gets the result.
        """
        task: Deferred[Any] = Deferred.fromCoroutine(coroutine)
        if not task.called:
            self._tasks.add(task)

            def done(result: object) -> object:
                self._tasks.discard(task)
                return result

            task.addBoth(done)
        if report:
            task.addErrback(self._task_failed)
        return task

    def _task_failed(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            self.log.failure("listener {listener_id} task failed", failure, listener_id=self.listener_id)

    def call_app(
        self, callback: Callable[..., object], *args: object, on_failure: Callable[[], object] | None = None
    ) -> None:
        """
        Call application code: its failure, or its awaitable's, is logged, never raised here.

        @param on_failure: called after such a failure (a L{CancelledError} of the application's own
            work included), to clean up what the application was given.
        """
        try:
            result = callback(*args)
        except Exception:
            self.log.failure("listener {listener_id} callback failed", listener_id=self.listener_id)
            if on_failure is not None:
                on_failure()
            return
        if isinstance(result, Deferred) or inspect.isawaitable(result):
            ensureDeferred(cast(Any, result)).addErrback(self._app_failed, on_failure)

    def _app_failed(self, failure: Failure, on_failure: Callable[[], object] | None) -> None:
        # A CancelledError too: the listener holds no application awaitable to cancel, so it is the
        # application's own work that was cancelled (its connection would be left to nobody).
        self.log.failure("listener {listener_id} callback failed", failure, listener_id=self.listener_id)
        if on_failure is not None:
            on_failure()

    def _notify(self, callback: Callable[..., object] | None, *args: object) -> None:
        if callback is not None:
            self.call_app(callback, *args)
