"""A registered or bridged WSDL (bindings.wsdl, bridgewsdl): a WsdlError or a contract that survives serving it."""

from __future__ import annotations

from typing import Any

from lxml import etree

from bindings.bridgewsdl import (
    WsdlImportError,
    backend_version,
    declared_soap_actions,
    inline_schemas,
    reply_actions,
)
from bindings.inbound import Operations, register_contract
from bindings.safexml import XmlLimits, parse_xml
from bindings.settings import BINDING_KINDS
from bindings.soap import SoapVersion
from bindings.wsdl import (
    WSDL_MAX_BYTES,
    WSDL_MAX_DEPTH,
    WsdlError,
    describe_operations,
    parse_wsdl,
    port_type_hash,
)

MAX_BYTES = 32 * 1024
PUBLIC = "https://relay.example/calc"
SCHEMA = (
    b'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:t" xmlns:t="urn:t">'
    b'<xs:element name="Add" type="t:AddT"/><xs:complexType name="AddT"/></xs:schema>'
)


async def _fetch(url: str) -> etree._Element:
    if "notschema" in url:
        return parse_xml(b"<x/>", XmlLimits(WSDL_MAX_BYTES, WSDL_MAX_DEPTH))
    return parse_xml(SCHEMA, XmlLimits(WSDL_MAX_BYTES, WSDL_MAX_DEPTH))


def _run(coroutine: Any) -> Any:
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the fake fetch never waits")


def check(data: bytes) -> None:
    try:
        root = parse_wsdl(data, MAX_BYTES)
    except WsdlError:
        return
    operations = describe_operations(root)
    digest = port_type_hash(root)
    Operations(operations)
    for kind in BINDING_KINDS:
        try:
            contract = register_contract(data, kind, MAX_BYTES)
        except WsdlError:
            continue
        assert contract.hash == digest and contract.operations.items == operations
        # ?wsdl serves the document with the public address: it parses back to the same contract
        served = parse_wsdl(contract.served(PUBLIC), WSDL_MAX_BYTES)
        assert describe_operations(served) == operations
        assert port_type_hash(served) == digest
    # the bridge's reading of a backend's WSDL: only the errors it turns into a BridgeError (ValueError)
    try:
        backend_version(root)
    except WsdlImportError:
        pass
    for version in SoapVersion:
        declared_soap_actions(root, version)
    reply_actions(root)
    try:
        changed = _run(inline_schemas(root, "http://backend.example/svc?wsdl", _fetch))
    except ValueError:
        return
    if changed:
        inlined = etree.tostring(root, encoding="UTF-8", xml_declaration=True)
        again = parse_wsdl(inlined, WSDL_MAX_BYTES)
        assert describe_operations(again) == operations
