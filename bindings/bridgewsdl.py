"""
A bridged service's WSDL as one document, since the gateway registers and serves one (spec section 9).

JAX-WS, CXF and WCF services keep their schemas in documents of their own, imported from the WSDL by a
C{schemaLocation} (C{?xsd=1}, C{?xsd=xsd0}) that callers of the relay cannot reach: relative ones resolve
against the relay's URL, absolute ones name the service's own host. L{inline_schemas} fetches them from
the service and puts them in C{wsdl:types}, as C{?singleWsdl} does for WCF. A WSDL that imports another
WSDL (WCF's C{?wsdl}) cannot be made one document (each has its own target namespace): it is refused with
a pointer to WCF's single-document form.

L{backend_version}, L{declared_soap_actions} and L{reply_actions} read what the bridge needs to call the
service as its own clients do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import urljoin, urlsplit

from lxml import etree

from bindings.soap import SoapVersion
from bindings.wsdl import (
    SOAP11_BINDING_NS,
    SOAP12_BINDING_NS,
    WSDL_NS,
    declared_action,
    default_action,
    describe_operations,
)
from bindings.xsdtypes import XSD_NS

MAX_SCHEMAS: Final = 64
"""The most schema documents fetched for one WSDL."""

_TYPES: Final = f"{{{WSDL_NS}}}types"
_SCHEMA: Final = f"{{{XSD_NS}}}schema"
_REFERENCES: Final = (f"{{{XSD_NS}}}import", f"{{{XSD_NS}}}include")


def _adopt(types: etree._Element, schema: etree._Element) -> etree._Element:
    """
    Move a schema document into C{types}, declaring on it every prefix its root declared.

    A plain append lets lxml drop a declaration the new ancestors make under another prefix (C{xs} where
    the WSDL says C{xsd}), and QNames in attribute values (C{type="xs:string"}) would name nothing.
    """
    adopted = etree.SubElement(types, schema.tag, attrib=dict(schema.attrib), nsmap=schema.nsmap)
    adopted.text = schema.text
    for child in list(schema):
        adopted.append(child)
    return adopted


class WsdlImportError(ValueError):
    """The WSDL cannot be made one document (it imports a WSDL, a schema is unusable or too many)."""


async def inline_schemas(
    root: etree._Element, url: str, fetch: Callable[[str], Awaitable[etree._Element]]
) -> bool:
    """
    Put every schema the WSDL C{root} (fetched from C{url}) refers to by C{schemaLocation} in its types.

    Each document is fetched once, whatever refers to it, and loses its C{schemaLocation}s: an import then
    names a namespace defined in the same C{wsdl:types}; an include's schema, of the same namespace, sits
    beside the schema that included it.

    @param fetch: fetches and parses a document (through the hardened parser).
    @return: whether anything changed.
    @raise WsdlImportError: for a C{wsdl:import}, a referenced document that is not a schema, a
        C{schemaLocation} that is not C{http(s)}, or more than L{MAX_SCHEMAS} documents.
    """
    for imported in root.iter(f"{{{WSDL_NS}}}import"):
        raise WsdlImportError(
            f"the WSDL imports another WSDL ({str(imported.get('location'))[:200]}), and the relay serves one"
            " document: give --wsdl-url the service's single-document WSDL (WCF: URL?singleWsdl)"
        )
    types = root.find(_TYPES)
    if types is None:
        return False
    loaded: dict[str, etree._Element] = {}
    pending = [(schema, url) for schema in types.findall(_SCHEMA)]
    changed = False
    while pending:
        schema, base = pending.pop()
        for reference in schema:
            if reference.tag not in _REFERENCES or reference.get("schemaLocation") is None:
                continue
            location = urljoin(base, str(reference.get("schemaLocation")).strip())
            del reference.attrib["schemaLocation"]
            changed = True
            if location in loaded:
                continue
            if urlsplit(location).scheme.lower() not in ("http", "https"):
                raise WsdlImportError(f"a schemaLocation the bridge cannot fetch: {location[:200]}")
            if len(loaded) >= MAX_SCHEMAS:
                raise WsdlImportError(f"the WSDL refers to more than {MAX_SCHEMAS} schema documents")
            document = await fetch(location)
            if document.tag != _SCHEMA:
                raise WsdlImportError(f"{location[:200]} is not an XML schema")
            adopted = _adopt(types, document)
            loaded[location] = adopted
            pending.append((adopted, location))
        for include in [r for r in schema if r.tag == _REFERENCES[1] and r.get("schemaLocation") is None]:
            schema.remove(include)  # its schema is in the types now, beside this one
    return changed


def reply_actions(root: etree._Element) -> dict[str, str]:
    """
    Reply actions by request action, where the WSDL says better than C{"{request action}Response"}.

    That is the output's C{wsam:Action}, or, for an operation whose request has WS-Addressing's default
    action, the default action of its output (C{.../greetResponse}, not C{.../greetRequestResponse}).
    """
    target = root.get("targetNamespace") or ""
    found: dict[str, str] = {}
    operations = iter(describe_operations(root))
    for port_type in root.iter(f"{{{WSDL_NS}}}portType"):
        for op, described in zip(port_type.findall(f"{{{WSDL_NS}}}operation"), operations, strict=False):
            output = op.find(f"{{{WSDL_NS}}}output")
            request = op.find(f"{{{WSDL_NS}}}input")
            if output is None or request is None or described.action is None:
                continue
            name = op.get("name") or ""
            explicit = declared_action(output)
            port = port_type.get("name") or ""
            requested = default_action(target, port, request.get("name") or f"{name}Request")
            if explicit:
                found[described.action] = explicit
            elif described.action == requested:
                found[described.action] = default_action(
                    target, port, output.get("name") or f"{name}Response"
                )
    return found


def declared_soap_actions(root: etree._Element, version: SoapVersion) -> dict[str, str]:
    """
    The C{soapAction} the backend's WSDL declares for each operation, by the action the gateway routes on.

    A SOAP 1.1 client sends the binding's C{soapAction} as it is (C{""} when empty), whatever action the
    operation has otherwise; services that dispatch on it expect that value, not the gateway's action.
    """
    binding_ns = SOAP11_BINDING_NS if version is SoapVersion.SOAP11 else SOAP12_BINDING_NS
    by_name: dict[str, str] = {}
    for binding in root.iter(f"{{{WSDL_NS}}}binding"):
        if binding.find(f"{{{binding_ns}}}binding") is None:
            continue
        for op in binding.findall(f"{{{WSDL_NS}}}operation"):
            soap_op = op.find(f"{{{binding_ns}}}operation")
            by_name.setdefault(
                op.get("name") or "", soap_op.get("soapAction", "") if soap_op is not None else ""
            )
    return {
        op.action: by_name[op.name] for op in describe_operations(root) if op.action and op.name in by_name
    }


def backend_version(root: etree._Element) -> SoapVersion:
    """The SOAP version to speak to a backend: 1.1 when its WSDL has a SOAP 1.1 binding, else 1.2."""
    if next(root.iter(f"{{{SOAP11_BINDING_NS}}}binding"), None) is not None:
        return SoapVersion.SOAP11
    if next(root.iter(f"{{{SOAP12_BINDING_NS}}}binding"), None) is not None:
        return SoapVersion.SOAP12
    raise WsdlImportError("it has neither a SOAP 1.1 nor a SOAP 1.2 binding")
