"""
The listener role of a C{$wcf} connection, and what it shares with the sender role.

A listener (L{ListenerRole}) must send C{r:Register} first; it is then routed to, with its
L{bindings.outlet.Outlet} as the socket's push producer, and answers requests with replies. The sender
role is L{bindings.wcfsender.SenderRole}. Both are paused with L{ReadGate}, renew tokens with
C{r:RenewToken} (L{renew_token}) and are closed with 1008 when their token lapses (L{TokenWatch}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from twisted.internet.interfaces import IDelayedCall
from zope.interface import implementer

from bindings.addressing import peek_relates_to, read_addressing
from bindings.control import (
    ACTION_REGISTER,
    ACTION_RENEW_TOKEN,
    ACTION_UNREGISTER,
    CONTROL_ACTIONS,
    ControlError,
    Registered,
    parse_register,
    parse_renew_token,
    registered_envelope,
    token_renewed_envelope,
    unregistered_envelope,
)
from bindings.faultcodes import RelayFault, RelayFaultError
from bindings.faults import FaultFormatError, gateway_fault, parse_fault
from bindings.inbound import RegisteredContract, register_contract
from bindings.names import BoundName, ListenerPolicy
from bindings.oneway import OneWayRouter
from bindings.outlet import IListenerConnection, Outlet
from bindings.requestreply import RequestReplyRouter
from bindings.safexml import Rule, limits_for
from bindings.settings import (
    BINDING_KINDS,
    MESSAGE_BYTES,
    MULTICAST,
    BindingEntitySettings,
    ClientAuth,
    Discovery,
)
from bindings.soap import Envelope, SoapError, SoapVersion, parse_envelope
from bindings.wsdl import WSDL_DEFAULT_BYTES, WsdlError
from relay.auth import Grant, Rights
from relay.entities import Entity, Namespace
from relay.errors import CloseCode

if TYPE_CHECKING:
    from bindings.wcf import WcfProtocol
    from bindings.wcfsender import SenderRole

REGISTER_FRAME_CAP: Final = 2 * 1024 * 1024
"""Largest first frame of a listener whose kind is not known yet (a 1 MiB WSDL in base64 fits)."""


class ReadGate:
    """
    Counted pauses of one transport's reading: any holder keeps the socket paused until all release it.

    Outlets hold a sender back once per waiting message (spec 5) and the sender's own transport holds it
    while replies to it cannot be written; both share this gate.
    """

    def __init__(self, transport: Any, released: Callable[[], object] | None = None) -> None:
        """
        Gate C{transport}'s reading.

        @param released: called after the last holder released (the transport reads again).
        """
        self._transport = transport
        self._released = released
        self._holds = 0

    @property
    def held(self) -> bool:
        """Whether a holder keeps the transport paused."""
        return self._holds > 0

    def hold(self) -> None:
        """Stop reading (first holder)."""
        self._holds += 1
        if self._holds == 1:
            self._transport.pauseProducing()

    def release(self) -> None:
        """Read again once the last holder released."""
        if self._holds == 0:
            return
        self._holds -= 1
        if self._holds == 0:
            self._transport.resumeProducing()
            if self._released is not None:
                self._released()


class TokenWatch:
    """Closes a connection with 1008 when its token lapses, unless C{r:RenewToken} moved the expiry."""

    def __init__(self, protocol: WcfProtocol, expiry: int | None) -> None:
        self._protocol = protocol
        self._call: IDelayedCall | None = None
        self.expiry = expiry

    def start(self, expiry: int | None = None) -> None:
        """(Re)arm the timer for C{expiry} (default: the current one)."""
        self.stop()
        if expiry is not None:
            self.expiry = expiry
        if self.expiry is not None:
            clock = self._protocol.factory.gateway.clock
            self._call = clock.callLater(max(0.0, self.expiry - clock.seconds()), self._expired)

    def stop(self) -> None:
        """Disarm."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _expired(self) -> None:
        self._call = None
        self._protocol.logger.info(
            "{role} {tracking_id} token expired without renewal",
            role=self._protocol.role_name,
            tracking_id=self._protocol.tracking_id,
        )
        self._protocol.close_with(CloseCode.POLICY_VIOLATION, "Token expired")


def _registered_settings(entity: Entity | None) -> BindingEntitySettings | None:
    return entity.settings if entity is not None else None  # type: ignore[no-any-return]


@implementer(IListenerConnection)
class ListenerRole:
    """
    A listener (service host, subscriber, bridge): C{r:Register} first, then replies and token renewals.

    @ivar listener_id: the connection's tracking id (implements L{IListenerConnection}).
    @ivar bound: the name it serves, once registered.
    """

    name = "listener"

    def __init__(
        self, protocol: WcfProtocol, namespace: Namespace, path: str, entity: Entity | None, grant: Grant
    ) -> None:
        self.protocol = protocol
        self.namespace = namespace
        self.path = path
        self.entity = entity
        self.listener_id = protocol.tracking_id
        self.bound: BoundName | None = None
        self.frame_cap = MESSAGE_BYTES[entity.kind][1] if entity is not None else REGISTER_FRAME_CAP
        self.tokens = TokenWatch(protocol, grant.expiry)
        self._outlet: Outlet | None = None
        self._register_timer: IDelayedCall | None = None

    @classmethod
    def admit(cls, protocol: WcfProtocol, path: str, tokens: list[str]) -> ListenerRole:
        """
        Check name, Listen token and quota at the handshake.

        @raise RelayFaultError: C{NoSuchEntity}, C{Unauthorized}, C{Forbidden}, C{QuotaExceeded}.
        """
        names = protocol.factory.gateway.names
        namespace, name, entity = names.listener_target(protocol.host, path)
        rules = entity.rules if entity is not None else ()
        grant = names.authorize(namespace, name, rules, protocol.host, tokens, Rights.LISTEN)
        assert grant is not None  # noqa: S101 - listeners always need a token
        names.check_quota(namespace, entity)
        return cls(protocol, namespace, name, entity, grant)

    # IListenerConnection

    @property
    def accepting(self) -> bool:
        """Whether it takes new messages: a closing or leaving one is still registered, but takes nothing more."""
        return not self.leaving and self.protocol.state == self.protocol.STATE_OPEN  # type: ignore[no-any-return]

    @property
    def leaving(self) -> bool:
        """Whether it sent C{r:Unregister}: registered until it closes, but routed nothing new (its outlet is sealed)."""
        return self._outlet is not None and self._outlet.sealed

    def send_envelope(self, payload: bytes) -> bool:
        """Write one routed envelope to the listener; C{False} once its socket is closing."""
        return self.protocol.send_text(payload)

    def disconnect(self, code: int, reason: str) -> None:
        """Close the listener's socket (queue overflow, shutdown)."""
        self.protocol.close_with(code, reason)

    # role

    def opened(self) -> None:
        """Wait for C{r:Register}; watch the token."""
        self.tokens.start()
        clock = self.protocol.factory.gateway.clock
        self._register_timer = clock.callLater(self.protocol.factory.register_timeout, self._register_late)

    def _register_late(self) -> None:
        self._register_timer = None
        self.protocol.logger.info("listener {tracking_id} never registered", tracking_id=self.listener_id)
        self.protocol.close_with(CloseCode.POLICY_VIOLATION, "No r:Register within the registration timeout")

    def _refuse_registration(self, kind: RelayFault, message: str, relates_to: str | None) -> None:
        self.protocol.send_fault(kind, message, relates_to)
        self.protocol.close_with(CloseCode.POLICY_VIOLATION, f"Registration refused: {kind.subcode_name}")

    def message(self, payload: bytes) -> None:
        """Handle one frame from the listener."""
        settings = _registered_settings(self.entity)
        depth = settings.max_depth if settings is not None else 64
        limit = self.message_limit
        if self.bound is not None and len(payload) > limit:
            self._too_large(payload, limit, f"the reply has {len(payload)} bytes; the name allows {limit}")
            return
        try:
            # with the name's limit, not the kind's cap: what its blocks inherit counts against it too
            envelope = parse_envelope(payload, None, limits_for(limit, depth))
            headers = read_addressing(envelope)
        except (SoapError, ValueError) as e:
            if self.bound is None:
                self._refuse_registration(RelayFault.INVALID_MESSAGE, str(e), None)
            elif isinstance(e, SoapError) and e.xml_rule is Rule.SIZE:
                self._too_large(payload, limit, f"the reply is too large: {e}")
            else:
                self.protocol.send_fault(RelayFault.INVALID_MESSAGE, str(e))
            return
        if self.bound is None:
            if headers.action != ACTION_REGISTER:
                self._refuse_registration(
                    RelayFault.INVALID_MESSAGE, "The first message must be r:Register", headers.message_id
                )
            else:
                self._register(envelope, headers.message_id)
            return
        if headers.action == ACTION_RENEW_TOKEN:
            renew_token(self.protocol, self, envelope, headers.message_id, Rights.LISTEN)
        elif headers.action == ACTION_UNREGISTER:
            self._unregister(headers.message_id)
        elif headers.action in CONTROL_ACTIONS:
            self.protocol.send_fault(
                RelayFault.ACTION_NOT_SUPPORTED,
                "Listeners may only renew tokens and unregister",
                headers.message_id,
            )
        else:
            self._answer(envelope, payload, headers.relates_to)

    def _register(self, envelope: Envelope, message_id: str | None) -> None:
        if message_id is None:
            self._refuse_registration(
                RelayFault.MESSAGE_ADDRESSING_HEADER_REQUIRED, "r:Register needs a wsa:MessageID", None
            )
            return
        settings = _registered_settings(self.entity)
        max_wsdl = settings.max_wsdl_bytes if settings is not None else WSDL_DEFAULT_BYTES
        try:
            registration = parse_register(envelope, max_wsdl)
            if registration.kind not in BINDING_KINDS:
                raise ControlError(f"r:Kind must be one of {', '.join(BINDING_KINDS)}")
            client_auth, discovery = ClientAuth(registration.client_auth), Discovery(registration.discovery)
            contract: RegisteredContract | None = None
            if registration.wsdl is not None:
                contract = register_contract(registration.wsdl, registration.kind, max_wsdl)
            elif registration.kind != MULTICAST:
                raise ControlError(f"a {registration.kind} listener must register its contract's WSDL")
        except (ControlError, WsdlError, ValueError) as e:
            self._refuse_registration(RelayFault.INVALID_MESSAGE, str(e), message_id)
            return
        policy = ListenerPolicy(
            kind=registration.kind,
            client_auth=client_auth,
            discovery=discovery,
            display_name=registration.display_name,
            contract=contract,
            contract_hash=contract.hash if contract is not None else None,
        )
        names = self.protocol.factory.gateway.names
        try:
            bound, outlet = names.register(self.namespace, self.path, policy, self)
        except RelayFaultError as e:
            self._refuse_registration(e.kind, e.message, message_id)
            return
        if self._register_timer is not None and self._register_timer.active():
            self._register_timer.cancel()
        self._register_timer = None
        self.bound, self.entity = bound, bound.entity
        self._outlet = outlet
        self.frame_cap = MESSAGE_BYTES[bound.kind][1]
        self.protocol.maxMessagePayloadSize = self.frame_cap
        transport = self.protocol.transport
        transport.unregisterProducer()
        transport.registerProducer(outlet, True)
        address = names.public_url(self.namespace, bound.entity.name)
        self.protocol.send_envelope(
            registered_envelope(Registered(address, bound.entity.name, bound.kind), message_id)
        )

    def _unregister(self, message_id: str | None) -> None:
        """
        C{r:Unregister}: route nothing new to this listener; answer C{r:Unregistered} once its queue is written.

        The answer is a fence (L{bindings.control.unregister_envelope}): the listener serves what came
        before it, then closes; replies to requests in flight are still taken until it does. A request or
        message for the name now goes to another listener, or fails with C{ListenerGone} when none is left.
        """
        bound, outlet = self.bound, self._outlet
        assert bound is not None and outlet is not None  # noqa: S101 - only called once registered
        if message_id is None:
            self.protocol.send_fault(
                RelayFault.MESSAGE_ADDRESSING_HEADER_REQUIRED, "r:Unregister needs a wsa:MessageID"
            )
            return
        if not outlet.sealed:
            self.protocol.logger.info(
                "listener {listener_id} leaving {entity}: {queued} messages still to write",
                listener_id=self.listener_id,
                entity=bound.entity.name,
                queued=outlet.queued_messages + outlet.waiting_senders,
            )

        def drained() -> None:
            self.protocol.send_answer(unregistered_envelope(message_id), bound.settings.message_limit)

        outlet.seal(drained)

    @property
    def message_limit(self) -> int:
        """The name's message size limit once registered; before, the largest C{r:Register} taken."""
        return self.bound.settings.message_limit if self.bound is not None else self.frame_cap

    def too_large(self, head: bytes, limit: int) -> None:
        """
        A message passed the name's limit while its frames came: a reply is refused at once.

        The listener gets C{MessageTooLarge}, and so does the caller the reply was for (its C{RelatesTo}
        is read from C{head}, the message's first C{limit} bytes); the rest is read and dropped.
        """
        message = f"the reply has more than {limit} bytes, which the name allows"
        if self.bound is None:
            self._refuse_registration(RelayFault.MESSAGE_TOO_LARGE, message, None)
            return
        self._too_large(head, limit, message)

    def _too_large(self, data: bytes, limit: int, message: str) -> None:
        """
        Refuse a registered listener's message over the name's limit: C{MessageTooLarge} to it and its caller.

        The caller is found by the C{RelatesTo} read from the first C{limit} bytes of C{data}, unparsed.
        """
        bound = self.bound
        assert bound is not None  # noqa: S101 - only called once registered
        relates_to = peek_relates_to(data, limits_for(limit, bound.settings.max_depth))
        router = self._reply_router(relates_to)
        if router is None:
            return
        if relates_to is None:
            self.protocol.send_fault(RelayFault.MESSAGE_TOO_LARGE, message)
            return
        self._refuse_reply(router, relates_to, RelayFault.MESSAGE_TOO_LARGE, message)

    def _answer(self, envelope: Envelope, payload: bytes, relates_to: str | None) -> None:
        bound = self.bound
        assert bound is not None  # noqa: S101 - only called once registered
        router = self._reply_router(relates_to)
        if router is None:
            return
        if relates_to is None:
            self.protocol.send_fault(
                RelayFault.MESSAGE_ADDRESSING_HEADER_REQUIRED, "A reply needs a wsa:RelatesTo header"
            )
            return
        problem = _reply_problem(envelope)
        if problem is not None:
            self._refuse_reply(router, relates_to, *problem)
            return
        router.reply(self, relates_to, payload, self.protocol.message_lines())

    @property
    def awaited(self) -> bool:
        """
        Whether callers wait for this listener's replies (request/reply calls in flight on it).

        A service host at its C{max_concurrent_calls} stops reading until a call ends, so the gateway's
        pings wait unread behind the requests, however long the calls take; each call is bounded by the
        name's C{request_timeout}, which fails it if the host is gone.
        """
        bound = self.bound
        router = bound.router if bound is not None else None
        return isinstance(router, RequestReplyRouter) and router.in_flight(self) > 0

    def _reply_router(self, relates_to: str | None) -> RequestReplyRouter | None:
        """The name's request/reply router; on other kinds what a listener sends is logged and dropped."""
        bound = self.bound
        assert bound is not None  # noqa: S101 - only called once registered
        router = bound.router
        if isinstance(router, RequestReplyRouter):
            return router
        if isinstance(router, OneWayRouter):
            router.unexpected_reply(self, relates_to, self.protocol.message_lines())
        else:
            self.protocol.log_message_line(
                "dropped a message from subscriber {listener_id} of {entity}",
                listener_id=self.listener_id,
                entity=bound.entity.name,
            )
        return None

    def _refuse_reply(
        self, router: RequestReplyRouter, relates_to: str, kind: RelayFault, message: str
    ) -> None:
        """A reply that cannot be forwarded: the listener gets the fault, and so does the caller."""
        self.protocol.send_fault(kind, message, relates_to)
        payload = gateway_fault(
            kind,
            SoapVersion.SOAP12,
            path=self.path,
            tracking_id=self.listener_id,
            message=f"The listener's reply was refused: {message}",
            relates_to=relates_to,
        ).to_bytes()
        router.reply(self, relates_to, payload, self.protocol.message_lines())

    def closed(self, code: int | None) -> None:
        """The socket is gone: stop routing to it; its pending requests fail with C{ListenerGone}."""
        self.tokens.stop()
        if self._register_timer is not None and self._register_timer.active():
            self._register_timer.cancel()
        self._register_timer = None
        if self.bound is not None:
            self.protocol.factory.gateway.names.unregister(self.bound, self)
        self.protocol.logger.info(
            "listener {listener_id} offline from {entity} (close code {code})",
            listener_id=self.listener_id,
            entity=self.path,
            code=code,
        )


def _reply_problem(envelope: Envelope) -> tuple[RelayFault, str] | None:
    """Why a listener's reply (within its name's limit) cannot be forwarded: not SOAP 1.2, or a malformed fault."""
    if envelope.version is not SoapVersion.SOAP12:
        return RelayFault.INVALID_MESSAGE, "listeners answer in SOAP 1.2"
    if envelope.is_fault:
        try:
            parse_fault(envelope.body[0], SoapVersion.SOAP12)
        except FaultFormatError as e:
            return RelayFault.INVALID_MESSAGE, f"the fault is malformed: {e}"
    return None


def renew_token(
    protocol: WcfProtocol,
    role: ListenerRole | SenderRole,
    envelope: Envelope,
    message_id: str | None,
    needed: Rights,
) -> None:
    """Swap a connection's token (C{r:RenewToken}); an invalid one is refused and the old one kept."""
    names = protocol.factory.gateway.names
    entity = role.entity
    try:
        token = parse_renew_token(envelope)
        grant = names.authorize(
            role.namespace,
            role.path,
            entity.rules if entity is not None else (),
            protocol.host,
            [token],
            needed,
        )
    except ControlError as e:
        protocol.send_fault(RelayFault.INVALID_MESSAGE, str(e), message_id)
        return
    except RelayFaultError as e:
        protocol.send_fault(e.kind, f"Invalid renewed token: {e.message}", message_id)
        return
    assert grant is not None  # noqa: S101 - a token was presented
    role.tokens.start(grant.expiry)
    protocol.log_message_line(
        "{role} {tracking_id} renewed its token until {expiry}",
        role=role.name,
        tracking_id=protocol.tracking_id,
        expiry=grant.expiry,
    )
    if message_id is not None:
        settings = _registered_settings(entity)
        allowance = settings.message_limit if settings is not None else role.frame_cap
        protocol.send_answer(token_renewed_envelope(grant.expiry, message_id), allowance)
