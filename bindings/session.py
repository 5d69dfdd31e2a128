"""
A listener's life on the gateway: connect, register, serve envelopes, reconnect with back-off.

L{ListenerSession} is what a L{bindings.host.ServiceHost} and the L{bindings.bridge.SoapBridge} have in
common. It opens C{sb-wcf-action=listen}, sends C{r:Register}, and once C{r:Registered} arrives hands every
envelope to an L{IEnvelopeHandler}, writing back the reply the handler produces. When the connection drops
it tries again after a capped, jittered exponential back-off; refusals that cannot change by retrying
(bad token, unknown name, a policy that differs from the name's: C{AddressInUse}) stop it instead. At most
C{max_concurrent} handler calls run at once (a call whose reply waits for a full socket buffer still
counts); beyond that the socket is not read, so memory stays bounded.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from bindings.addressing import new_message_id, read_addressing
from bindings.control import (
    ACTION_REGISTERED,
    ACTION_TOKEN_RENEWED,
    ControlError,
    Registered,
    Registration,
    parse_registered,
    register_envelope,
    unregister_envelope,
)
from bindings.credentials import SasCredentials, ServiceAddress
from bindings.faults import FaultFormatError, SoapFault, parse_fault
from bindings.safexml import MAX_DEPTH_CAP, limits_for
from bindings.settings import REQUEST_REPLY, delivery_cap
from bindings.soap import Envelope, SoapError, SoapVersion, parse_envelope
from bindings.wsclient import EndpointFactory, HandshakeRefused, IChannelOwner, SoapClientProtocol, connect
from relay.logger import Logger

PERMANENT_SUBCODES: Final = frozenset(
    {"AddressInUse", "InvalidMessage", "NoSuchEntity", "Unauthorized", "Forbidden"}
)
NORMAL_CLOSE: Final = 1000
PING_INTERVAL: Final = 60.0
"""Seconds between a listener's pings: a gateway gone without a close (a crash, a cut network) is noticed."""
PING_TIMEOUT: Final = 30.0
"""Seconds a listener waits for the pong before it drops the connection and dials again."""
CLOSE_TIMEOUT: Final = 60.0
"""Seconds L{ListenerSession.close} waits for the calls it is serving before it closes anyway (WCF's default)."""


@dataclass(slots=True)
class _Leaving:
    """A graceful close under way: C{r:Unregister} sent on C{protocol}, its answer awaited, then the calls."""

    protocol: SoapClientProtocol
    message_id: str
    timer: IDelayedCall
    fenced: bool = False  # r:Unregistered came: nothing more will be routed here


class IEnvelopeHandler(Interface):
    """What a listener does with the envelopes the gateway delivers."""

    def handle(envelope: Envelope) -> Deferred[Envelope | None]:
        """Process one request or datagram; fire with the reply envelope, or C{None} for no reply."""


class RegistrationRefused(Exception):
    """The gateway answered C{r:Register} with a fault (C{AddressInUse}, C{InvalidMessage}, ...)."""

    def __init__(self, fault: SoapFault) -> None:
        super().__init__(fault.reason)
        self.fault = fault

    @property
    def subcode(self) -> str:
        """The innermost subcode's local name."""
        return self.fault.subcodes[-1][1] if self.fault.subcodes else self.fault.code.value


@dataclass(frozen=True, slots=True)
class Backoff:
    """
    Reconnection delays: C{initial * factor**n}, capped at C{maximum}, with "equal jitter".

    The delay for attempt C{n} is uniformly distributed in C{[d/2, d]} with C{d} the capped value, so many
    listeners dropped together by a restarting gateway do not come back in lockstep.
    """

    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before attempt C{attempt} (0-based) of a series of failures."""
        capped = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return capped / 2 + rng.random() * capped / 2


def _permanent(failure: Failure) -> bool:
    error = failure.value
    if isinstance(error, HandshakeRefused):
        return error.permanent
    if isinstance(error, RegistrationRefused):
        return error.subcode in PERMANENT_SUBCODES
    return False


@implementer(IChannelOwner)
class ListenerSession:
    """
    One registered listener, kept registered across gateway restarts and network failures.

    @ivar registered: the gateway's last C{r:Registered}, once there has been one.

    C{on_stopped} is called with the refusal when the gateway refuses the listener for good after L{open}
    has fired (a restarted gateway where the name is gone, say): nothing reconnects after that.
    """

    log = Logger()

    def __init__(
        self,
        address: ServiceAddress,
        registration: Registration,
        handler: IEnvelopeHandler,
        credentials: SasCredentials | None,
        clock: IReactorTime,
        endpoint: EndpointFactory,
        *,
        open_timeout: float = 60.0,
        backoff: Backoff = Backoff(),
        rng: random.Random | None = None,
        max_concurrent: int = 64,
        client_id: Callable[[], str] | None = None,
        on_stopped: Callable[[BaseException], None] | None = None,
        ping_interval: float = PING_INTERVAL,
        ping_timeout: float = PING_TIMEOUT,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        """
        A listener of C{address}, not connected before L{open}.

        @param ping_interval: seconds between the listener's pings to the gateway (0: none).
        @param ping_timeout: seconds a pong may take; then the connection is taken for dead and redialled.
        @param close_timeout: seconds L{close} waits for the gateway's fence and the calls being served.
        """
        self.address = address
        self.registration = registration
        self.handler = handler
        self.credentials = credentials
        self.clock = clock
        self.endpoint = endpoint
        self.open_timeout = open_timeout
        self.backoff = backoff
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self.max_concurrent = max_concurrent
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.registered: Registered | None = None
        self._client_id = client_id
        self._on_stopped = on_stopped
        self._protocol: SoapClientProtocol | None = None
        self._opening: Deferred[Registered] | None = None
        self._connecting: Deferred[SoapClientProtocol] | None = None  # the attempt under way, if any
        self._register_id: str | None = None
        self._register_timer: IDelayedCall | None = None
        self._retry: IDelayedCall | None = None
        self._failures = 0
        self._running = False
        self._active = 0
        self._paused: SoapClientProtocol | None = None  # the connection whose reading is paused, if any
        self._closing: dict[SoapClientProtocol, list[Deferred[None]]] = {}  # close() waiters by connection
        self._leaving: _Leaving | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def open(self) -> Deferred[Registered]:
        """
        Connect and register; keep doing so until L{close}.

        @return: a Deferred firing with the first C{r:Registered}, or failing with the first permanent
            refusal (L{HandshakeRefused}, L{RegistrationRefused}). Transient failures are retried.
        """
        if self._running:
            raise RuntimeError("the listener is already open")
        self._running = True
        self._opening = Deferred()
        self._attempt()
        return self._opening

    def close(self, timeout: float | None = None) -> Deferred[None]:
        """
        Stop reconnecting and leave gracefully; fires when the connection is closed.

        A registered listener sends C{r:Unregister}, so the gateway routes nothing new to it, and serves
        what came before the gateway's C{r:Unregistered}: calls in progress finish and their replies reach
        their callers. It then closes (1000). After C{timeout} seconds (L{close_timeout} by default) it
        closes whatever is still running; C{0} closes at once, as L{abort} does: calls in progress then
        fail at their callers with C{ListenerGone}.
        """
        grace = self.close_timeout if timeout is None else timeout
        leaving = self._leaving
        if leaving is not None and self._protocol is None:  # a second close while the first one drains
            waiter: Deferred[None] = Deferred()
            self._closing.setdefault(leaving.protocol, []).append(waiter)
            if grace <= 0:
                self._finish_leaving("listener closing")
            return waiter
        registered = self.is_registered
        self._running = False
        self._cancel_retry()
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()  # drops the socket, or stops the TCP connect
        if self._opening is not None and not self._opening.called:
            self._opening.errback(HandshakeRefused(None, "the listener was closed before it registered"))
        protocol, self._protocol = self._protocol, None
        if protocol is None or protocol.state == protocol.STATE_CLOSED:
            return succeed(None)
        waiter = Deferred()
        self._closing.setdefault(protocol, []).append(waiter)
        if not registered or grace <= 0 or protocol.state != protocol.STATE_OPEN:
            protocol.close_with(NORMAL_CLOSE, "listener closing")
            return waiter
        if self._leaving is not None:  # closed, opened and closed again: the first connection goes now
            self._finish_leaving("listener closing")
        message_id = new_message_id()
        timer = self.clock.callLater(grace, self._finish_leaving, "close timeout; calls still running")
        self._leaving = _Leaving(protocol, message_id, timer)
        protocol.send_bytes(unregister_envelope(message_id).to_bytes())
        return waiter

    def abort(self) -> Deferred[None]:
        """Stop reconnecting and close at once: calls in progress fail at their callers (C{ListenerGone})."""
        return self.close(0)

    def _fenced(self, leaving: _Leaving, envelope: Envelope) -> None:
        """The gateway answered C{r:Unregister}: once the calls in progress end, close."""
        if envelope.is_fault:  # a gateway that does not know r:Unregister: close as before
            self.log.info("the gateway refused r:Unregister; closing once the calls in progress end")
        leaving.fenced = True
        self._leave_when_idle()

    def _leave_when_idle(self) -> None:
        leaving = self._leaving
        if leaving is not None and leaving.fenced and self._active == 0:
            self._finish_leaving("listener closing")

    def _finish_leaving(self, reason: str) -> None:
        leaving, self._leaving = self._leaving, None
        if leaving is None:
            return
        if leaving.timer.active():
            leaving.timer.cancel()
        else:
            self.log.warn(
                "listener on {url} closed at its close timeout with {active} calls still running",
                url=self.address.http_url,
                active=self._active,
            )
        leaving.protocol.close_with(NORMAL_CLOSE, reason)

    @property
    def is_registered(self) -> bool:
        """Whether the listener is currently registered."""
        return self._protocol is not None and self._register_id is None and self.registered is not None

    # -- connecting -----------------------------------------------------------------------------------

    def _attempt(self) -> None:
        self._retry = None
        if not self._running:
            return
        client_id = self._client_id() if self._client_id is not None else None
        connecting = connect(
            self.address,
            "listen",
            self,
            self.credentials,
            self.clock,
            self.endpoint(self.address),
            client_id,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
        )
        self._connecting = connecting
        connecting.addCallbacks(self._connected, self._not_connected)

    def _not_connected(self, failure: Failure) -> None:
        self._connecting = None
        if failure.check(CancelledError):  # close() gave the attempt up: nothing to report
            return
        self._failed(failure)

    def _connected(self, protocol: SoapClientProtocol) -> None:
        self._connecting = None
        if not self._running:
            protocol.close_with(NORMAL_CLOSE, "listener closing")
            return
        self._protocol = protocol
        self._register_id = new_message_id()
        protocol.send_bytes(register_envelope(self.registration, self._register_id).to_bytes())
        self._register_timer = self.clock.callLater(self.open_timeout, self._register_late, protocol)

    def _register_late(self, protocol: SoapClientProtocol) -> None:
        self._register_timer = None
        self.log.warn("no r:Registered from {url} in time", url=self.address.http_url)
        protocol.close_with(NORMAL_CLOSE, "registration timed out")

    def _failed(self, failure: Failure) -> None:
        self._protocol = None
        if _permanent(failure) or not self._running:
            given_up = self._running
            self._running = False
            self.log.error(
                "listener on {url} stopped: {error}", url=self.address.http_url, error=str(failure.value)
            )
            if self._opening is not None and not self._opening.called:
                self._opening.errback(failure)
            elif given_up and self._on_stopped is not None:
                self._on_stopped(failure.value or Exception("stopped"))
            return
        delay = self.backoff.delay(self._failures, self.rng)
        self._failures += 1
        self.log.info(
            "listener on {url} not connected ({error}); retrying in {delay:.1f} s",
            url=self.address.http_url,
            error=str(failure.value) or type(failure.value).__name__,
            delay=delay,
        )
        self._retry = self.clock.callLater(delay, self._attempt)

    def _cancel_retry(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._register_timer is not None and self._register_timer.active():
            self._register_timer.cancel()
        self._register_timer = None

    # -- IChannelOwner --------------------------------------------------------------------------------

    def envelope_received(self, protocol: SoapClientProtocol, payload: bytes) -> None:
        """Registration answer, token answer, or an envelope for the handler."""
        try:
            envelope = parse_envelope(
                payload, SoapVersion.SOAP12, limits_for(delivery_cap(REQUEST_REPLY), MAX_DEPTH_CAP)
            )
            headers = read_addressing(envelope)
        except (SoapError, ValueError) as e:
            self.log.warn("ignored an unreadable envelope from the gateway: {error}", error=str(e))
            return
        if protocol is not self._protocol:
            self._from_closing(protocol, envelope, headers.relates_to)
            return
        if self._register_id is not None:
            self._registration_answer(protocol, envelope, headers.relates_to)
            return
        if headers.action == ACTION_TOKEN_RENEWED:
            return
        if envelope.is_fault:
            self._gateway_fault(envelope)
            return
        self._dispatch(protocol, envelope)

    def _from_closing(self, protocol: SoapClientProtocol, envelope: Envelope, relates_to: str | None) -> None:
        """
        A frame on a connection no longer current: L{close} is closing it (or a registration failed).

        Requests and datagrams the gateway sent before it read the close were counted as delivered, so
        they are served. Answers and faults concern nobody now; above all, they are never taken for the
        answer to the registration of the connection that replaced this one.
        """
        leaving = self._leaving
        if leaving is not None and leaving.protocol is protocol and relates_to == leaving.message_id:
            self._fenced(leaving, envelope)
            return
        if relates_to is not None or envelope.is_fault:
            self.log.info("ignored an answer on a connection being closed")
            return
        self._dispatch(protocol, envelope)

    def _registration_answer(
        self, protocol: SoapClientProtocol, envelope: Envelope, relates_to: str | None
    ) -> None:
        if relates_to != self._register_id:
            self.log.warn("ignored a message that came before r:Registered")
            return
        self._register_id = None
        if self._register_timer is not None and self._register_timer.active():
            self._register_timer.cancel()
        self._register_timer = None
        try:
            if envelope.is_fault:
                raise RegistrationRefused(SoapFault(parse_fault(envelope.body[0], SoapVersion.SOAP12)))
            if read_addressing(envelope).action != ACTION_REGISTERED:
                raise ControlError("the answer to r:Register is not r:Registered")
            registered = parse_registered(envelope)
        except (RegistrationRefused, ControlError, FaultFormatError, ValueError) as e:
            protocol.close_with(NORMAL_CLOSE, "registration failed")
            self._failed(Failure(e))
            return
        self.registered = registered
        self._failures = 0
        self.log.info(
            "listening on {address} ({kind} {entity})",
            address=registered.address,
            kind=registered.kind,
            entity=registered.entity,
        )
        if self._opening is not None and not self._opening.called:
            self._opening.callback(registered)

    def _gateway_fault(self, envelope: Envelope) -> None:
        try:
            fault = parse_fault(envelope.body[0], SoapVersion.SOAP12)
        except FaultFormatError:
            fault = None
        self.log.warn(
            "the gateway refused something this listener sent: {reason}",
            reason=fault.reason if fault is not None else "malformed fault",
        )

    def _dispatch(self, protocol: SoapClientProtocol, envelope: Envelope) -> None:
        self._active += 1
        if self._active >= self.max_concurrent and self._paused is not protocol:
            # Per connection: calls still running from a connection that was dropped count too, and the
            # one that replaced it must not take more until they finish.
            self._paused = protocol
            protocol.reading_held = True  # the gateway's pong may wait unread: not a dead connection
            protocol.transport.pauseProducing()
        result: Deferred[Envelope | None] = maybeDeferred(self.handler.handle, envelope)

        def done(reply: Envelope | None) -> Deferred[None] | None:
            if reply is not None and protocol.send_bytes(reply.to_bytes()):
                # The call counts until the socket takes more: a gateway that does not read the replies
                # stops being read at max_concurrent instead of having replies queued here without end.
                return protocol.write_gate.when_writable()
            return None

        def failed(failure: Failure) -> None:
            self.log.failure("the listener's handler failed", failure)

        def finally_(_: object) -> None:
            self._active -= 1
            paused = self._paused
            if paused is not None and self._active < self.max_concurrent:
                self._paused = None
                paused.reading_held = False
                if paused.state == paused.STATE_OPEN:
                    paused.transport.resumeProducing()
            self._leave_when_idle()

        result.addCallbacks(done, failed).addBoth(finally_)

    def connection_closed(self, protocol: SoapClientProtocol, code: int | None, reason: str | None) -> None:
        """
        Wake the L{close} waiters of this connection; reconnect if it was the current one.

        A connection no longer current (closed by L{close}, then L{open} called again before it was gone)
        touches nothing of its successor's registration: it used to reset it and start another attempt,
        which registered the listener twice and left one registered after the final L{close}.
        """
        if self._paused is protocol:
            self._paused = None
        leaving = self._leaving
        if leaving is not None and leaving.protocol is protocol:  # gone before it finished leaving
            self._leaving = None
            if leaving.timer.active():
                leaving.timer.cancel()
        for waiter in self._closing.pop(protocol, []):
            waiter.callback(None)
        if protocol is not self._protocol:
            return
        self._protocol = None
        registering = self._register_id is not None
        self._register_id = None
        if self._register_timer is not None and self._register_timer.active():
            self._register_timer.cancel()
        self._register_timer = None
        if not self._running or self._retry is not None:
            return
        self.log.info(
            "listener on {url} disconnected (close code {code}: {reason})",
            url=self.address.http_url,
            code=code,
            reason=reason,
        )
        if registering:
            self._failed(Failure(HandshakeRefused(None, reason or f"closed with {code} while registering")))
        else:
            self._retry = self.clock.callLater(self.backoff.delay(0, self.rng), self._attempt)
