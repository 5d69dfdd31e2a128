"""
Calling a relay name from Python: proxies that provide the contract interface (spec section 8).

L{ChannelFactory} speaks the C{$wcf} WebSocket channel: one connection per factory, opened on first use and
again after it drops; requests are correlated by C{wsa:MessageID}, so many may be in flight and replies may
come back in any order. L{HttpChannelFactory} posts each call to the name's HTTP endpoint with SOAP 1.1
(C{basic}) or SOAP 1.2 (C{ws}). Either way a proxy method returns a Deferred (awaitable in C{async def}
code) that fires with the typed result, with the number of listeners reached for one-way operations, or
fails with L{SoapFault} (whose C{declared} holds the rebuilt declared fault when there is one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from lxml import etree
from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IConsumer, IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import classImplements, implementer

from bindings.addressing import (
    AddressingError,
    addressing_header_bytes,
    addressing_headers,
    new_message_id,
    read_addressing,
    relay_token_header,
)
from bindings.contracts import Contract, ContractError, Operation, check_multicast, contract_of
from bindings.control import ACTION_DELIVERED, ACTION_TOKEN_RENEWED, parse_delivered
from bindings.credentials import SasCredentials, ServiceAddress, parse_address
from bindings.faults import Fault, FaultCode, FaultFormatError, SoapFault, parse_fault
from bindings.safexml import MAX_DEPTH_CAP, XmlLimits, limits_for
from bindings.session import PING_INTERVAL, PING_TIMEOUT
from bindings.settings import LIMITS, MESSAGE_BYTES, MULTICAST, Binding, RequestReplyBinding
from bindings.soap import (
    Envelope,
    SoapError,
    SoapVersion,
    content_type_header,
    envelope_bytes,
    parse_envelope,
)
from bindings.wsclient import EndpointFactory, IChannelOwner, SoapClientProtocol, connect, default_endpoint
from relay.logger import Logger

PROFILES: Final = {"basic": SoapVersion.SOAP11, "ws": SoapVersion.SOAP12}
REPLY_MARGIN: Final = 5.0
"""Seconds a proxy waits beyond the binding's request timeout (the gateway's C{Timeout} fault comes first)."""
DEFAULT_REQUEST_TIMEOUT: Final = LIMITS["request_timeout"][0]
"""A name's C{request_timeout} unless configured: what an HTTP proxy, which knows no binding, waits for."""


class ChannelClosedError(ConnectionClosed):
    """The channel's connection closed while a call waited for its answer."""


def _soap_fault(envelope: Envelope, operation: Operation | None) -> SoapFault:
    try:
        fault = parse_fault(envelope.body[0], envelope.version)
    except FaultFormatError as e:
        return SoapFault(Fault(FaultCode.RECEIVER, f"unreadable fault: {e}"))
    declared = None
    if operation is not None:
        for detail in fault.detail:
            try:
                declared = operation.decode_fault(detail)
            except ContractError:
                declared = None
            if declared is not None:
                break
    return SoapFault(fault, declared)


def _outcome(envelope: Envelope, operation: Operation) -> Any:
    """The typed result of a reply envelope, or a L{SoapFault} failure."""
    if envelope.is_fault:
        raise _soap_fault(envelope, operation)
    body = envelope.first_body_child
    if body is None:
        raise ContractError(f"the reply to {operation.name} has an empty body")
    return operation.decode_response(body)


def _delivered(envelope: Envelope, operation: Operation) -> int:
    """
    The count of an C{r:Delivered} answer, which only a one-way operation may get.

    A request delivered as a datagram (the listener's contract has the operation one-way, say) gets no
    reply: its "result" would be the count.
    """
    if not operation.one_way:
        raise ContractError(f"{operation.name} expects a reply, but the message was delivered as a datagram")
    return parse_delivered(envelope)


class _ChannelProxy:
    """Base of generated proxies: each contract method forwards to the factory's C{call}."""

    def __init__(self, call: Callable[..., Deferred[Any]]) -> None:
        self._call = call


def make_proxy(contract: Contract, call: Callable[..., Deferred[Any]]) -> Any:
    """An object providing C{contract.interface} whose methods are C{call(operation, *args, **kwargs)}."""

    def method(operation: Operation) -> Callable[..., Deferred[Any]]:
        def invoke(self: _ChannelProxy, *args: Any, **kwargs: Any) -> Deferred[Any]:
            return self._call(operation, *args, **kwargs)

        invoke.__name__ = operation.method
        invoke.__doc__ = f"Call {operation.name} through the relay."
        return invoke

    namespace = {op.method: method(op) for op in contract.operations}
    cls = type(f"{contract.name}Proxy", (_ChannelProxy,), namespace)
    classImplements(cls, contract.interface)  # type: ignore[misc]
    return cls(call)


@dataclass(eq=False)
class _Call:
    operation: Operation
    result: Deferred[Any]
    timer: IDelayedCall | None = None
    protocol: Any = None  # the connection it was sent on: its loss fails the call


@implementer(IChannelOwner)
class ChannelFactory:
    """
    Proxies for one contract on one name, over the WebSocket channel.

    ::

        factory = ChannelFactory(ICalculator, "sb://relay.example/calc", RequestReplyBinding(), credentials)
        calc = factory.create_channel()
        assert await calc.Add(2, 3) == 5

    @param ping_interval: seconds between pings to the gateway (0: none), so that a connection that went
        silent (the gateway's machine died, the network was cut) is noticed: its calls fail with
        L{ChannelClosedError} and the next call dials again. Without pings that took the kernel's TCP
        retries, about a quarter of an hour.
    @param ping_timeout: seconds a pong may take; by default L{PING_TIMEOUT} plus the binding's
        C{send_timeout}, as long as the gateway may stop reading the channel while a listener's queue is
        full.
    @raise TypeError: when the interface is not a contract, or not all one-way on a multicast binding (a
        multicast name answers every message with a count, never a reply).
    """

    log = Logger()

    def __init__(
        self,
        interface: Any,
        address: str | ServiceAddress,
        binding: Binding | None = None,
        credentials: SasCredentials | None = None,
        *,
        reactor: Any = None,
        endpoint: EndpointFactory | None = None,
        ping_interval: float = PING_INTERVAL,
        ping_timeout: float | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.contract = contract_of(interface)
        self.binding = binding if binding is not None else RequestReplyBinding()
        self.ping_interval = ping_interval
        self.ping_timeout = (
            PING_TIMEOUT + float(self.binding.send_timeout) if ping_timeout is None else ping_timeout
        )
        if self.binding.kind == MULTICAST:
            check_multicast(self.contract)
        self.address = parse_address(address) if isinstance(address, str) else address
        self.credentials = credentials
        self.clock: IReactorTime = reactor
        self._endpoint = endpoint or default_endpoint(reactor)
        self._protocol: SoapClientProtocol | None = None
        self._connecting: Deferred[SoapClientProtocol] | None = None
        self._waiting: list[Deferred[SoapClientProtocol]] = []
        self._calls: dict[str, _Call] = {}
        self._closings: dict[SoapClientProtocol, Deferred[None]] = {}  # by connection being closed

    def create_channel(self) -> Any:
        """A proxy that provides the contract interface."""
        return make_proxy(self.contract, self.call)

    @property
    def timeout(self) -> float:
        """Seconds a call waits for its answer before failing with C{TimeoutError}."""
        return float(getattr(self.binding, "request_timeout", self.binding.send_timeout)) + REPLY_MARGIN

    def open(self) -> Deferred[None]:
        """Connect now instead of on the first call."""
        return self._connection().addCallback(lambda _: None)

    def close(self) -> Deferred[None]:
        """Close the connection (or abandon one being opened); waiting calls fail with L{ChannelClosedError}."""
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            self._fail_waiting(Failure(ChannelClosedError("the channel was closed")))
            connecting.cancel()  # drops the socket, or stops the TCP connect
        protocol, self._protocol = self._protocol, None
        if protocol is None:
            return succeed(None)
        protocol.close_with(1000, "channel closing")
        closing: Deferred[None] = Deferred()
        self._closings[protocol] = closing
        return closing

    def _connection(self) -> Deferred[SoapClientProtocol]:
        if self._protocol is not None and self._protocol.state == self._protocol.STATE_OPEN:
            return succeed(self._protocol)
        waiter: Deferred[SoapClientProtocol] = Deferred()
        self._waiting.append(waiter)
        if self._connecting is None:
            connecting = connect(
                self.address,
                "send",
                self,
                self.credentials,
                self.clock,
                self._endpoint(self.address),
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
            )
            self._connecting = connecting
            connecting.addCallbacks(
                self._connected, self._not_connected, callbackArgs=(connecting,), errbackArgs=(connecting,)
            )
        return waiter

    def _connected(self, protocol: SoapClientProtocol, connecting: Deferred[SoapClientProtocol]) -> None:
        if self._connecting is not connecting:  # close() abandoned this attempt
            protocol.close_with(1000, "channel closing")
            return
        self._connecting = None
        self._protocol = protocol
        waiters, self._waiting = self._waiting, []
        for waiter in waiters:
            waiter.callback(protocol)

    def _not_connected(self, failure: Failure, connecting: Deferred[SoapClientProtocol]) -> None:
        if self._connecting is connecting:
            self._connecting = None
            self._fail_waiting(failure)

    def _fail_waiting(self, failure: Failure) -> None:
        waiters, self._waiting = self._waiting, []
        for waiter in waiters:
            waiter.errback(failure)

    def call(self, operation: Operation, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        Invoke an operation.

        @return: a Deferred with the typed result (request/reply), the number of listeners that took the
            message (one-way), or a L{SoapFault} / connection failure.
        """
        try:
            body = operation.encode_request(*args, **kwargs)
        except ContractError as e:
            return fail(e)
        message_id = new_message_id()
        headers = addressing_header_bytes(
            to=self.address.http_url,
            action=operation.action,
            message_id=message_id,
            reply_to_anonymous=not operation.one_way,
        )
        payload = envelope_bytes(SoapVersion.SOAP12, headers, (body,))
        result: Deferred[Any] = Deferred(lambda _: self._forget(message_id))
        entry = _Call(operation, result)
        # The call's time runs from now, the connection's opening included: a gateway that does not answer
        # the connect or the handshake fails it at its timeout, as one that does not answer the call does.
        self._calls[message_id] = entry
        entry.timer = self.clock.callLater(self.timeout, self._timed_out, message_id)

        def send(protocol: SoapClientProtocol) -> None:
            if result.called:
                return
            entry.protocol = protocol
            # Back-pressure: while the socket's buffer is full (the gateway stopped reading it because the
            # listener is behind), the call waits here, within its timeout, instead of queuing its bytes.
            protocol.write_gate.when_writable().addCallbacks(lambda _: write(protocol), lambda _: closed())

        def write(protocol: SoapClientProtocol) -> None:
            if message_id in self._calls and not protocol.send_bytes(payload):
                closed()

        def closed() -> None:
            self._settle(message_id, Failure(ChannelClosedError("the channel is not open")))

        def not_connected(failure: Failure) -> None:
            self._settle(message_id, failure)

        self._connection().addCallbacks(send, not_connected)
        return result

    def _forget(self, message_id: str) -> None:
        entry = self._calls.pop(message_id, None)
        if entry is not None and entry.timer is not None and entry.timer.active():
            entry.timer.cancel()

    def _settle(self, message_id: str, outcome: Any) -> None:
        entry = self._calls.pop(message_id, None)
        if entry is None:
            return
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        if isinstance(outcome, Failure):
            entry.result.errback(outcome)
        else:
            entry.result.callback(outcome)

    def _timed_out(self, message_id: str) -> None:
        entry = self._calls.get(message_id)
        if entry is not None:
            entry.timer = None
            self._settle(message_id, Failure(TimeoutError(f"no answer to {entry.operation.name} in time")))

    # IChannelOwner

    def envelope_received(self, protocol: SoapClientProtocol, payload: bytes) -> None:
        """Settle the call an answer relates to."""
        try:
            envelope = parse_envelope(
                payload, SoapVersion.SOAP12, limits_for(MESSAGE_BYTES[self.binding.kind][1], MAX_DEPTH_CAP)
            )
            headers = read_addressing(envelope)
        except (SoapError, AddressingError) as e:
            self.log.warn("ignored an unreadable envelope from the gateway: {error}", error=str(e))
            return
        if headers.action == ACTION_TOKEN_RENEWED:
            return
        entry = self._calls.get(headers.relates_to or "")
        if entry is None:
            if envelope.is_fault:
                fault = _soap_fault(envelope, None)
                self.log.warn("the gateway refused a message: {reason}", reason=fault.reason)
            else:
                self.log.info(
                    "ignored an answer that matches no call ({relates_to})", relates_to=headers.relates_to
                )
            return
        try:
            if headers.action == ACTION_DELIVERED:
                outcome: Any = _delivered(envelope, entry.operation)
            else:
                outcome = _outcome(envelope, entry.operation)
        except Exception:
            # SoapFault, ContractError, ControlError, or anything a contract's own types raise: it fails
            # this call only; raised from here it would drop the connection and every call on it.
            outcome = Failure()
        self._settle(headers.relates_to or "", outcome)

    def connection_closed(self, protocol: SoapClientProtocol, code: int | None, reason: str | None) -> None:
        """
        Fail every call still waiting on this connection; the next call reconnects.

        A call made while a closed connection is still closing goes on a new one: each connection's
        loss settles only its own calls and its own L{close}.
        """
        if protocol is self._protocol:
            self._protocol = None
        for message_id, entry in list(self._calls.items()):
            if entry.protocol is protocol:
                self._settle(message_id, Failure(ChannelClosedError(f"closed with {code}: {reason}")))
        closing = self._closings.pop(protocol, None)
        if closing is not None:
            closing.callback(None)


@implementer(IBodyProducer)
class BytesProducer:
    """A request body already in memory, written at once (no cooperator, so it also works on test clocks)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """Write the whole body."""
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        """Nothing to pause: everything was written."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Nothing to stop."""


class TooLarge(ValueError):
    """A response body went past the limit L{read_capped} was given."""


class _CappedBody(Protocol):
    """
    Collects a response body up to a limit into L{finished}; a larger body fails the read.

    Cancelling L{finished} drops the connection (a caller's timeout covers the body too).
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.finished: Deferred[bytes] = Deferred(self._cancel)
        self._parts: list[bytes] = []
        self._size = 0

    def _cancel(self, _: Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            if not self.finished.called:
                self.finished.errback(TooLarge(f"the answer is larger than {self._limit} bytes"))
            self.transport.stopProducing()  # type: ignore[union-attr]
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.finished.called:
            return
        if reason is None or reason.check(ResponseDone):
            self.finished.callback(b"".join(self._parts))
        else:
            self.finished.errback(reason)


def read_capped(response: IResponse, limit: int) -> Deferred[bytes]:
    """Read a response body, refusing more than C{limit} bytes; cancelling the read drops the connection."""
    body = _CappedBody(limit)
    response.deliverBody(body)
    return body.finished


class HttpError(Exception):
    """An HTTP answer that is neither a SOAP envelope nor an expected empty 202."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body


class HttpChannelFactory:
    """
    Proxies that post each call to the name's HTTP endpoint: SOAP 1.1 (C{basic}) or SOAP 1.2 (C{ws}).

    The token travels in the C{ServiceBusAuthorization} header, or, with C{token_in_header=True}, in the
    WCF-era C{RelayAccessToken} SOAP header.

    @ivar timeout: seconds a call waits for its whole answer before failing with C{TimeoutError} (default:
        the specs' 60 s C{request_timeout} and L{REPLY_MARGIN}, so the gateway's C{Timeout} fault comes first).
    """

    def __init__(
        self,
        interface: Any,
        address: str | ServiceAddress,
        profile: str = "basic",
        credentials: SasCredentials | None = None,
        *,
        reactor: Any = None,
        agent: IAgent | None = None,
        token_in_header: bool = False,
        max_response_bytes: int | None = None,
        timeout: float = DEFAULT_REQUEST_TIMEOUT + REPLY_MARGIN,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}")
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.contract = contract_of(interface)
        self.address = parse_address(address) if isinstance(address, str) else address
        self.version = PROFILES[profile]
        self.credentials = credentials
        self.clock: IReactorTime = reactor
        self.agent: IAgent = agent if agent is not None else Agent(reactor)
        self.token_in_header = token_in_header
        self.max_response_bytes = max_response_bytes or MESSAGE_BYTES["requestreply"][0]
        self.timeout = timeout

    def create_channel(self) -> Any:
        """A proxy that provides the contract interface."""
        return make_proxy(self.contract, self.call)

    def _request(self, operation: Operation, body: etree._Element) -> tuple[bytes, Headers]:
        headers = Headers({b"content-type": [content_type_header(self.version, operation.action).encode()]})
        blocks: tuple[etree._Element, ...] = ()
        if self.version is SoapVersion.SOAP11:
            headers.setRawHeaders(b"soapaction", [f'"{operation.action}"'.encode()])
        else:
            blocks = addressing_headers(
                to=self.address.http_url, action=operation.action, message_id=new_message_id()
            )
        if self.credentials is not None:
            token = self.credentials.token(self.address.http_url, self.clock.seconds())
            if self.token_in_header:
                blocks = (*blocks, relay_token_header(token))
            else:
                headers.setRawHeaders(b"servicebusauthorization", [token.encode()])
        return Envelope(self.version, blocks, (body,)).to_bytes(), headers

    def call(self, operation: Operation, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Post one call; see L{ChannelFactory.call} for what the Deferred fires with."""
        try:
            body = operation.encode_request(*args, **kwargs)
        except ContractError as e:
            return fail(e)
        payload, headers = self._request(operation, body)
        requested = self.agent.request(
            b"POST", self.address.http_url.encode(), headers, BytesProducer(payload)
        )

        async def answer() -> Any:
            response: IResponse = await requested
            data = await read_capped(response, self.max_response_bytes)
            if response.code == 202 and not data:
                if not operation.one_way:  # as _delivered: a count is no result
                    raise ContractError(
                        f"{operation.name} expects a reply, but the message was delivered as a datagram"
                    )
                counted = response.headers.getRawHeaders(b"relay-delivered-count")
                return int(counted[0]) if counted else 1
            content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode("latin-1")
            if not data or "xml" not in content_type:
                raise HttpError(response.code, data)
            try:
                envelope = parse_envelope(data, None, XmlLimits(self.max_response_bytes, MAX_DEPTH_CAP))
            except SoapError:
                raise HttpError(response.code, data) from None
            return _outcome(envelope, operation)

        return self._bounded(Deferred.fromCoroutine(answer()), operation)

    def _bounded(self, call: Deferred[Any], operation: Operation) -> Deferred[Any]:
        """
        Fail C{call} with C{TimeoutError} once L{timeout} passed without its whole answer.

        Cancelling drops the request (or the body being read): a gateway that stalls holds nothing here.
        """
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            call.cancel()

        timer = self.clock.callLater(self.timeout, expire)

        def settle(outcome: Any) -> Any:
            if timer.active():
                timer.cancel()
            if expired and isinstance(outcome, Failure):
                return Failure(TimeoutError(f"no answer to {operation.name} in {self.timeout:g} s"))
            return outcome

        return call.addBoth(settle)
