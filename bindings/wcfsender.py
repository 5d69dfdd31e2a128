"""
The sender role of a C{$wcf} connection (L{SenderRole}): every text frame is one message to deliver.

Each frame becomes a prepared message for L{bindings.gateway.BindingsGateway.deliver}; the sender gets
back C{r:Delivered}, the reply, or a fault. While a listener's queue is full, or while the sender's own
answers back up, the sender is not read (L{bindings.wcfroles.ReadGate}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from bindings.addressing import (
    AddressingHeaders,
    SenderInfo,
    message_id_of,
    peek_message_id,
    read_addressing,
)
from bindings.control import (
    ACTION_RENEW_TOKEN,
    CONTROL_ACTIONS,
    delivered_bytes,
)
from bindings.faultcodes import RelayFault, RelayFaultError
from bindings.inbound import Refusal, RegisteredContract, open_envelope, prepare
from bindings.oneway import Delivered
from bindings.outlet import ISenderFlow
from bindings.requestreply import Reply
from bindings.safexml import MAX_DEPTH_CAP, XmlLimits, limits_for
from bindings.settings import (
    BINDING_KINDS,
    MESSAGE_BYTES,
    MULTICAST,
    BindingEntitySettings,
    ClientAuth,
)
from bindings.soap import Envelope, SoapVersion
from bindings.wcfroles import ReadGate, TokenWatch, renew_token
from relay.auth import Grant, Rights
from relay.entities import Entity, Namespace

if TYPE_CHECKING:
    from bindings.wcf import WcfProtocol


@implementer(IPushProducer)
class _HoldWhileBuffered:
    """Registered on a sender's own transport: stop reading it while what we write to it backs up."""

    def __init__(self, gate: ReadGate) -> None:
        self._gate = gate
        self._paused = False

    def pauseProducing(self) -> None:
        """Our writes to the sender back up."""
        if not self._paused:
            self._paused = True
            self._gate.hold()

    def resumeProducing(self) -> None:
        """The sender reads its answers again."""
        if self._paused:
            self._paused = False
            self._gate.release()

    def stopProducing(self) -> None:
        """The connection is gone; its role cleans up in C{onClose}."""


@implementer(ISenderFlow)
class SenderRole:
    """
    A sender on the WebSocket channel (our channel factory): every text frame is one message.

    @ivar grant: the handshake token's grant, or C{None} for an anonymous sender.
    """

    name = "sender"

    def __init__(
        self, protocol: WcfProtocol, namespace: Namespace, entity: Entity, grant: Grant | None
    ) -> None:
        self.protocol = protocol
        self.namespace = namespace
        self.entity: Entity | None = entity
        self.path = entity.name
        self.grant = grant
        self.frame_cap = MESSAGE_BYTES[entity.kind][1]
        self.tokens = TokenWatch(protocol, grant.expiry if grant is not None else None)
        self._gate: ReadGate | None = None
        self._pending: set[Deferred[Any]] = set()
        self._listener_holds = 0  # messages of its held back by full listener queues

    @classmethod
    def admit(cls, protocol: WcfProtocol, path: str, tokens: list[str]) -> SenderRole:
        """
        Check name and Send token at the handshake (none needed on a C{client_auth=anonymous} name).

        @raise RelayFaultError: C{NoSuchEntity}, C{Unauthorized}, C{Forbidden}.
        """
        names = protocol.factory.gateway.names
        namespace, match = names.resolve(protocol.host, path)
        if match.suffix:
            raise RelayFaultError(RelayFault.NO_SUCH_ENTITY, "No entity with this name")
        entity = match.entity
        settings: BindingEntitySettings = entity.settings
        grant = names.authorize(
            namespace,
            entity.name,
            entity.rules,
            protocol.host,
            tokens,
            Rights.SEND,
            anonymous_ok=settings.client_auth is ClientAuth.ANONYMOUS,
        )
        return cls(protocol, namespace, entity, grant)

    # ISenderFlow

    def pause_reading(self) -> None:
        """A listener's queue is full: stop reading this sender."""
        if self._gate is not None:
            self._listener_holds += 1
            self._gate.hold()

    def resume_reading(self) -> None:
        """The queue has room again."""
        if self._gate is not None and self._listener_holds > 0:
            self._listener_holds -= 1
            self._gate.release()

    # role

    @property
    def reading_held(self) -> bool:
        """Whether the sender is held back: the frames it sent after the message that held it must wait."""
        return self._gate is not None and self._gate.held

    @property
    def waiting_for_listener(self) -> bool:
        """
        Whether a message of its waits for room in a listener's queue (for at most C{send_timeout}).

        The sender is not read meanwhile, so its pong to the gateway's ping may be waiting unread too.
        """
        return self._listener_holds > 0

    def opened(self) -> None:
        """Watch the token; stop reading the sender while its answers back up."""
        self.tokens.start()
        transport = self.protocol.transport
        self._gate = ReadGate(transport, self.protocol.reading_released)
        transport.unregisterProducer()
        transport.registerProducer(_HoldWhileBuffered(self._gate), True)

    def message(self, payload: bytes) -> None:
        """Accept, refuse or route one message."""
        names = self.protocol.factory.gateway.names
        entity = names.store.get(self.namespace, self.path)
        if entity is None or entity.kind not in BINDING_KINDS:
            self._unread_fault(payload, RelayFault.NO_LISTENER, "No listener is connected")
            return
        self.entity = entity
        settings: BindingEntitySettings = entity.settings
        if len(payload) > settings.message_limit:
            self._unread_fault(
                payload,
                RelayFault.MESSAGE_TOO_LARGE,
                f"The message has {len(payload)} bytes; the name allows {settings.message_limit}",
            )
            return
        try:
            envelope, soap_token = open_envelope(
                payload, announced=SoapVersion.SOAP12, charset=None, limits=self._limits()
            )
        except Refusal as e:
            self._refused(e, payload)
            return
        try:
            headers = read_addressing(envelope)
        except ValueError as e:
            self.protocol.send_fault(RelayFault.INVALID_ADDRESSING_HEADER, str(e), message_id_of(envelope))
            return
        if headers.action == ACTION_RENEW_TOKEN:
            renew_token(self.protocol, self, envelope, headers.message_id, Rights.SEND)
            return
        if headers.action in CONTROL_ACTIONS:
            self.protocol.send_fault(
                RelayFault.ACTION_NOT_SUPPORTED, "Senders may only renew tokens", headers.message_id
            )
            return
        if self.protocol.factory.gateway.stopping():
            # New work while the gateway drains: refused, as HTTP senders are (503), so the drain can end
            # with what was under way rather than cut off what came last.
            self.protocol.send_fault(
                RelayFault.SERVER_BUSY, "The gateway is shutting down", headers.message_id
            )
            return
        grant = self.grant
        if grant is None and soap_token is not None:
            try:
                grant = names.authorize(
                    self.namespace, entity.name, entity.rules, self.protocol.host, [soap_token], Rights.SEND
                )
            except RelayFaultError as e:
                self.protocol.send_fault(e.kind, e.message, headers.message_id)
                return
        self._route(entity, envelope, grant, headers)

    @property
    def message_limit(self) -> int:
        """The name's message size limit, as it is now (or as last seen, for a name removed since)."""
        entity = self.protocol.factory.gateway.names.store.get(self.namespace, self.path)
        if entity is None or entity.kind not in BINDING_KINDS:
            entity = self.entity
        return entity.settings.message_limit if entity is not None else self.frame_cap  # type: ignore[no-any-return]

    def too_large(self, head: bytes, limit: int) -> None:
        """
        A message passed the name's limit while its frames came: refused at once, related to its MessageID.

        C{head} is its first C{limit} bytes; the rest of it is read and dropped (L{bindings.wcflimit}).
        """
        self._unread_fault(
            head,
            RelayFault.MESSAGE_TOO_LARGE,
            f"The message has more than {limit} bytes, which the name allows",
        )

    def _route(
        self, entity: Entity, envelope: Envelope, grant: Grant | None, headers: AddressingHeaders
    ) -> None:
        gateway = self.protocol.factory.gateway
        bound = gateway.names.bound(self.namespace, entity)
        contract: RegisteredContract | None = bound.contract
        if contract is None and bound.kind != MULTICAST:
            self.protocol.send_fault(RelayFault.NO_LISTENER, "No listener is connected", headers.message_id)
            return
        settings = bound.settings
        try:
            prepared = prepare(
                envelope,
                kind=bound.kind,
                operations=contract.operations if contract is not None else None,
                to=gateway.names.public_url(self.namespace, entity.name),
                sender=SenderInfo(grant.key_name if grant else "anonymous", self.protocol.tracking_id),
                strict=settings.strict_addressing,
                require_message_id=True,
                headers=headers,
            )
        except Refusal as e:
            self._refused(e)
            return
        if prepared.duplicates:  # as often as it sends: within the connection's budget of such lines
            self.protocol.message_lines().emit(
                self.protocol.logger,
                LogLevel.warn,
                "sender {tracking_id} repeated addressing headers {names} with different values",
                tracking_id=self.protocol.tracking_id,
                names=",".join(prepared.duplicates),
            )
        message_id = prepared.message_id
        result = gateway.deliver(bound, prepared, self.protocol.tracking_id, self)
        if not result.called:  # multicast answers at once
            self._pending.add(result)
        result.addCallbacks(
            self._answer, self._failed, callbackArgs=(message_id, result), errbackArgs=(message_id, result)
        )

    def _answer(self, outcome: Delivered | Reply, message_id: str, result: Deferred[Any]) -> None:
        self._pending.discard(result)
        entity = self.entity
        allowance = entity.settings.message_limit if entity is not None else self.frame_cap
        if self.protocol.answers_backlogged(allowance):  # closed: what it still waits for is withdrawn
            self._withdraw_pending()
            return
        if isinstance(outcome, Reply):
            self.protocol.send_text(outcome.payload)
        else:
            self.protocol.send_text(delivered_bytes(outcome.count, message_id))

    def _failed(self, failure: Failure, message_id: str, result: Deferred[Any]) -> None:
        self._pending.discard(result)
        if failure.check(CancelledError):
            return
        error = failure.value
        if isinstance(error, RelayFaultError):
            self.protocol.send_fault(error.kind, error.message, message_id)
            return
        self.protocol.logger.failure(
            "delivering {message_id} failed",
            failure,
            message_id=message_id,
            tracking_id=self.protocol.tracking_id,
        )
        self.protocol.send_fault(
            RelayFault.SERVER_BUSY, "The gateway could not deliver the message", message_id
        )

    def _limits(self) -> XmlLimits:
        """The name's size and depth limits, as last seen (a name removed since keeps its last ones)."""
        if self.entity is None:  # pragma: no cover - a sender is admitted with its entity
            return limits_for(self.frame_cap, MAX_DEPTH_CAP)
        settings: BindingEntitySettings = self.entity.settings
        return limits_for(settings.message_limit, settings.max_depth)

    def _unread_fault(self, payload: bytes, kind: RelayFault, message: str) -> None:
        """
        A fault about a message refused before it was parsed, related to its MessageID all the same.

        A WebSocket sender matches faults to calls by C{RelatesTo} (spec 7.1); without it the call waited
        for its timeout. The id is read from the header within the name's limits (L{peek_message_id}).
        """
        self.protocol.send_fault(kind, message, peek_message_id(payload, self._limits()))

    def _refused(self, refusal: Refusal, payload: bytes | None = None) -> None:
        if refusal.kind is None:
            self.protocol.send_version_mismatch(refusal.message)
            return
        if refusal.relates_to is None and payload is not None:
            self._unread_fault(payload, refusal.kind, refusal.message)
            return
        self.protocol.send_fault(refusal.kind, refusal.message, refusal.relates_to)

    def closed(self, code: int | None) -> None:
        """The sender left: withdraw what it still waits for."""
        self.tokens.stop()
        self._withdraw_pending()
        self.protocol.logger.info(
            "sender {tracking_id} left {entity} (close code {code})",
            tracking_id=self.protocol.tracking_id,
            entity=self.path,
            code=code,
        )

    def _withdraw_pending(self) -> None:
        pending, self._pending = list(self._pending), set()
        for result in pending:
            result.cancel()
