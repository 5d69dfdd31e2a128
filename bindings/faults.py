"""
SOAP fault values: building gateway faults, reading faults, and the SOAP 1.2 to 1.1 conversion.

A L{Fault} is written in SOAP 1.2 terms (Code, Subcode chain, Reason, Node, Role, Detail); SOAP 1.1 is a
rendering of it by the rules of spec 6.2, so a gateway fault and a converted service fault look the same to
a basic-profile client. Statuses come from L{bindings.faultcodes.RelayFault} for gateway faults and from
L{service_fault_status} for faults a service raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from lxml import etree

from bindings.faultcodes import RELAY_NS, WSA_NS, FaultCode, QName, RelayFault, RelayFaultError
from bindings.soap import SOAP11_NS, SOAP12_NS, Envelope, SoapVersion, convert, standalone

__all__ = [
    "ADDRESSING_FAULT_ACTION",
    "SOAP_FAULT_ACTION",
    "Fault",
    "FaultCode",
    "RelayFault",
    "RelayFaultError",
    "SoapFault",
    "fault_element",
    "fault_envelope",
    "gateway_fault",
    "parse_fault",
    "reply_to_soap11",
    "reply_to_soap12",
    "service_fault_status",
    "version_mismatch",
]

SOAP_FAULT_ACTION: Final = "http://www.w3.org/2005/08/addressing/soap/fault"
ADDRESSING_FAULT_ACTION: Final = "http://www.w3.org/2005/08/addressing/fault"
XML_LANG: Final = "{http://www.w3.org/XML/1998/namespace}lang"


@dataclass(frozen=True, slots=True)
class Fault:
    """
    A SOAP fault.

    @ivar code: the top-level Code.
    @ivar reason: the human-readable reason (the English text when several were given).
    @ivar subcodes: the Subcode chain as C{(namespace, local)} pairs, outermost first.
    @ivar detail: the children of C{Detail}, each standalone.
    @ivar node: the C{Node} URI (C{faultactor} in SOAP 1.1).
    @ivar role: the C{Role} URI (SOAP 1.2 only).
    """

    code: FaultCode
    reason: str
    subcodes: tuple[QName, ...] = ()
    detail: tuple[etree._Element, ...] = ()
    node: str | None = None
    role: str | None = None


class SoapFault(Exception):
    """
    A fault answer received by a client, raised so that a proxy call fails with it.

    @ivar fault: the fault value.
    @ivar declared: the operation's declared fault rebuilt from the detail (an instance of the
        L{bindings.contracts.DeclaredFault} subclass the service raised), or C{None}.
    """

    def __init__(self, fault: Fault, declared: Exception | None = None) -> None:
        super().__init__(fault.reason)
        self.fault = fault
        self.declared = declared

    @property
    def code(self) -> FaultCode:
        """The fault's top-level code."""
        return self.fault.code

    @property
    def subcodes(self) -> tuple[QName, ...]:
        """The fault's subcode chain, outermost first."""
        return self.fault.subcodes

    @property
    def reason(self) -> str:
        """The fault's reason text."""
        return self.fault.reason

    @property
    def detail(self) -> tuple[etree._Element, ...]:
        """The fault's detail elements."""
        return self.fault.detail


def _qname_text(element: etree._Element, name: QName) -> str:
    """Write C{name} as prefixed text, using a prefix declared on C{element} (see L{_prefixes_for})."""
    namespace, local = name
    if not namespace:  # an unprefixed code in no namespace: no default namespace is ever in scope here
        return local
    for existing, uri in element.nsmap.items():
        if uri == namespace and existing:
            return f"{existing}:{local}"
    raise AssertionError("prefix must have been declared")  # pragma: no cover - see _new_with_prefixes


def _prefixes_for(names: tuple[QName, ...], version: SoapVersion) -> dict[str, str]:
    # "s" is the envelope's own prefix; the other version's namespace (a SOAP 1.1 code such as spyne's
    # Client.Boom kept as a SOAP 1.2 subcode) needs a prefix of its own.
    known = {
        SOAP11_NS: "s" if version is SoapVersion.SOAP11 else "soap11",
        SOAP12_NS: "s" if version is SoapVersion.SOAP12 else "soap12",
        RELAY_NS: "r",
        WSA_NS: "wsa",
    }
    mapping: dict[str, str] = {}
    for namespace, _local in names:
        if namespace and namespace not in mapping:  # xmlns:ns0="" would not be well-formed
            mapping[namespace] = known.get(namespace, f"ns{len(mapping)}")
    return {prefix: namespace for namespace, prefix in mapping.items()}


def fault_element(fault: Fault, version: SoapVersion) -> etree._Element:
    """
    Render a fault as the C{Fault} body child of C{version}.

    For SOAP 1.1 (spec 6.2): C{faultcode} is the innermost subcode when there is one, else C{Client} for
    C{Sender}, C{Server} for C{Receiver}, and the others unchanged; C{faultactor} is the C{Node}; C{detail}
    receives the detail elements.
    """
    ns = version.namespace
    if version is SoapVersion.SOAP11:
        innermost = fault.subcodes[-1:] or ((SOAP11_NS, fault.code.soap11),)
        element = etree.Element(f"{{{ns}}}Fault", nsmap={"s": ns, **_prefixes_for(innermost, version)})
        etree.SubElement(element, "faultcode").text = _qname_text(element, innermost[0])
        etree.SubElement(element, "faultstring").text = fault.reason
        if fault.node is not None:
            etree.SubElement(element, "faultactor").text = fault.node
        if fault.detail:
            etree.SubElement(element, "detail").extend(standalone(d) for d in fault.detail)
        return element
    names = ((SOAP12_NS, fault.code.value), *fault.subcodes)
    element = etree.Element(f"{{{ns}}}Fault", nsmap={"s": ns, **_prefixes_for(names, version)})
    parent = etree.SubElement(element, f"{{{ns}}}Code")
    etree.SubElement(parent, f"{{{ns}}}Value").text = _qname_text(element, names[0])
    for subcode in fault.subcodes:
        parent = etree.SubElement(parent, f"{{{ns}}}Subcode")
        etree.SubElement(parent, f"{{{ns}}}Value").text = _qname_text(element, subcode)
    text = etree.SubElement(etree.SubElement(element, f"{{{ns}}}Reason"), f"{{{ns}}}Text")
    text.set(XML_LANG, "en")
    text.text = fault.reason
    if fault.node is not None:
        etree.SubElement(element, f"{{{ns}}}Node").text = fault.node
    if fault.role is not None:
        etree.SubElement(element, f"{{{ns}}}Role").text = fault.role
    if fault.detail:
        etree.SubElement(element, f"{{{ns}}}Detail").extend(standalone(d) for d in fault.detail)
    return element


class FaultFormatError(ValueError):
    """A body that claims to be a fault does not have a fault's structure."""


def _resolve(element: etree._Element) -> QName:
    text = (element.text or "").strip()
    prefix, sep, local = text.rpartition(":")
    namespace = element.nsmap.get(prefix if sep else None)
    if not local or (sep and namespace is None):
        raise FaultFormatError(f"fault code {text[:60]!r} is not a resolvable QName")
    return (namespace or "", local)


def _code_for(name: QName) -> FaultCode | None:
    if name[0] in (SOAP11_NS, SOAP12_NS):
        base = name[1].split(".")[0]
        for code in FaultCode:
            if base in (code.value, code.soap11):
                return code
    return None


def parse_fault(element: etree._Element, version: SoapVersion) -> Fault:
    """
    Read a C{Fault} body child of either version into a L{Fault}.

    A SOAP 1.1 C{faultcode} outside the envelope namespace is read back as a subcode (the reverse of
    spec 6.2), with the Code taken from the relay table when the subcode is ours, else C{Receiver}.

    @raise FaultFormatError: when the element is not a well-formed fault.
    """
    ns = version.namespace
    if element.tag != f"{{{ns}}}Fault":
        raise FaultFormatError("not a Fault element")
    if version is SoapVersion.SOAP11:
        code_element = element.find("faultcode")
        if code_element is None:
            raise FaultFormatError("a SOAP 1.1 fault needs a faultcode")
        name = _resolve(code_element)
        code = _code_for(name)
        subcodes: tuple[QName, ...] = ()
        if code is not None and name[1] != code.soap11 and name[1] != code.value:
            subcodes = (name,)  # a dotted code (spyne's Client.Boom) is kept so it can be written back
        if code is None:
            row = RelayFault.for_subcode(name[1]) if name[0] in (RELAY_NS, WSA_NS) else None
            code = row.code if row else FaultCode.RECEIVER
            subcodes = (name,)
        detail = element.find("detail")
        return Fault(
            code=code,
            reason=element.findtext("faultstring") or "",
            subcodes=subcodes,
            detail=tuple(standalone(d) for d in detail) if detail is not None else (),
            node=element.findtext("faultactor"),
        )
    value = element.find(f"{{{ns}}}Code/{{{ns}}}Value")
    if value is None:
        raise FaultFormatError("a SOAP 1.2 fault needs Code/Value")
    code = _code_for(_resolve(value))
    if code is None:
        raise FaultFormatError("the fault Code is not a SOAP 1.2 code")
    chain: list[QName] = []
    subcode = element.find(f"{{{ns}}}Code/{{{ns}}}Subcode")
    while subcode is not None:
        sub_value = subcode.find(f"{{{ns}}}Value")
        if sub_value is None:
            raise FaultFormatError("a Subcode needs a Value")
        chain.append(_resolve(sub_value))
        subcode = subcode.find(f"{{{ns}}}Subcode")
    texts = element.findall(f"{{{ns}}}Reason/{{{ns}}}Text")
    english = [t for t in texts if (t.get(XML_LANG) or "").lower().startswith("en")]
    reason = ((english or texts)[0].text or "") if texts else ""
    detail = element.find(f"{{{ns}}}Detail")
    return Fault(
        code=code,
        reason=reason,
        subcodes=tuple(chain),
        detail=tuple(standalone(d) for d in detail) if detail is not None else (),
        node=element.findtext(f"{{{ns}}}Node"),
        role=element.findtext(f"{{{ns}}}Role"),
    )


def _addressing_header(name: str, value: str) -> etree._Element:
    element = etree.Element(f"{{{WSA_NS}}}{name}", nsmap={"wsa": WSA_NS})
    element.text = value
    return element


def fault_envelope(
    fault: Fault, version: SoapVersion, action: str | None = None, relates_to: str | None = None
) -> Envelope:
    """
    Wrap a fault in an envelope; SOAP 1.2 envelopes carry C{wsa:Action} and C{wsa:RelatesTo} when given.

    SOAP 1.1 answers go to basic-profile clients and carry no addressing headers (spec 6.2).
    """
    headers: list[etree._Element] = []
    if version is SoapVersion.SOAP12:
        if action is not None:
            headers.append(_addressing_header("Action", action))
        if relates_to is not None:
            headers.append(_addressing_header("RelatesTo", relates_to))
    return Envelope(version, tuple(headers), (fault_element(fault, version),))


def relay_error_detail(kind: RelayFault, tracking_id: str) -> etree._Element:
    """The C{r:RelayError} detail element: the subcode name and the tracking id."""
    element = etree.Element(f"{{{RELAY_NS}}}RelayError", nsmap={"r": RELAY_NS})
    etree.SubElement(element, f"{{{RELAY_NS}}}Code").text = kind.subcode_name
    etree.SubElement(element, f"{{{RELAY_NS}}}TrackingId").text = tracking_id
    return element


def gateway_fault(
    kind: RelayFault,
    version: SoapVersion,
    *,
    path: str,
    tracking_id: str,
    message: str | None = None,
    relates_to: str | None = None,
) -> Envelope:
    """
    Build a fault the gateway itself raises (spec 7.1), in the sender's SOAP version.

    The reason names the cause, the path and the tracking id; the detail is C{r:RelayError}. The HTTP status
    to send with it is C{kind.status}.
    """
    cause = message or kind.subcode_name
    fault = Fault(
        code=kind.code,
        reason=f"{cause}. Path: /{path.lstrip('/')}. TrackingId:{tracking_id}",
        subcodes=kind.subcodes,
        detail=(relay_error_detail(kind, tracking_id),),
    )
    action = ADDRESSING_FAULT_ACTION if kind.is_addressing else SOAP_FAULT_ACTION
    return fault_envelope(fault, version, action=action, relates_to=relates_to)


def version_mismatch(version: SoapVersion, tracking_id: str) -> Envelope:
    """
    A C{VersionMismatch} fault in the version the sender announced (spec 6.3).

    SOAP 1.2 answers carry the C{Upgrade} header listing the envelope versions we accept.
    """
    fault = Fault(
        code=FaultCode.VERSION_MISMATCH,
        reason=f"The envelope namespace does not match the Content-Type. TrackingId:{tracking_id}",
        detail=(relay_error_detail(RelayFault.INVALID_MESSAGE, tracking_id),),
    )
    envelope = fault_envelope(fault, version, action=SOAP_FAULT_ACTION)
    if version is SoapVersion.SOAP11:
        return envelope
    upgrade = etree.Element(f"{{{SOAP12_NS}}}Upgrade", nsmap={"s": SOAP12_NS})
    etree.SubElement(upgrade, f"{{{SOAP12_NS}}}SupportedEnvelope").set("qname", "s:Envelope")
    supported = etree.SubElement(upgrade, f"{{{SOAP12_NS}}}SupportedEnvelope", nsmap={"q": SOAP11_NS})
    supported.set("qname", "q:Envelope")
    return envelope.replace(headers=(*envelope.headers, upgrade))


def service_fault_status(fault: Fault, version: SoapVersion) -> int:
    """
    The HTTP status for a fault a service raised (spec 6.2, 6.3).

    SOAP 1.1: always 500. SOAP 1.2: 400 when the Code is C{Sender}, 500 otherwise.
    """
    if version is SoapVersion.SOAP12 and fault.code is FaultCode.SENDER:
        return 400
    return 500


def reply_to_soap12(envelope: Envelope) -> Envelope:
    """
    Convert a SOAP 1.1 answer (from a bridged basic-profile service) to the SOAP 1.2 a listener sends.

    The reverse of L{reply_to_soap11}: header blocks are translated, a fault is re-rendered; a dotted
    C{faultcode} such as C{Client.Boom} becomes a subcode, so it reaches a SOAP 1.1 caller unchanged.

    A SOAP 1.2 answer is kept as it is, but its fault must be well-formed too: the gateway refuses a
    listener's malformed fault, and the caller would then get an C{InvalidMessage} about the bridge's reply
    instead of the bridge's own fault about the backend.

    @raise FaultFormatError: when a fault body is malformed.
    """
    if envelope.version is SoapVersion.SOAP12:
        if envelope.is_fault:
            parse_fault(envelope.body[0], SoapVersion.SOAP12)
        return envelope
    converted = convert(envelope.replace(body=() if envelope.is_fault else None), SoapVersion.SOAP12)
    if envelope.is_fault:
        fault = parse_fault(envelope.body[0], SoapVersion.SOAP11)
        return converted.replace(body=(fault_element(fault, SoapVersion.SOAP12),))
    return converted


def reply_to_soap11(envelope: Envelope) -> Envelope:
    """
    Convert a listener's SOAP 1.2 reply for a basic-profile (SOAP 1.1) sender (spec 6.2).

    WS-Addressing headers are dropped; other header blocks are translated; a fault body is re-rendered by
    the 1.2 to 1.1 rules.

    @raise FaultFormatError: when a fault body is malformed.
    """
    headers = tuple(h for h in envelope.headers if etree.QName(h).namespace != WSA_NS)
    converted = convert(
        envelope.replace(headers=headers, body=() if envelope.is_fault else None), SoapVersion.SOAP11
    )
    if envelope.version is SoapVersion.SOAP12 and envelope.is_fault:
        fault = parse_fault(envelope.body[0], SoapVersion.SOAP12)
        return converted.replace(body=(fault_element(fault, SoapVersion.SOAP11),))
    return converted
