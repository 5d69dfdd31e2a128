"""
WS-Addressing 1.0 headers, action resolution, the C{r:Sender} header and the sender's token carriers.

Reading is tolerant where real clients are sloppy (zeep repeats headers when its automatic addressing and
its plugin are both on: identical or first-wins copies, spec 6.4) and strict where the relay's own
guarantees depend on it: replies always return through the gateway, so C{ReplyTo}/C{FaultTo} must be
anonymous, and forged C{r:Sender} headers never reach a listener.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from lxml import etree

from bindings.faultcodes import RELAY_NS, WSA_NS, RelayFault
from bindings.safexml import CHUNK_SIZE, XmlLimits, new_pull_parser
from bindings.soap import SOAP12_NS, Envelope, envelope_bytes, xml_text
from relay.entropy import random16

ANONYMOUS: Final = "http://www.w3.org/2005/08/addressing/anonymous"
NONE_ADDRESS: Final = "http://www.w3.org/2005/08/addressing/none"
REPLY_RELATIONSHIP: Final = "http://www.w3.org/2005/08/addressing/reply"
CONNECT_NS: Final = "http://schemas.microsoft.com/netservices/2009/05/servicebus/connect"
WSSE_NS: Final = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SWT_VALUE_TYPE: Final = "http://schemas.xmlsoap.org/ws/2009/11/swt-token-profile-1.0"
BASE64_ENCODING: Final = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)
SAS_SCHEME: Final = "SharedAccessSignature"

_TEXT_HEADERS = ("To", "Action", "MessageID", "RelatesTo")
_ENDPOINT_HEADERS = ("ReplyTo", "FaultTo", "From")
_REPLACED_ON_DELIVERY = frozenset(f"{{{WSA_NS}}}{n}" for n in ("To", "Action", "MessageID", "ReplyTo"))
_SENDER_TAG: Final = f"{{{RELAY_NS}}}Sender"
_TOKEN_TAG: Final = f"{{{CONNECT_NS}}}RelayAccessToken"


class AddressingError(ValueError):
    """
    Addressing headers or token carriers are unusable.

    @ivar kind: the fault to answer with (an addressing fault, C{ActionMismatch} or C{Unauthorized}).
    @ivar header: the local name of the offending header, when there is one.
    """

    def __init__(self, kind: RelayFault, message: str, header: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.header = header


@dataclass(frozen=True, slots=True)
class AddressingHeaders:
    """
    The WS-Addressing message addressing properties of one envelope.

    @ivar reply_to: the C{ReplyTo} address, C{None} when the header is absent.
    @ivar fault_to: the C{FaultTo} address, C{None} when absent.
    @ivar duplicates: local names of headers that appeared more than once with different content (the
        first copy was used; the caller logs a warning).
    """

    to: str | None = None
    action: str | None = None
    message_id: str | None = None
    relates_to: str | None = None
    relationship_type: str = REPLY_RELATIONSHIP
    reply_to: str | None = None
    fault_to: str | None = None
    from_address: str | None = None
    duplicates: tuple[str, ...] = ()


def _canonical(element: etree._Element) -> bytes:
    """The bytes two copies of a header are compared by: equal for copies that differ only in prefixes."""
    try:
        data: bytes = etree.tostring(element, method="c14n", exclusive=True)
    except etree.C14NError:
        # Canonical XML has no form for a relative namespace URI, which XML allows: such a copy is compared
        # as it is written, after a byte no canonical form starts with.
        data = b"\0" + etree.tostring(element, with_tail=False)
    return data


_ADDRESS_TAG: Final = f"{{{WSA_NS}}}Address"
_WSA_PREFIX: Final = f"{{{WSA_NS}}}"
_MESSAGE_ID_TAG: Final = f"{{{WSA_NS}}}MessageID"
_RELATES_TO_TAG: Final = f"{{{WSA_NS}}}RelatesTo"
_SOAP12_ENVELOPE: Final = f"{{{SOAP12_NS}}}Envelope"
_SOAP12_HEADER: Final = f"{{{SOAP12_NS}}}Header"


def _endpoint_address(element: etree._Element, name: str) -> str:
    text = ""
    for child in element:
        if child.tag == _ADDRESS_TAG:
            text = (child.text or "").strip()
            break
    if not text:
        raise AddressingError(RelayFault.INVALID_ADDRESSING_HEADER, f"wsa:{name} has no wsa:Address", name)
    return text


def read_addressing(envelope: Envelope, strict: bool = False) -> AddressingHeaders:
    """
    Read the WS-Addressing headers of an envelope.

    @param strict: the entity's C{strict_addressing}: differing copies of a header are a fault instead of
        a warning.
    @raise AddressingError: C{InvalidAddressingHeader} for an endpoint without address, an empty value, or
        (strict) differing copies.
    """
    first: dict[str, etree._Element] = {}
    canonical_first: dict[str, bytes] = {}  # each first copy made canonical once, however many repeats
    duplicates: list[str] = []
    for block in envelope.headers:
        tag = block.tag
        if not tag.startswith(_WSA_PREFIX):
            continue
        name = tag[len(_WSA_PREFIX) :]
        if name in first:
            if name in duplicates:
                continue
            reference = canonical_first.get(name)
            if reference is None:
                reference = canonical_first[name] = _canonical(first[name])
            if reference != _canonical(block):
                if strict:
                    raise AddressingError(
                        RelayFault.INVALID_CARDINALITY, f"wsa:{name} appears more than once", name
                    )
                duplicates.append(name)
            continue
        first[name] = block
    values: dict[str, str | None] = {}
    for name in _TEXT_HEADERS:
        element = first.get(name)
        if element is None:
            values[name] = None
            continue
        text = (element.text or "").strip()
        if not text:
            raise AddressingError(RelayFault.INVALID_ADDRESSING_HEADER, f"wsa:{name} is empty", name)
        values[name] = text
    endpoints = {name: _endpoint_address(first[name], name) for name in _ENDPOINT_HEADERS if name in first}
    relates = first.get("RelatesTo")
    return AddressingHeaders(
        to=values["To"],
        action=values["Action"],
        message_id=values["MessageID"],
        relates_to=values["RelatesTo"],
        relationship_type=(relates.get("RelationshipType") if relates is not None else None)
        or REPLY_RELATIONSHIP,
        reply_to=endpoints.get("ReplyTo"),
        fault_to=endpoints.get("FaultTo"),
        from_address=endpoints.get("From"),
        duplicates=tuple(duplicates),
    )


def message_id_of(envelope: Envelope) -> str | None:
    """
    The first C{wsa:MessageID}'s text, without L{read_addressing}'s checks.

    For a fault about an envelope whose addressing headers are refused: it still relates to the message
    (spec 7.1), so a WebSocket sender can match it to the call.
    """
    found = envelope.find_headers(_MESSAGE_ID_TAG)
    text = (found[0].text or "").strip() if found else ""
    return text or None


def peek_message_id(data: bytes, limits: XmlLimits) -> str | None:
    """
    The C{wsa:MessageID} of a SOAP 1.2 envelope that is not parsed (too large, or refused by the parser).

    Only the first C{limits.max_bytes} bytes are read, with the hardened parser and the depth limit, and
    parsing stops at the end of the header: the fault still relates to the message (spec 7.1) without
    the limits the message broke being lifted to find out. C{None} when the header cannot be read so far.
    """
    return _peek_header(data, limits, _MESSAGE_ID_TAG)


def peek_relates_to(data: bytes, limits: XmlLimits) -> str | None:
    """The C{wsa:RelatesTo} of a SOAP 1.2 envelope that is not parsed, read as L{peek_message_id} reads."""
    return _peek_header(data, limits, _RELATES_TO_TAG)


def _peek_header(data: bytes, limits: XmlLimits, tag: str) -> str | None:
    parser = new_pull_parser()
    path: list[str] = []
    window = data[: limits.max_bytes]
    found: str | None = None
    try:
        for offset in range(0, len(window), CHUNK_SIZE):
            parser.feed(window[offset : offset + CHUNK_SIZE])
            found = _header_events(parser, path, limits.max_depth, tag)
            if found is not None:
                break
    except etree.XMLSyntaxError:  # what was read before the error still counts
        found = _header_events(parser, path, limits.max_depth, tag)
    return found or None


def _header_events(parser: etree.XMLPullParser, path: list[str], max_depth: int, tag: str) -> str | None:
    """The parse events so far: the header's text, C{""} to stop without one, C{None} to read on."""
    for event, element in parser.read_events():
        if event not in ("start", "end"):
            continue  # a namespace declaration
        found = _header_event(path, event, element, max_depth, tag)
        if found is not None:
            return found
    return None


def _header_event(
    path: list[str], event: str, element: etree._Element, max_depth: int, tag: str
) -> str | None:
    """One event; C{path} holds the tags of the open elements, so a header block ends at length 2."""
    if event == "start":
        path.append(element.tag)
        if len(path) > max_depth or path[:2] not in ([_SOAP12_ENVELOPE], [_SOAP12_ENVELOPE, _SOAP12_HEADER]):
            return ""  # too deep, not a SOAP 1.2 envelope, or past the header (its first child)
        return None
    path.pop()
    if len(path) == 2 and element.tag == tag:
        return (element.text or "").strip()
    return "" if len(path) < 2 else None


def check_anonymous(headers: AddressingHeaders) -> None:
    """
    Refuse reply endpoints other than anonymous: replies always return through the gateway (spec 6.1).

    @raise AddressingError: C{OnlyAnonymousAddressSupported}.
    """
    for name, address in (("ReplyTo", headers.reply_to), ("FaultTo", headers.fault_to)):
        if address is not None and address != ANONYMOUS:
            raise AddressingError(
                RelayFault.ONLY_ANONYMOUS_ADDRESS_SUPPORTED, f"wsa:{name} must be the anonymous address", name
            )


def require(headers: AddressingHeaders, *names: str) -> None:
    """
    Insist on headers (C{"MessageID"}, C{"RelatesTo"}, C{"Action"}, C{"To"}), spec section 4.

    @raise AddressingError: C{MessageAddressingHeaderRequired} naming the first missing one.
    """
    present = {
        "To": headers.to,
        "Action": headers.action,
        "MessageID": headers.message_id,
        "RelatesTo": headers.relates_to,
    }
    for name in names:
        if present[name] is None:
            raise AddressingError(
                RelayFault.MESSAGE_ADDRESSING_HEADER_REQUIRED, f"the wsa:{name} header is required", name
            )


def resolve_action(
    wsa_action: str | None,
    media_action: str | None = None,
    soap_action: str | None = None,
    body_action: str | None = None,
) -> str | None:
    """
    Pick the action of a request from its sources, in the order of spec 6.4.

    @param wsa_action: the C{wsa:Action} header.
    @param media_action: the SOAP 1.2 C{action} media-type parameter.
    @param soap_action: the C{SOAPAction} HTTP header, already unquoted (see L{bindings.soap.soap_action_value}).
    @param body_action: the action of the contract operation whose request element is the first body child.
    @return: the first source present, or C{None} when none is.
    @raise AddressingError: C{ActionMismatch} when two present sources disagree.
    """
    sources = [
        (name, value)
        for name, value in (
            ("wsa:Action", wsa_action),
            ("the action parameter", media_action),
            ("SOAPAction", soap_action),
            ("the body element", body_action),
        )
        if value
    ]
    if not sources:
        return None
    chosen_name, chosen = sources[0]
    for name, value in sources[1:]:
        if value != chosen:
            raise AddressingError(
                RelayFault.ACTION_MISMATCH, f"{chosen_name} and {name} name different actions"
            )
    return chosen


def _wsa(name: str, text: str | None = None) -> etree._Element:
    element = etree.Element(f"{{{WSA_NS}}}{name}", nsmap={"wsa": WSA_NS})
    element.text = text
    return element


def _endpoint(name: str, address: str) -> etree._Element:
    element = _wsa(name)
    etree.SubElement(element, f"{{{WSA_NS}}}Address").text = address
    return element


def addressing_headers(
    *,
    to: str | None = None,
    action: str | None = None,
    message_id: str | None = None,
    relates_to: str | None = None,
    reply_to_anonymous: bool = False,
) -> tuple[etree._Element, ...]:
    """Build WS-Addressing header blocks, in the order WCF writes them."""
    blocks: list[etree._Element] = []
    if action is not None:
        blocks.append(_wsa("Action", action))
    if message_id is not None:
        blocks.append(_wsa("MessageID", message_id))
    if relates_to is not None:
        blocks.append(_wsa("RelatesTo", relates_to))
    if reply_to_anonymous:
        blocks.append(_endpoint("ReplyTo", ANONYMOUS))
    if to is not None:
        blocks.append(_wsa("To", to))
    return tuple(blocks)


def new_message_id() -> str:
    """
    A fresh C{urn:uuid:} message id: a random (version 4) UUID, as C{uuid.uuid4()} makes it.

    Written out here because the C{uuid.UUID} object around the 16 random bytes cost more than the rest of
    a one-way call; the bytes still come from the kernel's CSPRNG (L{relay.entropy.random16}), so ids stay
    unguessable to other senders.
    """
    raw = bytearray(random16())
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"urn:uuid:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class SenderInfo:
    """
    Who sent a message, as the gateway tells the listener in C{r:Sender}.

    @ivar key_name: the authenticated key name, or C{anonymous}.
    @ivar tracking_id: the gateway's tracking id for the message.
    """

    key_name: str
    tracking_id: str


def sender_header(sender: SenderInfo) -> etree._Element:
    """The C{r:Sender} header block (not mustUnderstand)."""
    element = etree.Element(_SENDER_TAG, nsmap={"r": RELAY_NS})
    etree.SubElement(element, f"{{{RELAY_NS}}}KeyName").text = sender.key_name
    etree.SubElement(element, f"{{{RELAY_NS}}}TrackingId").text = sender.tracking_id
    return element


def read_sender(envelope: Envelope) -> SenderInfo | None:
    """The C{r:Sender} the gateway added, for the service side; C{None} when there is none."""
    for block in envelope.find_headers(_SENDER_TAG):
        key_name: str | None = None
        tracking_id: str | None = None
        for child in block:  # the first of each, as findtext would take it
            if child.tag == _KEY_NAME_TAG and key_name is None:
                key_name = child.text or ""
            elif child.tag == _TRACKING_ID_TAG and tracking_id is None:
                tracking_id = child.text or ""
        return SenderInfo(key_name=key_name or "", tracking_id=tracking_id or "")
    return None


_KEY_NAME_TAG: Final = f"{{{RELAY_NS}}}KeyName"
_TRACKING_ID_TAG: Final = f"{{{RELAY_NS}}}TrackingId"


@dataclass(frozen=True, slots=True)
class Delivery:
    """
    The headers the gateway sets on an envelope before a listener gets it (spec 6.1).

    @ivar to: the public URL of the name.
    @ivar action: the resolved action.
    @ivar message_id: the sender's id, or C{None} to generate one (HTTP senders only).
    @ivar request_reply: whether a reply is expected (adds an anonymous C{ReplyTo}).
    @ivar sender: what C{r:Sender} says.
    """

    to: str
    action: str
    message_id: str | None
    request_reply: bool
    sender: SenderInfo
    new_id: Callable[[], str] = field(default=new_message_id, compare=False, repr=False)


def prepare_for_listener(envelope: Envelope, delivery: Delivery) -> tuple[Envelope, str]:
    """
    Set the delivery headers on a SOAP 1.2 envelope; other sender headers are kept.

    Existing C{To}, C{Action}, C{MessageID} and C{ReplyTo} copies, any C{r:Sender} (a sender could forge
    one) and the C{RelayAccessToken} carriers are removed first.

    @return: the new envelope and the message id it carries.
    """
    message_id = delivery.message_id or delivery.new_id()
    kept = [
        h
        for h in envelope.headers
        if h.tag not in _REPLACED_ON_DELIVERY and h.tag not in (_SENDER_TAG, _TOKEN_TAG)
    ]
    ours = addressing_headers(
        to=delivery.to,
        action=delivery.action,
        message_id=message_id,
        reply_to_anonymous=delivery.request_reply,
    )
    return envelope.replace(headers=(*ours, *kept, sender_header(delivery.sender))), message_id


def _wsa_bytes(name: str, text: str) -> bytes:
    return f'<wsa:{name} xmlns:wsa="{WSA_NS}">{xml_text(text)}</wsa:{name}>'.encode()


_REPLY_TO_ANONYMOUS: Final = etree.tostring(_endpoint("ReplyTo", ANONYMOUS), encoding="utf-8")


def addressing_header_bytes(
    *,
    to: str | None = None,
    action: str | None = None,
    message_id: str | None = None,
    relates_to: str | None = None,
    reply_to_anonymous: bool = False,
) -> list[bytes]:
    """
    L{addressing_headers} already serialised, for L{bindings.soap.envelope_bytes}: the same bytes.

    The client library writes them for every call; building them as elements first cost more.
    """
    blocks: list[bytes] = []
    if action is not None:
        blocks.append(_wsa_bytes("Action", action))
    if message_id is not None:
        blocks.append(_wsa_bytes("MessageID", message_id))
    if relates_to is not None:
        blocks.append(_wsa_bytes("RelatesTo", relates_to))
    if reply_to_anonymous:
        blocks.append(_REPLY_TO_ANONYMOUS)
    if to is not None:
        blocks.append(_wsa_bytes("To", to))
    return blocks


def delivery_bytes(
    envelope: Envelope, delivery: Delivery, extra: Iterable[etree._Element] = ()
) -> tuple[bytes, str]:
    """
    The bytes of L{prepare_for_listener}'s envelope, with C{extra} header blocks after C{r:Sender}.

    The same envelope, byte for byte, without building the gateway's own header blocks as elements: they
    are written as text, and only the sender's blocks and body are serialised.

    @return: the envelope bytes and the message id they carry.
    """
    message_id = delivery.message_id or delivery.new_id()
    parts = [_wsa_bytes("Action", delivery.action), _wsa_bytes("MessageID", message_id)]
    if delivery.request_reply:
        parts.append(_REPLY_TO_ANONYMOUS)
    parts.append(_wsa_bytes("To", delivery.to))
    parts.extend(
        etree.tostring(h, encoding="utf-8")
        for h in envelope.headers
        if h.tag not in _REPLACED_ON_DELIVERY and h.tag not in (_SENDER_TAG, _TOKEN_TAG)
    )
    sender = delivery.sender
    parts.append(
        f'<r:Sender xmlns:r="{RELAY_NS}"><r:KeyName>{xml_text(sender.key_name)}</r:KeyName>'
        f"<r:TrackingId>{xml_text(sender.tracking_id)}</r:TrackingId></r:Sender>".encode()
    )
    parts.extend(etree.tostring(h, encoding="utf-8") for h in extra)
    return envelope_bytes(envelope.version, parts, envelope.body), message_id


def relay_token_header(token: str) -> etree._Element:
    """The C{RelayAccessToken} SOAP header WCF-era clients send, holding C{token}."""
    element = etree.Element(_TOKEN_TAG, nsmap={None: CONNECT_NS, "wsse": WSSE_NS})
    binary = etree.SubElement(element, f"{{{WSSE_NS}}}BinarySecurityToken")
    binary.set("ValueType", SWT_VALUE_TYPE)
    binary.set("EncodingType", BASE64_ENCODING)
    binary.text = base64.b64encode(token.encode("utf-8")).decode("ascii")
    return element


def extract_relay_token(envelope: Envelope) -> tuple[str | None, Envelope]:
    """
    Take the token out of C{RelayAccessToken} headers (spec 10.2, carrier 3).

    @return: the first header's token (or C{None}) and the envelope with every such header removed.
    @raise AddressingError: C{Unauthorized} when the header holds no decodable token.
    """
    carriers = envelope.find_headers(_TOKEN_TAG)
    if not carriers:
        return None, envelope
    rest = envelope.replace(headers=(h for h in envelope.headers if h.tag != _TOKEN_TAG))
    encoded: str = carriers[0].findtext(f"{{{WSSE_NS}}}BinarySecurityToken") or ""
    if not encoded.strip():
        raise AddressingError(RelayFault.UNAUTHORIZED, "RelayAccessToken holds no BinarySecurityToken")
    try:
        token = base64.b64decode("".join(encoded.split()), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and b64decode's own for non-ASCII text
        raise AddressingError(RelayFault.UNAUTHORIZED, "RelayAccessToken is not base64 of a token") from None
    return token, rest


class TokenSource(Enum):
    """Where a sender's token came from (spec 10.2), in order of precedence."""

    QUERY = "sb-wcf-token"
    SERVICE_BUS_HEADER = "ServiceBusAuthorization"
    SOAP_HEADER = "RelayAccessToken"
    AUTHORIZATION = "Authorization"


@dataclass(frozen=True, slots=True)
class TokenChoice:
    """
    The token to validate and what to do with the C{Authorization} header.

    @ivar token: the token text, or C{None} when none was presented.
    @ivar source: where it came from.
    @ivar forward_authorization: whether the C{Authorization} header goes on to the listener untouched.
    """

    token: str | None = field(repr=False)
    source: TokenSource | None
    forward_authorization: bool


def choose_token(
    query_token: str | None = None,
    service_bus_authorization: str | None = None,
    soap_token: str | None = None,
    authorization: str | None = None,
) -> TokenChoice:
    """
    Apply the carrier order of spec 10.2: the first carrier present wins.

    C{Authorization} is consumed only when it holds a C{SharedAccessSignature} and no other carrier is
    present; in every other case it is forwarded, so services can run their own authentication.
    """
    for source, value in (
        (TokenSource.QUERY, query_token),
        (TokenSource.SERVICE_BUS_HEADER, service_bus_authorization),
        (TokenSource.SOAP_HEADER, soap_token),
    ):
        if value:
            return TokenChoice(value, source, forward_authorization=authorization is not None)
    if authorization is not None and authorization.strip().split(" ", 1)[0].lower() == SAS_SCHEME.lower():
        return TokenChoice(authorization.strip(), TokenSource.AUTHORIZATION, forward_authorization=False)
    return TokenChoice(None, None, forward_authorization=authorization is not None)


def strip_headers(envelope: Envelope, tags: Iterable[str]) -> Envelope:
    """An envelope without the header blocks named in C{tags} (Clark notation)."""
    drop = frozenset(tags)
    return envelope.replace(headers=(h for h in envelope.headers if h.tag not in drop))
