"""An HTTP SOAP request (bindings.inbound): a fault in the sender's version, or what the listener gets keeps it all."""

from __future__ import annotations

from lxml import etree

from bindings.addressing import CONNECT_NS, SenderInfo, read_addressing, read_sender
from bindings.contracts import contract_of
from bindings.control import HTTP_AUTHORIZATION_TAG, read_http_authorization
from bindings.faultcodes import RELAY_NS, WSA_NS, FaultCode
from bindings.faults import gateway_fault, parse_fault, version_mismatch
from bindings.inbound import Operations, Prepared, Refusal, open_envelope, prepare
from bindings.safexml import MAX_DEPTH_CAP, XmlLimits
from bindings.settings import REQUEST_REPLY
from bindings.soap import Envelope, SoapError, SoapVersion, classify_request, parse_envelope
from bindings.wsdl import describe_operations, generate_wsdl, parse_wsdl
from tests.bindings.calculator import ICalculator

OPERATIONS = Operations(
    describe_operations(parse_wsdl(generate_wsdl(contract_of(ICalculator), "sb://x/calc")))
)
TO = "https://relay.example/calc"
SENDER = SenderInfo("sender-key", "TRACK")
LIMITS = XmlLimits(max_bytes=16 * 1024, max_depth=16)

# The first byte picks the framing: Content-Type, SOAPAction and Authorization, as senders write them.
CONTENT_TYPES = (
    "text/xml; charset=utf-8",
    "application/soap+xml; charset=utf-8",
    'application/soap+xml; charset=utf-8; action="urn:example:calc/ICalculator/Add"',
    "text/xml",
    "application/soap+xml; action=urn:other",
    "text/xml; charset=utf-16",
    "application/soap+xml; charset=UTF-16",
    "text/plain",
)
SOAP_ACTIONS = (None, '"urn:example:calc/ICalculator/Add"', '""', "urn:example:calc/ICalculator/Notify")
AUTHORIZATIONS = (None, "Basic dXNlcjpwYXNz")
_FORWARDED = frozenset({f"{{{WSA_NS}}}{n}" for n in ("To", "Action", "MessageID", "ReplyTo")})
_REMOVED = _FORWARDED | {f"{{{RELAY_NS}}}Sender", f"{{{CONNECT_NS}}}RelayAccessToken", HTTP_AUTHORIZATION_TAG}


def _same(a: etree._Element, b: etree._Element, top: bool = True) -> bool:
    """The same names, attributes, text and children (prefixes aside; C14N refuses relative namespaces)."""
    return (
        a.tag == b.tag
        and dict(a.attrib) == dict(b.attrib)
        and a.text == b.text
        and (top or a.tail == b.tail)
        and len(a) == len(b)
        and all(_same(x, y, False) for x, y in zip(a, b, strict=True))
    )


def check_refusal(refusal: Refusal, announced: SoapVersion) -> None:
    """The fault a refusal is answered with: in the sender's version, with the refusal's Code."""
    assert refusal.version is announced, (refusal.version, announced, refusal.message)
    if refusal.kind is None:
        envelope = version_mismatch(refusal.version, "TRACK")
        expected_code = FaultCode.VERSION_MISMATCH
    else:
        envelope = gateway_fault(
            refusal.kind,
            refusal.version,
            path="calc",
            tracking_id="TRACK",
            message=refusal.message,
            relates_to=refusal.relates_to,
        )
        expected_code = refusal.kind.code
    answer = parse_envelope(envelope.to_bytes(), refusal.version, XmlLimits(1 << 20, MAX_DEPTH_CAP))
    fault = parse_fault(answer.body[0], refusal.version)
    assert fault.code is expected_code, (fault.code, expected_code)


def check(data: bytes) -> None:
    if not data:
        return
    framing_byte, body = data[0], data[1:]
    content_type = CONTENT_TYPES[framing_byte % len(CONTENT_TYPES)]
    soap_action = SOAP_ACTIONS[(framing_byte >> 3) % len(SOAP_ACTIONS)]
    authorization = AUTHORIZATIONS[(framing_byte >> 5) & 1]
    strict = bool(framing_byte & 0x40)
    operations = OPERATIONS if not framing_byte & 0x80 else None
    try:
        framing = classify_request(content_type, soap_action)
    except SoapError:
        assert content_type == "text/plain"
        return
    announced = framing.version
    try:
        envelope, _token = open_envelope(body, announced=announced, charset=framing.charset, limits=LIMITS)
        prepared = prepare(
            envelope,
            kind=REQUEST_REPLY,
            operations=operations,
            to=TO,
            sender=SENDER,
            strict=strict,
            media_action=framing.media_action,
            soap_action=framing.soap_action,
            authorization=authorization,
        )
    except Refusal as refusal:
        check_refusal(refusal, announced)
        return
    check_delivered(envelope, prepared, authorization)


def check_delivered(envelope: Envelope, prepared: Prepared, authorization: str | None) -> None:
    """What the listener receives keeps the sender's headers and body and carries nothing forged."""
    delivered = parse_envelope(prepared.payload, SoapVersion.SOAP12, XmlLimits(1 << 22, MAX_DEPTH_CAP))
    headers = read_addressing(delivered, strict=True)
    assert headers.to == TO
    assert headers.action == prepared.action
    assert headers.message_id == prepared.message_id
    assert (headers.reply_to is not None) == (not prepared.one_way)
    assert read_sender(delivered) == SENDER
    assert len(delivered.find_headers(f"{{{RELAY_NS}}}Sender")) == 1
    assert delivered.find_headers(f"{{{CONNECT_NS}}}RelayAccessToken") == ()
    assert read_http_authorization(delivered) == authorization
    kept = [h for h in envelope.headers if h.tag not in _REMOVED]
    theirs = [h for h in delivered.headers if h.tag not in _REMOVED]
    assert len(theirs) == len(kept), (len(theirs), len(kept))
    if envelope.version is SoapVersion.SOAP12:
        for before, after in zip(kept, theirs, strict=True):
            assert _same(before, after)
    assert len(delivered.body) == len(envelope.body)
    assert all(_same(a, b) for a, b in zip(delivered.body, envelope.body, strict=True))
    if envelope.body:  # no text of the Body is lost on the way, whatever its place
        assert _text(delivered.body[0].getparent()) == _text(envelope.body[0].getparent())


def _text(element: etree._Element | None) -> str:
    return "".join("".join(element.itertext()).split()) if element is not None else ""
