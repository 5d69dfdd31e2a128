"""
Hosting a service implementation on a relay name (spec sections 7.2 and 8).

L{ServiceHost} checks the implementation against its contract (C{verifyObject}), registers the contract's
WSDL with the gateway through a L{ListenerSession} (which reconnects with back-off), and dispatches every
delivered envelope with a L{ServiceDispatcher}: decode the typed arguments, call the method (plain, returning
a Deferred, or C{async def}), encode the result, or turn an exception into a fault. Declared faults carry
their typed detail; anything else is C{Receiver}/C{r:InternalServiceFault} with a generic reason unless the
host includes exception detail. Tracebacks go to the log, never on the wire; the connection survives every
service exception; faults of one-way operations are only logged.
"""

from __future__ import annotations

import inspect
import random
from typing import Any, Final

from lxml import etree
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from bindings.addressing import ANONYMOUS, addressing_headers, read_addressing, read_sender
from bindings.contracts import (
    Contract,
    ContractError,
    DeclaredFault,
    Operation,
    call_arguments,
    check_multicast,
    contract_of,
)
from bindings.control import HTTP_AUTHORIZATION_TAG, Registered, Registration
from bindings.credentials import SasCredentials, ServiceAddress, parse_address
from bindings.faultcodes import RELAY_NS, WSA_NS, FaultCode
from bindings.faults import SOAP_FAULT_ACTION, Fault, fault_envelope
from bindings.session import Backoff, IEnvelopeHandler, ListenerSession
from bindings.settings import MULTICAST, Binding, RequestReplyBinding
from bindings.soap import SOAP12_NEXT, SOAP12_NS, SOAP12_ULTIMATE_RECEIVER, Envelope, SoapVersion, xml_safe
from bindings.wsclient import EndpointFactory, default_endpoint
from bindings.wsdl import generate_wsdl
from relay.logger import Logger

GENERIC_REASON: Final = (
    "The server was unable to process the request due to an internal error. Turn on "
    "include_exception_detail on the service host to send the exception's message back."
)
UNDERSTOOD_NAMESPACES: Final = frozenset({WSA_NS})
UNDERSTOOD_TAGS: Final = frozenset({f"{{{RELAY_NS}}}Sender", HTTP_AUTHORIZATION_TAG})
_MUST_UNDERSTAND: Final = f"{{{SOAP12_NS}}}mustUnderstand"
_ROLE: Final = f"{{{SOAP12_NS}}}role"


def _fault(code: FaultCode, reason: str, subcode: str | None = None, detail: tuple[Any, ...] = ()) -> Fault:
    return Fault(code=code, reason=reason, subcodes=((RELAY_NS, subcode),) if subcode else (), detail=detail)


def exception_detail(error: BaseException) -> etree._Element:
    """C{r:ExceptionDetail} with the exception's type and message (never its traceback)."""
    element = etree.Element(f"{{{RELAY_NS}}}ExceptionDetail", nsmap={"r": RELAY_NS})
    etree.SubElement(
        element, f"{{{RELAY_NS}}}Type"
    ).text = f"{type(error).__module__}.{type(error).__qualname__}"
    etree.SubElement(element, f"{{{RELAY_NS}}}Message").text = xml_safe(str(error))
    return element


def not_understood(envelope: Envelope) -> list[str]:
    """The headers targeted at us and marked mustUnderstand that this host does not process (SOAP 1.2)."""
    missing = []
    for block in envelope.headers:
        if (block.get(_MUST_UNDERSTAND) or "").strip() not in ("true", "1"):
            continue
        if block.get(_ROLE) not in (None, SOAP12_NEXT, SOAP12_ULTIMATE_RECEIVER):
            continue
        if etree.QName(block).namespace in UNDERSTOOD_NAMESPACES or block.tag in UNDERSTOOD_TAGS:
            continue
        missing.append(block.tag)
    return missing


@implementer(IEnvelopeHandler)
class ServiceDispatcher:
    """
    Turns delivered envelopes into typed calls on an implementation, and results into replies.

    @ivar include_exception_detail: put undeclared exceptions' messages in faults (development only).
    """

    log = Logger()

    def __init__(
        self, implementation: object, contract: Contract, include_exception_detail: bool = False
    ) -> None:
        self.implementation = implementation
        self.contract = contract
        self.include_exception_detail = include_exception_detail

    def operation_for(self, envelope: Envelope, action: str | None) -> Operation | None:
        """The operation an envelope invokes: by action, else by its body's wrapper element."""
        if action is not None:
            found = self.contract.by_action(action)
            if found is not None:
                return found
        body = envelope.first_body_child
        return self.contract.by_request_element(body.tag) if body is not None else None

    def handle(self, envelope: Envelope) -> Deferred[Envelope | None]:
        """Dispatch one request or datagram; fire with the reply (C{None} for one-way operations)."""
        headers = read_addressing(envelope)
        sender = read_sender(envelope)
        expects_reply = headers.reply_to == ANONYMOUS
        message_id = headers.message_id

        def answer(fault: Fault, action: str = SOAP_FAULT_ACTION) -> Deferred[Envelope | None]:
            self.log.info(
                "fault {reason!r} for {message_id} from {sender}",
                reason=fault.reason,
                message_id=message_id,
                sender=sender.key_name if sender else "-",
            )
            if not expects_reply:
                return succeed(None)
            return succeed(fault_envelope(fault, SoapVersion.SOAP12, action, message_id))

        missing = not_understood(envelope)
        if missing:
            return answer(Fault(FaultCode.MUST_UNDERSTAND, f"Header {missing[0]} was not understood"))
        operation = self.operation_for(envelope, headers.action)
        body = envelope.first_body_child
        if operation is None or body is None:
            return answer(
                _fault(
                    FaultCode.SENDER,
                    f"The contract has no operation for action {headers.action!r}",
                    "ActionNotSupported",
                )
            )
        try:
            values = operation.decode_request(body)
        except ContractError as e:
            return answer(
                _fault(FaultCode.SENDER, f"The request could not be read: {e}", "DeserializationFailed")
            )
        positional, keywords = call_arguments(operation, values)
        method = getattr(self.implementation, operation.method)

        def call() -> Any:
            result = method(*positional, **keywords)
            return ensureDeferred(result) if inspect.iscoroutine(result) else result

        outcome: Deferred[Any] = maybeDeferred(call)
        outcome.addCallbacks(
            self._result,
            self._error,
            callbackArgs=(operation, message_id, expects_reply),
            errbackArgs=(operation, message_id, expects_reply),
        )
        outcome.addErrback(self._unanswered, operation, message_id, expects_reply)
        return outcome

    def _result(
        self, value: Any, operation: Operation, message_id: str | None, expects_reply: bool
    ) -> Envelope | None:
        if operation.one_way or not expects_reply:
            return None
        try:
            body = operation.encode_response(value)
        except ContractError as e:
            self.log.error(
                "{operation} returned a value its contract does not allow: {error}",
                operation=operation.name,
                error=str(e),
            )
            return self._reply_fault(self._internal(e), message_id)
        headers = addressing_headers(action=operation.reply_action, relates_to=message_id)
        return Envelope(SoapVersion.SOAP12, headers, (body,))

    def _unanswered(
        self, failure: Failure, operation: Operation, message_id: str | None, expects_reply: bool
    ) -> Envelope | None:
        """
        Building the reply or fault failed (a declared fault whose C{reason()} raises, say).

        The host still answers, with the generic C{InternalServiceFault}: without a reply the caller would
        wait for the gateway's C{Timeout}. Nothing of the exception is sent; it may be what failed.
        """
        self.log.failure(
            "the answer to {operation} (message {message_id}) could not be built",
            failure,
            operation=operation.name,
            message_id=message_id,
        )
        if operation.one_way or not expects_reply:
            return None
        return self._reply_fault(
            _fault(FaultCode.RECEIVER, GENERIC_REASON, "InternalServiceFault"), message_id
        )

    def _internal(self, error: BaseException) -> Fault:
        if self.include_exception_detail:
            return _fault(
                FaultCode.RECEIVER,
                xml_safe(str(error)) or type(error).__name__,
                "InternalServiceFault",
                (exception_detail(error),),
            )
        return _fault(FaultCode.RECEIVER, GENERIC_REASON, "InternalServiceFault")

    def _reply_fault(self, fault: Fault, message_id: str | None, action: str = SOAP_FAULT_ACTION) -> Envelope:
        return fault_envelope(fault, SoapVersion.SOAP12, action, message_id)

    def _error(
        self, failure: Failure, operation: Operation, message_id: str | None, expects_reply: bool
    ) -> Envelope | None:
        error: BaseException = failure.value  # type: ignore[assignment]
        declared = operation.fault_for(error) if isinstance(error, DeclaredFault) else None
        if declared is not None and isinstance(error, DeclaredFault):
            self.log.info(
                "{operation} raised declared fault {fault}", operation=operation.name, fault=declared.name
            )
            try:
                detail = operation.encode_fault(error)
            except ContractError as e:
                return self._reply_fault(self._internal(e), message_id) if expects_reply else None
            fault = Fault(code=type(error).code, reason=xml_safe(error.reason()), detail=(detail,))
            if operation.one_way or not expects_reply:
                return None
            return self._reply_fault(fault, message_id, declared.action)
        self.log.failure(
            "{operation} raised an undeclared exception (message {message_id})",
            failure,
            operation=operation.name,
            message_id=message_id,
        )
        if operation.one_way or not expects_reply:
            return None
        return self._reply_fault(self._internal(error), message_id)


class ServiceHost:
    """
    An implementation of a contract, listening on a relay name.

    ::

        host = ServiceHost(Calculator(), ICalculator, "sb://relay.example/calc",
                           RequestReplyBinding(), SasCredentials(key_name, key))
        await host.open()       # fires after r:Registered
    """

    def __init__(
        self,
        implementation: object,
        interface: Any,
        address: str | ServiceAddress,
        binding: Binding | None = None,
        credentials: SasCredentials | None = None,
        *,
        include_exception_detail: bool = False,
        reactor: Any = None,
        endpoint: EndpointFactory | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        max_concurrent_calls: int = 64,
    ) -> None:
        """
        Check the implementation and prepare its registration; nothing is sent before L{open}.

        @param address: C{sb://host/name} (TLS), or C{ws://}/C{http://} for a plain development gateway.
        @param binding: L{bindings.settings.OneWayBinding}, L{bindings.settings.RequestReplyBinding}
            (default) or L{bindings.settings.MulticastBinding}: kind, policy and timeouts.
        @param reactor: provides the clock (back-off, registration timeout) and, by default, the sockets.
        @param endpoint: how to reach the gateway (tests pass in-memory endpoints).
        @raise zope.interface.exceptions.Invalid: when the implementation does not provide the contract.
        @raise TypeError: when the interface is not a contract, or not all one-way on a multicast binding.
        """
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.contract = contract_of(interface)
        verifyObject(interface, implementation)
        self.binding = binding if binding is not None else RequestReplyBinding()
        if self.binding.kind == MULTICAST:
            check_multicast(self.contract)
        self.address = parse_address(address) if isinstance(address, str) else address
        self.dispatcher = ServiceDispatcher(implementation, self.contract, include_exception_detail)
        self.wsdl = generate_wsdl(self.contract, self.address.http_url)
        registration = Registration(
            kind=self.binding.kind,
            client_auth=self.binding.client_auth.value,
            discovery=self.binding.discovery.value,
            display_name=self.binding.display_name,
            wsdl=self.wsdl,
        )
        clock: IReactorTime = reactor
        self.session = ListenerSession(
            self.address,
            registration,
            self.dispatcher,
            credentials,
            clock,
            endpoint or default_endpoint(reactor),
            open_timeout=self.binding.open_timeout,
            close_timeout=self.binding.close_timeout,
            backoff=backoff or Backoff(),
            rng=rng,
            max_concurrent=max_concurrent_calls,
        )

    def open(self) -> Deferred[Registered]:
        """Register with the gateway; fires with C{r:Registered} (the public address), keeps reconnecting."""
        return self.session.open()

    def close(self, timeout: float | None = None) -> Deferred[None]:
        """
        Stop listening gracefully: nothing new is routed here, calls in progress finish, then it closes.

        It waits at most C{timeout} seconds (the binding's C{close_timeout} by default); see
        L{bindings.session.ListenerSession.close}.
        """
        return self.session.close(timeout)

    def abort(self) -> Deferred[None]:
        """Stop listening at once: calls in progress fail at their callers with C{ListenerGone}."""
        return self.session.abort()

    @property
    def public_address(self) -> str | None:
        """The public URL the gateway reported, once registered."""
        return self.session.registered.address if self.session.registered is not None else None
