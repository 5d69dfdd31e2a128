"""
WSDL 1.1 for contracts: generation, address rewriting, and the portType hash of the listener policy.

Generated documents are document/literal wrapped with two ports over one portType (spec section 9):
C{{Contract}_basic} (SOAP 1.1) and C{{Contract}_ws} (SOAP 1.2), WCF-style actions published both as
C{soapAction} and C{wsam:Action}. Output depends only on the contract and the address, so golden files
work. Documents from listeners (ours or a bridged third party's) are re-parsed through
L{bindings.safexml} with the WSDL cap before the gateway rewrites their addresses and hashes them.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Final

from lxml import etree

from bindings.contracts import Contract, Operation
from bindings.safexml import XmlLimits, XmlRejected, parse_xml
from bindings.xsdtypes import XSD_NS, FieldSpec, xsd_element

WSDL_NS: Final = "http://schemas.xmlsoap.org/wsdl/"
SOAP11_BINDING_NS: Final = "http://schemas.xmlsoap.org/wsdl/soap/"
SOAP12_BINDING_NS: Final = "http://schemas.xmlsoap.org/wsdl/soap12/"
WSAM_NS: Final = "http://www.w3.org/2007/05/addressing/metadata"
WSAW_NS: Final = "http://www.w3.org/2006/05/addressing/wsdl"
HTTP_TRANSPORT: Final = "http://schemas.xmlsoap.org/soap/http"

WSDL_DEFAULT_BYTES: Final = 256 * 1024
WSDL_MAX_BYTES: Final = 1024 * 1024
WSDL_MAX_DEPTH: Final = 128


class WsdlError(ValueError):
    """A WSDL document is unusable (refused by the hardened parser, too large, or not WSDL 1.1)."""


def _q(namespace: str, local: str) -> str:
    return f"{{{namespace}}}{local}"


def _message_name(contract: Contract, op: Operation, suffix: str) -> str:
    return f"{contract.name}_{op.name}_{suffix}"


def _schema(contract: Contract, parent: etree._Element) -> None:
    schema = etree.SubElement(
        parent, _q(XSD_NS, "schema"), targetNamespace=contract.namespace, elementFormDefault="qualified"
    )

    def type_name(name: str) -> str:
        return f"tns:{name}"

    def sequence(owner: etree._Element, fields: tuple[FieldSpec, ...]) -> None:
        seq = etree.SubElement(etree.SubElement(owner, _q(XSD_NS, "complexType")), _q(XSD_NS, "sequence"))
        for field in fields:
            xsd_element(seq, field.name, field.spec, type_name)

    for struct in contract.structs():
        complex_type = etree.SubElement(schema, _q(XSD_NS, "complexType"), name=struct.name)
        seq = etree.SubElement(complex_type, _q(XSD_NS, "sequence"))
        for field in struct.fields:
            xsd_element(seq, field.name, field.spec, type_name)
    fault_elements: set[str] = set()
    for op in contract.operations:
        request = etree.SubElement(schema, _q(XSD_NS, "element"), name=op.name)
        sequence(request, tuple(FieldSpec(p.name, p.spec) for p in op.parameters))
        if not op.one_way:
            response = etree.SubElement(schema, _q(XSD_NS, "element"), name=f"{op.name}Response")
            result = (FieldSpec(op.result_name, op.returns),) if op.returns is not None else ()
            sequence(response, result)
        for fault in op.faults:
            if fault.name not in fault_elements:
                fault_elements.add(fault.name)
                etree.SubElement(schema, _q(XSD_NS, "element"), name=fault.name, type=type_name(fault.name))


def _messages(contract: Contract, root: etree._Element) -> None:
    def message(name: str, part: str, element: str) -> None:
        msg = etree.SubElement(root, _q(WSDL_NS, "message"), name=name)
        etree.SubElement(msg, _q(WSDL_NS, "part"), name=part, element=f"tns:{element}")

    for op in contract.operations:
        message(_message_name(contract, op, "InputMessage"), "parameters", op.name)
        if not op.one_way:
            message(_message_name(contract, op, "OutputMessage"), "parameters", f"{op.name}Response")
        for fault in op.faults:
            message(_message_name(contract, op, f"{fault.name}_FaultMessage"), "detail", fault.name)


def _port_type(contract: Contract, root: etree._Element) -> None:
    port_type = etree.SubElement(root, _q(WSDL_NS, "portType"), name=contract.name)
    for op in contract.operations:
        element = etree.SubElement(port_type, _q(WSDL_NS, "operation"), name=op.name)
        parts: list[tuple[str, str, str, str | None]] = [("input", "InputMessage", op.action, None)]
        if not op.one_way:
            parts.append(("output", "OutputMessage", op.reply_action, None))
        parts.extend(("fault", f"{f.name}_FaultMessage", f.action, f.name) for f in op.faults)
        for kind, suffix, action, name in parts:
            child = etree.SubElement(element, _q(WSDL_NS, kind))
            if name is not None:
                child.set("name", name)
            child.set(_q(WSAM_NS, "Action"), action)
            child.set("message", f"tns:{_message_name(contract, op, suffix)}")


def _binding(contract: Contract, root: etree._Element, name: str, soap_ns: str) -> None:
    binding = etree.SubElement(root, _q(WSDL_NS, "binding"), name=name, type=f"tns:{contract.name}")
    etree.SubElement(binding, _q(soap_ns, "binding"), transport=HTTP_TRANSPORT, style="document")
    for op in contract.operations:
        element = etree.SubElement(binding, _q(WSDL_NS, "operation"), name=op.name)
        etree.SubElement(element, _q(soap_ns, "operation"), soapAction=op.action, style="document")
        etree.SubElement(etree.SubElement(element, _q(WSDL_NS, "input")), _q(soap_ns, "body"), use="literal")
        if not op.one_way:
            etree.SubElement(
                etree.SubElement(element, _q(WSDL_NS, "output")), _q(soap_ns, "body"), use="literal"
            )
        for fault in op.faults:
            holder = etree.SubElement(element, _q(WSDL_NS, "fault"), name=fault.name)
            etree.SubElement(holder, _q(soap_ns, "fault"), name=fault.name, use="literal")


def port_names(contract: Contract) -> tuple[str, str]:
    """The names of the SOAP 1.1 and SOAP 1.2 bindings and ports: C{{Contract}_basic}, C{{Contract}_ws}."""
    return f"{contract.name}_basic", f"{contract.name}_ws"


def service_name(contract: Contract) -> str:
    """The WSDL service name: C{{Contract}Service}."""
    return f"{contract.name}Service"


def generate_wsdl(contract: Contract, address: str) -> bytes:
    """
    Build the WSDL 1.1 document of a contract, with both ports at C{address}.

    @return: UTF-8 bytes with an XML declaration, indented, identical for identical input.
    """
    nsmap = {
        "wsdl": WSDL_NS,
        "soap": SOAP11_BINDING_NS,
        "soap12": SOAP12_BINDING_NS,
        "xsd": XSD_NS,
        "wsam": WSAM_NS,
        "tns": contract.namespace,
    }
    root = etree.Element(_q(WSDL_NS, "definitions"), nsmap=nsmap, name=contract.name)
    root.set("targetNamespace", contract.namespace)
    _schema(contract, etree.SubElement(root, _q(WSDL_NS, "types")))
    _messages(contract, root)
    _port_type(contract, root)
    basic, ws = port_names(contract)
    _binding(contract, root, basic, SOAP11_BINDING_NS)
    _binding(contract, root, ws, SOAP12_BINDING_NS)
    service = etree.SubElement(root, _q(WSDL_NS, "service"), name=service_name(contract))
    for name, soap_ns in ((basic, SOAP11_BINDING_NS), (ws, SOAP12_BINDING_NS)):
        port = etree.SubElement(service, _q(WSDL_NS, "port"), name=name, binding=f"tns:{name}")
        etree.SubElement(port, _q(soap_ns, "address"), location=address)
    data: bytes = etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True)
    return data


def parse_wsdl(
    data: bytes, max_bytes: int = WSDL_DEFAULT_BYTES, charset: str | None = None
) -> etree._Element:
    """
    Parse a WSDL received from a listener through the hardened parser (spec section 9).

    @param max_bytes: the operator's WSDL limit, at most L{WSDL_MAX_BYTES}.
    @raise WsdlError: when the parser refuses it or the root is not C{wsdl:definitions}.
    """
    if not 0 < max_bytes <= WSDL_MAX_BYTES:
        raise ValueError(f"the WSDL limit must be between 1 and {WSDL_MAX_BYTES} bytes")
    try:
        root = parse_xml(data, XmlLimits(max_bytes=max_bytes, max_depth=WSDL_MAX_DEPTH), charset)
    except XmlRejected as e:
        raise WsdlError(f"WSDL refused: {e}") from None
    if root.tag != _q(WSDL_NS, "definitions"):
        raise WsdlError("the document is not a WSDL 1.1 definitions element")
    return root


def rewrite_addresses(root: etree._Element, public_url: str) -> bytes:
    """
    Point every C{soap:address} and C{soap12:address} at the public URL; the tree is not modified.

    @return: the rewritten document as UTF-8 bytes.
    """
    rewritten = copy.deepcopy(root)
    for tag in (_q(SOAP11_BINDING_NS, "address"), _q(SOAP12_BINDING_NS, "address")):
        for address in rewritten.iter(tag):
            address.set("location", public_url)
    data: bytes = etree.tostring(rewritten, xml_declaration=True, encoding="utf-8")
    return data


def _resolve(element: etree._Element, value: str | None) -> list[str] | None:
    if value is None:
        return None
    prefix, sep, local = value.partition(":")
    if not sep:
        prefix, local = None, value  # type: ignore[assignment]
    return [element.nsmap.get(prefix) or "", local]


def declared_action(element: etree._Element) -> str | None:
    """The C{wsam:Action} (else the older C{wsaw:Action}) an input, output or fault declares."""
    action: str | None = element.get(_q(WSAM_NS, "Action")) or element.get(_q(WSAW_NS, "Action"))
    return action


def _canonical_port_types(root: etree._Element) -> list[object]:
    """
    The contract as the hash sees it: linear in the document, however often a message is referenced.

    Each input, output and fault names its message; each referenced message's parts are listed once, after
    the portTypes (listing them at every reference made a document of a few hundred kilobytes cost
    gigabytes). The bindings' C{soapAction}s are listed too: routing falls back to them.
    """
    target = root.get("targetNamespace") or ""
    messages = {m.get("name"): m for m in root.iter(_q(WSDL_NS, "message"))}
    referenced: set[str] = set()
    result: list[object] = []
    port_types = sorted(root.iter(_q(WSDL_NS, "portType")), key=lambda p: p.get("name") or "")
    for port_type in port_types:
        operations: list[object] = []
        for op in port_type.findall(_q(WSDL_NS, "operation")):
            items: list[object] = []
            for child in op:
                if not isinstance(child.tag, str) or etree.QName(child).namespace != WSDL_NS:
                    continue
                kind = etree.QName(child).localname
                if kind not in ("input", "output", "fault"):
                    continue
                message_ref = _resolve(child, child.get("message"))
                if message_ref is not None and message_ref[0] == target and message_ref[1] in messages:
                    referenced.add(message_ref[1])
                items.append([kind, child.get("name"), message_ref, declared_action(child)])
            operations.append([op.get("name"), items])
        result.append([target, port_type.get("name"), operations])
    parts: list[object] = []
    for name in sorted(referenced):
        parts.append(
            [
                name,
                [
                    [part.get("name"), _resolve(part, part.get("element")), _resolve(part, part.get("type"))]
                    for part in messages[name].iter(_q(WSDL_NS, "part"))
                ],
            ]
        )
    result.append(parts)
    result.append(sorted(_soap_actions(root).items()))
    return result


def _soap_actions(root: etree._Element) -> dict[str, str]:
    """The bindings' C{soapAction} of each operation by name (the SOAP 1.2 binding's where both give one)."""
    soap_actions: dict[str, str] = {}
    for soap_ns in (SOAP11_BINDING_NS, SOAP12_BINDING_NS):
        for binding_op in root.iter(_q(WSDL_NS, "binding")):
            for op in binding_op.findall(_q(WSDL_NS, "operation")):
                soap_op = op.find(_q(soap_ns, "operation"))
                if soap_op is not None and soap_op.get("soapAction"):
                    soap_actions[op.get("name") or ""] = soap_op.get("soapAction") or ""
    return soap_actions


_XSD_QNAME_ATTRIBUTES: Final = frozenset({"type", "ref", "base", "itemType", "substitutionGroup", "refer"})
_NOT_HASHED: Final = frozenset({f"{{{XSD_NS}}}annotation", f"{{{WSDL_NS}}}documentation"})


def _canonical_types(root: etree._Element) -> list[object]:
    """
    The schemas of C{wsdl:types} as the hash sees them: every element, its attributes and children in order.

    QName values (C{type}, C{ref}, C{base}, ...) are resolved to namespace and local name, so prefixes do
    not count; annotations, comments and whitespace do not either. One visit per element.
    """
    result: list[object] = []
    for types in root.findall(_q(WSDL_NS, "types")):
        result.extend(
            _canonical_schema_node(child)
            for child in types
            if isinstance(child.tag, str) and child.tag not in _NOT_HASHED
        )
    return result


def _canonical_schema_node(element: etree._Element) -> list[object]:
    attributes: list[list[object]] = []
    for name, value in sorted(element.attrib.items()):
        if name in _XSD_QNAME_ATTRIBUTES:
            attributes.append([name, _resolve(element, value)])
        elif name == "memberTypes":
            attributes.append([name, [_resolve(element, member) for member in value.split()]])
        else:
            attributes.append([name, value])
    children = [
        _canonical_schema_node(child)
        for child in element
        if isinstance(child.tag, str) and child.tag not in _NOT_HASHED
    ]
    return [element.tag, attributes, (element.text or "").strip(), children]


def port_type_hash(root: etree._Element) -> str:
    """
    A hash of the canonical form of the document's contract, for the listener policy (spec 10.3).

    The canonical form lists each portType (by name), its operations in order and, for every input, output
    and fault, the action and the message; then every referenced message's resolved parts, the bindings'
    C{soapAction}s, and the schemas of C{wsdl:types} that define the parts' elements and their types (a
    listener whose parameter has another type cannot take the requests the others take). Prefixes,
    formatting, documentation and addresses do not change the hash; a changed operation, parameter element,
    action, C{soapAction} or type does.
    """
    canonical = [*_canonical_port_types(root), _canonical_types(root)]
    text = json.dumps(canonical, separators=(",", ":"), sort_keys=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class WsdlOperation:
    """
    What the gateway needs to know about one operation of a registered WSDL (spec 5.3.7).

    @ivar name: the operation name.
    @ivar action: the request action: C{wsam:Action}, else the SOAP 1.2 then 1.1 C{soapAction}, else the
        default action of WS-Addressing 1.0 Metadata (L{default_action}).
    @ivar one_way: whether the operation has no output.
    @ivar request_element: the request wrapper as C{(namespace, local)}, when the input has an element part.
    """

    name: str
    action: str | None
    one_way: bool
    request_element: tuple[str, str] | None


def default_action(target: str, port_type: str, message: str) -> str:
    """
    The action WS-Addressing 1.0 Metadata (section 4.4.4) gives a message that names none.

    C{[target namespace]/[port type name]/[message name]}, with C{:} for C{/} in a URN namespace and no
    doubled delimiter after a namespace ending with it. Services whose WSDL gives an operation neither a
    C{wsam:Action} nor a C{soapAction} (JAX-WS and CXF do that by default) expect this one when they take
    WS-Addressing.
    """
    delimiter = ":" if target.lower().startswith("urn:") else "/"
    base = target if target.endswith(delimiter) else target + delimiter
    return f"{base}{port_type}{delimiter}{message}"


def describe_operations(root: etree._Element) -> tuple[WsdlOperation, ...]:
    """Read the operations of every portType of a WSDL, for routing by action or body element."""
    target = root.get("targetNamespace") or ""
    messages = {m.get("name"): m for m in root.iter(_q(WSDL_NS, "message"))}
    soap_actions = _soap_actions(root)
    operations: list[WsdlOperation] = []
    for port_type in root.iter(_q(WSDL_NS, "portType")):
        for op in port_type.findall(_q(WSDL_NS, "operation")):
            name = op.get("name") or ""
            request = op.find(_q(WSDL_NS, "input"))
            one_way = op.find(_q(WSDL_NS, "output")) is None
            element: tuple[str, str] | None = None
            action = None
            if request is not None:
                input_name = request.get("name") or (name if one_way else f"{name}Request")
                action = declared_action(request) or soap_actions.get(name)
                action = action or default_action(target, port_type.get("name") or "", input_name)
                ref = _resolve(request, request.get("message"))
                message = messages.get(ref[1]) if ref is not None and ref[0] == target else None
                part = message.find(_q(WSDL_NS, "part")) if message is not None else None
                resolved = _resolve(part, part.get("element")) if part is not None else None
                element = (resolved[0], resolved[1]) if resolved is not None else None
            operations.append(
                WsdlOperation(
                    name=name,
                    action=action,
                    one_way=one_way,
                    request_element=element,
                )
            )
    return tuple(operations)
