"""
What happens to a sender's envelope before routing, the same for WebSocket and HTTP senders (spec 6, 10.2).

Two steps, because authorization sits between them: L{open_envelope} parses the bytes through the hardened
parser and takes out the C{RelayAccessToken} carriers (the token may be needed to authorize the sender);
L{prepare} converts to SOAP 1.2, checks the addressing rules, resolves the action against the registered
contract and sets the delivery headers the listener sees. Every refusal is a L{Refusal} naming the gateway
fault to answer with, in the sender's SOAP version.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from bindings.addressing import (
    AddressingError,
    AddressingHeaders,
    Delivery,
    SenderInfo,
    check_anonymous,
    delivery_bytes,
    extract_relay_token,
    message_id_of,
    read_addressing,
    require,
    resolve_action,
    strip_headers,
)
from bindings.control import HTTP_AUTHORIZATION_TAG, http_authorization_header
from bindings.faultcodes import RelayFault
from bindings.safexml import Rule, XmlLimits
from bindings.settings import REQUEST_REPLY
from bindings.soap import Envelope, SoapError, SoapErrorKind, SoapVersion, parse_envelope, to_soap12
from bindings.wsdl import (
    WsdlError,
    WsdlOperation,
    describe_operations,
    parse_wsdl,
    port_type_hash,
    rewrite_addresses,
)

_DEFAULT_VERSION: Final = SoapVersion.SOAP12
_SERVED_URLS: Final = 4


class Refusal(Exception):
    """
    A sender's message is refused before it reaches a listener.

    @ivar kind: the gateway fault to answer with, or C{None} for a C{VersionMismatch} fault.
    @ivar message: a short, content-free cause for the fault's reason and the log.
    @ivar version: the SOAP version the answer is written in.
    @ivar relates_to: the refused message's id, when it could be read.
    """

    def __init__(
        self,
        kind: RelayFault | None,
        message: str,
        version: SoapVersion = _DEFAULT_VERSION,
        relates_to: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.version = version
        self.relates_to = relates_to

    @property
    def subcode(self) -> str:
        """The subcode name for logs (C{VersionMismatch} for a version mismatch)."""
        return self.kind.subcode_name if self.kind is not None else "VersionMismatch"


def refusal_from_soap_error(error: SoapError, announced: SoapVersion | None) -> Refusal:
    """Translate a codec error into the fault of spec 7.1 (size rule: C{MessageTooLarge})."""
    version = error.version or announced or _DEFAULT_VERSION
    if error.kind is SoapErrorKind.VERSION_MISMATCH:
        return Refusal(None, str(error), version)
    if error.xml_rule is Rule.SIZE:
        return Refusal(RelayFault.MESSAGE_TOO_LARGE, str(error), version)
    return Refusal(RelayFault.INVALID_MESSAGE, str(error), version)


@dataclass(frozen=True, slots=True)
class Operations:
    """
    The registered contract as routing needs it: action and request element of every operation.

    @ivar items: the operations read from the WSDL (L{bindings.wsdl.describe_operations}).
    """

    items: tuple[WsdlOperation, ...]
    _actions: dict[str, WsdlOperation] = field(init=False, repr=False, compare=False)
    _elements: dict[str, WsdlOperation] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Looked up for every message: build the tables once (the first operation wins, as a scan would).
        actions: dict[str, WsdlOperation] = {}
        elements: dict[str, WsdlOperation] = {}
        for op in self.items:
            if op.action is not None:
                actions.setdefault(op.action, op)
            if op.request_element is not None:
                elements.setdefault(f"{{{op.request_element[0]}}}{op.request_element[1]}", op)
        object.__setattr__(self, "_actions", actions)
        object.__setattr__(self, "_elements", elements)

    def by_action(self, action: str) -> WsdlOperation | None:
        """The operation whose request action is C{action}."""
        return self._actions.get(action)

    def by_element(self, tag: str) -> WsdlOperation | None:
        """The operation whose request wrapper is C{tag} (Clark notation)."""
        return self._elements.get(tag)

    @property
    def all_one_way(self) -> bool:
        """Whether no operation has an output (required on C{oneway} and C{multicast} names)."""
        return all(op.one_way for op in self.items)


@dataclass(frozen=True, slots=True)
class RegisteredContract:
    """
    A WSDL a listener registered, re-parsed by the gateway (spec section 9).

    @ivar root: the parsed document (never modified: C{?wsdl} rewrites a copy).
    @ivar operations: what routing needs from it.
    @ivar hash: its portType hash, part of the name's policy.
    """

    root: Any = field(repr=False)
    operations: Operations
    hash: str
    _served: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    def served(self, public_url: str) -> bytes:
        """
        The document C{?wsdl} serves: every address at C{public_url} (spec 9), built once per URL.

        Copying and writing a WSDL of up to 1 MiB on every C{GET ?wsdl} let a flood of them cost the
        gateway that much CPU; the document changes only with the contract (a new one is a new
        L{RegisteredContract}) or the name's public URL (the configuration), so it is kept, for at most
        L{_SERVED_URLS} URLs.
        """
        data = self._served.get(public_url)
        if data is None:
            if len(self._served) >= _SERVED_URLS:
                self._served.clear()
            data = self._served[public_url] = rewrite_addresses(self.root, public_url)
        return data


def register_contract(wsdl: bytes, kind: str, max_bytes: int) -> RegisteredContract:
    """
    Re-parse a registered WSDL with the hardened parser and check that it fits the name's kind.

    @raise WsdlError: when the document is refused, is not WSDL 1.1, or does not fit C{kind}.
    """
    root = parse_wsdl(wsdl, max_bytes)
    operations = describe_operations(root)
    problem = contract_problems(kind, operations)
    if problem is not None:
        raise WsdlError(problem)
    return RegisteredContract(root, Operations(operations), port_type_hash(root))


def open_envelope(
    data: bytes, *, announced: SoapVersion | None, charset: str | None, limits: XmlLimits
) -> tuple[Envelope, str | None]:
    """
    Parse a sender's envelope and take out its C{RelayAccessToken} headers (spec 10.2, carrier 3).

    @param announced: the version the Content-Type announced (HTTP), or SOAP 1.2 (WebSocket).
    @return: the envelope without token headers, and the first such header's token.
    @raise Refusal: C{InvalidMessage}, C{MessageTooLarge}, C{VersionMismatch} or C{Unauthorized}.
    """
    try:
        envelope = parse_envelope(data, announced, limits, charset)
    except SoapError as e:
        raise refusal_from_soap_error(e, announced) from None
    try:
        token, rest = extract_relay_token(envelope)
    except AddressingError as e:
        raise Refusal(e.kind, str(e), envelope.version, message_id_of(envelope)) from None
    return rest, token


@dataclass(frozen=True, slots=True)
class Prepared:
    """
    A message ready for routing.

    @ivar payload: the SOAP 1.2 envelope the listener receives (UTF-8).
    @ivar message_id: its C{wsa:MessageID} (the sender's, or a generated one).
    @ivar action: the resolved action.
    @ivar one_way: whether it is a datagram (no reply expected).
    @ivar duplicates: addressing headers that were repeated with different content (logged).
    """

    payload: bytes
    message_id: str
    action: str
    one_way: bool
    duplicates: tuple[str, ...] = ()


def _operation(
    operations: Operations | None, headers: AddressingHeaders, envelope: Envelope, **sources: str | None
) -> tuple[str, WsdlOperation | None]:
    body = envelope.first_body_child
    by_element = operations.by_element(body.tag) if operations is not None and body is not None else None
    try:
        action = resolve_action(
            headers.action,
            sources.get("media_action"),
            sources.get("soap_action"),
            by_element.action if by_element is not None else None,
        )
    except AddressingError as e:
        raise Refusal(e.kind, str(e), relates_to=headers.message_id) from None
    if action is None:
        if operations is None:
            raise Refusal(
                RelayFault.MESSAGE_ADDRESSING_HEADER_REQUIRED,
                "the message names no action",
                relates_to=headers.message_id,
            )
        raise Refusal(
            RelayFault.ACTION_NOT_SUPPORTED,
            "the message names no action and its body matches no operation",
            relates_to=headers.message_id,
        )
    if operations is None:
        return action, None
    operation = operations.by_action(action)
    if operation is None:
        raise Refusal(
            RelayFault.ACTION_NOT_SUPPORTED,
            f"the contract has no operation for action {action[:200]!r}",
            relates_to=headers.message_id,
        )
    return action, operation


def prepare(
    envelope: Envelope,
    *,
    kind: str,
    operations: Operations | None,
    to: str,
    sender: SenderInfo,
    strict: bool = False,
    require_message_id: bool = False,
    media_action: str | None = None,
    soap_action: str | None = None,
    authorization: str | None = None,
    headers: AddressingHeaders | None = None,
) -> Prepared:
    """
    Apply spec 6.1-6.4 to an envelope whose sender is authorized.

    @param kind: the entity kind; only C{requestreply} names have requests.
    @param operations: the registered contract, or C{None} (a multicast name registered without WSDL: any
        action is accepted, but one is required).
    @param to: the public URL of the name (C{wsa:To}).
    @param require_message_id: WebSocket senders must carry a C{wsa:MessageID}; HTTP senders get one.
    @param authorization: a non-SAS C{Authorization} header to forward (as C{r:HttpAuthorization}).
    @param headers: the addressing headers of a SOAP 1.2 C{envelope}, when the caller has read them already
        (tolerantly); they are read again only when C{strict} asks for the strict reading.
    @raise Refusal: an addressing fault, C{ActionMismatch}, C{ActionNotSupported} or C{InvalidMessage}.
    """
    source = envelope.version
    try:
        envelope = to_soap12(strip_headers(envelope, (HTTP_AUTHORIZATION_TAG,)))
        if headers is None or strict or source is not SoapVersion.SOAP12:
            headers = read_addressing(envelope, strict)
    except SoapError as e:
        raise refusal_from_soap_error(e, source) from None
    except AddressingError as e:
        raise Refusal(e.kind, str(e), source, message_id_of(envelope)) from None
    try:
        check_anonymous(headers)
        if require_message_id:
            require(headers, "MessageID")
    except AddressingError as e:
        raise Refusal(e.kind, str(e), source, headers.message_id) from None
    try:
        action, operation = _operation(
            operations, headers, envelope, media_action=media_action, soap_action=soap_action
        )
    except Refusal as e:
        e.version = source
        raise
    one_way = kind != REQUEST_REPLY or operation is None or operation.one_way
    delivery = Delivery(
        to=to, action=action, message_id=headers.message_id, request_reply=not one_way, sender=sender
    )
    try:
        extra = (http_authorization_header(authorization),) if authorization is not None else ()
        payload, message_id = delivery_bytes(envelope, delivery, extra)
    except ValueError:  # SOAPAction, action= or Authorization with a character XML cannot carry
        raise Refusal(
            RelayFault.INVALID_MESSAGE,
            "an HTTP header holds characters a SOAP header cannot carry",
            source,
            headers.message_id,
        ) from None
    return Prepared(payload, message_id, action, one_way, headers.duplicates)


def contract_problems(kind: str, operations: Iterable[WsdlOperation]) -> str | None:
    """
    Why a registered contract cannot serve a name of C{kind}, or C{None} when it can.

    C{oneway} and C{multicast} names carry datagrams only, so every operation must be one-way.
    """
    items = tuple(operations)
    if not items:
        return "the WSDL declares no operation"
    if kind != REQUEST_REPLY:
        two_way = [op.name for op in items if not op.one_way]
        if two_way:
            return f"a {kind} contract must be all one-way; not one-way: {', '.join(two_way[:10])}"
    return None
