"""Tests for L{bindings.wsdl}: golden file, zeep interoperability, address rewriting and the portType hash."""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from decimal import Decimal
from typing import Any

import zeep
from lxml import etree
from twisted.trial.unittest import SynchronousTestCase

from bindings.addressing import read_addressing
from bindings.contracts import contract_of
from bindings.soap import SoapVersion, parse_envelope
from bindings.wsdl import (
    SOAP11_BINDING_NS,
    SOAP12_BINDING_NS,
    WSDL_NS,
    WsdlError,
    WsdlOperation,
    _canonical_port_types,
    default_action,
    describe_operations,
    generate_wsdl,
    parse_wsdl,
    port_type_hash,
    rewrite_addresses,
)

from .calculator import DivideByZero, ICalculator, IChat, Point, Shape

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden", "calculator.wsdl")
ADDRESS = "sb://relay.example/calc"
PUBLIC = "https://relay.example/calc"
NS = "urn:example:calc"

SPYNE_LIKE = b"""<?xml version='1.0' encoding='UTF-8'?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:tns="urn:example:calc" xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:example:calc">
  <wsdl:types><xs:schema targetNamespace="urn:example:calc" elementFormDefault="qualified">
    <xs:element name="Add"><xs:complexType><xs:sequence><xs:element name="a" type="xs:integer"/></xs:sequence></xs:complexType></xs:element>
    <xs:element name="AddResponse"><xs:complexType><xs:sequence/></xs:complexType></xs:element>
  </xs:schema></wsdl:types>
  <wsdl:message name="Add"><wsdl:part name="Add" element="tns:Add"/></wsdl:message>
  <wsdl:message name="AddResponse"><wsdl:part name="AddResponse" element="tns:AddResponse"/></wsdl:message>
  <wsdl:portType name="Application"><wsdl:operation name="Add">
    <wsdl:input name="Add" message="tns:Add"/><wsdl:output name="AddResponse" message="tns:AddResponse"/>
  </wsdl:operation></wsdl:portType>
  <wsdl:binding name="Application" type="tns:Application">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="Add"><soap:operation soapAction="Add" style="document"/>
      <wsdl:input name="Add"><soap:body use="literal"/></wsdl:input>
      <wsdl:output name="AddResponse"><soap:body use="literal"/></wsdl:output></wsdl:operation>
  </wsdl:binding>
  <wsdl:service name="CalculatorService"><wsdl:port name="Application" binding="tns:Application">
    <soap:address location="http://10.0.0.5:8000/"/></wsdl:port></wsdl:service>
</wsdl:definitions>"""


def wsdl_bytes() -> bytes:
    return generate_wsdl(contract_of(ICalculator), ADDRESS)


class GenerationTests(SynchronousTestCase):
    """Generated documents."""

    def test_golden(self) -> None:
        """The calculator contract produces exactly the golden document."""
        with open(GOLDEN, "rb") as f:
            self.assertEqual(wsdl_bytes(), f.read())

    def test_deterministic(self) -> None:
        """Generating twice gives identical bytes."""
        self.assertEqual(wsdl_bytes(), wsdl_bytes())

    def test_structure(self) -> None:
        """Two ports over one portType; one-way operations have no output; faults appear in the bindings."""
        root = parse_wsdl(wsdl_bytes())
        service = root.find(f"{{{WSDL_NS}}}service")
        assert service is not None
        self.assertEqual([p.get("name") for p in service], ["ICalculator_basic", "ICalculator_ws"])
        self.assertIsNotNone(service[0].find(f"{{{SOAP11_BINDING_NS}}}address"))
        self.assertIsNotNone(service[1].find(f"{{{SOAP12_BINDING_NS}}}address"))
        notify = root.find(f"{{{WSDL_NS}}}portType/{{{WSDL_NS}}}operation[@name='Notify']")
        assert notify is not None
        self.assertIsNone(notify.find(f"{{{WSDL_NS}}}output"))
        for soap_ns in (SOAP11_BINDING_NS, SOAP12_BINDING_NS):
            fault = root.find(
                f"{{{WSDL_NS}}}binding/{{{WSDL_NS}}}operation[@name='Divide']/{{{WSDL_NS}}}fault/{{{soap_ns}}}fault"
            )
            assert fault is not None
            self.assertEqual(fault.get("name"), "DivideByZero")

    def test_multicast_contract(self) -> None:
        """An all-one-way contract has no output messages at all."""
        data = generate_wsdl(contract_of(IChat), "sb://relay.example/chat")
        self.assertNotIn(b"OutputMessage", data)
        self.assertIn(b"urn:example:chat/Chat/Say", data)


class ZeepTests(SynchronousTestCase):
    """zeep, the reference third-party client, loads the WSDL and builds messages we can decode."""

    def setUp(self) -> None:
        directory = tempfile.mkdtemp()
        path = os.path.join(directory, "calc.wsdl")
        with open(path, "wb") as f:
            f.write(wsdl_bytes())
        self.addCleanup(os.remove, path)
        self.client = zeep.Client(
            path, settings=zeep.Settings(forbid_dtd=True, forbid_entities=True, forbid_external=True)
        )
        self.contract = contract_of(ICalculator)

    def services(self) -> list[tuple[SoapVersion, Any]]:
        return [
            (SoapVersion.SOAP11, self.client.bind("ICalculatorService", "ICalculator_basic")),
            (SoapVersion.SOAP12, self.client.bind("ICalculatorService", "ICalculator_ws")),
        ]

    def decode(self, message: etree._Element, version: SoapVersion, name: str) -> dict[str, Any]:
        envelope = parse_envelope(etree.tostring(message), version)
        operation = self.contract.by_request_element(envelope.first_body_child.tag)  # type: ignore[union-attr]
        assert operation is not None
        self.assertEqual(operation.name, name)
        headers = read_addressing(envelope)
        self.assertEqual(headers.action, operation.action)
        self.assertEqual(headers.to, ADDRESS)
        return operation.decode_request(envelope.first_body_child)  # type: ignore[arg-type]

    def test_add_both_ports(self) -> None:
        """Add(2, 3) built by zeep on either port decodes to a=2, b=3 with zeep's automatic WS-A action."""
        for version, service in self.services():
            message = self.client.create_message(service, "Add", a=2, b=3)
            self.assertEqual(self.decode(message, version, "Add"), {"a": 2, "b": 3})

    def test_complex_both_ports(self) -> None:
        """Nested complex types and lists built by zeep decode into the typed dataclasses."""
        created = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
        for version, service in self.services():
            message = self.client.create_message(
                service,
                "Centroid",
                shape={
                    "name": "tri",
                    "points": [{"x": 1.0, "y": 2.0}, {"x": 3.0, "y": 4.5, "label": "b"}],
                    "created": created,
                    "price": Decimal("9.95"),
                    "data": b"\x01\x02",
                    "day": datetime.date(2024, 5, 1),
                    "visible": True,
                },
                weights=[0.25, 0.75],
                note=None,
            )
            expected = Shape(
                "tri",
                [Point(1.0, 2.0), Point(3.0, 4.5, "b")],
                created,
                Decimal("9.95"),
                b"\x01\x02",
                datetime.date(2024, 5, 1),
                True,
            )
            self.assertEqual(
                self.decode(message, version, "Centroid"),
                {"shape": expected, "weights": [0.25, 0.75], "note": None},
            )

    def test_infinity_and_nan_as_zeep_writes_them(self) -> None:
        """zeep writes xsd:double specials as Python spells them (inf, -inf, nan); they decode."""
        shape = {
            "name": "s",
            "points": [{"x": 0.0, "y": 0.0}],
            "created": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
            "price": Decimal("1"),
            "data": b"",
            "day": datetime.date(2024, 1, 1),
            "visible": True,
        }
        for version, service in self.services():
            message = self.client.create_message(
                service,
                "Centroid",
                shape=shape,
                weights=[float("inf"), float("-inf"), float("nan")],
                note=None,
            )
            self.assertIn(b">inf<", etree.tostring(message))
            weights = self.decode(message, version, "Centroid")["weights"]
            self.assertEqual(weights[:2], [float("inf"), float("-inf")])
            self.assertNotEqual(weights[2], weights[2])

    def test_one_way_and_empty(self) -> None:
        """One-way and parameterless operations build and decode."""
        for version, service in self.services():
            self.assertEqual(
                self.decode(self.client.create_message(service, "Notify", text="hi"), version, "Notify"),
                {"text": "hi"},
            )
            self.assertEqual(self.decode(self.client.create_message(service, "Reset"), version, "Reset"), {})

    def test_zeep_reads_our_response_and_fault(self) -> None:
        """zeep parses the response element we encode, and the declared fault detail type is known to it."""
        add = self.contract.operation("Add")
        response_type = self.client.get_element(f"{{{NS}}}AddResponse")
        parsed = response_type.parse(add.encode_response(5), self.client.wsdl.types)
        self.assertEqual(parsed.AddResult, 5)
        detail_type = self.client.get_element(f"{{{NS}}}DivideByZero")
        detail = detail_type.parse(
            self.contract.operation("Divide").encode_fault(DivideByZero(4)), self.client.wsdl.types
        )
        self.assertEqual(detail.dividend, 4)


class RewriteTests(SynchronousTestCase):
    """Hardened re-parse and address rewriting of registered WSDL."""

    def test_rewrite_ours(self) -> None:
        """Both port addresses point at the public URL; the input tree is left alone."""
        root = parse_wsdl(wsdl_bytes())
        rewritten = parse_wsdl(rewrite_addresses(root, PUBLIC))
        locations = [
            a.get("location")
            for a in rewritten.iter(f"{{{SOAP11_BINDING_NS}}}address", f"{{{SOAP12_BINDING_NS}}}address")
        ]
        self.assertEqual(locations, [PUBLIC, PUBLIC])
        self.assertNotIn(PUBLIC.encode(), etree.tostring(root))

    def test_rewrite_third_party(self) -> None:
        """A bridged service's WSDL (spyne style) gets the public address too."""
        rewritten = rewrite_addresses(parse_wsdl(SPYNE_LIKE), PUBLIC)
        self.assertNotIn(b"10.0.0.5", rewritten)
        self.assertIn(PUBLIC.encode(), rewritten)

    def test_hostile_refused(self) -> None:
        """A WSDL with a DOCTYPE, over the cap, or not WSDL at all is refused."""
        for data in (
            b'<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/">&x;</wsdl:definitions>',
            b"<definitions/>",
            b"<wsdl:definitions xmlns:wsdl='http://schemas.xmlsoap.org/wsdl/'>"
            + b" " * (256 * 1024)
            + b"</wsdl:definitions>",
        ):
            self.assertRaises(WsdlError, parse_wsdl, data)

    def test_cap_bounds(self) -> None:
        """The WSDL limit can be raised up to 1 MiB and no further."""
        big = (
            b"<wsdl:definitions xmlns:wsdl='http://schemas.xmlsoap.org/wsdl/'>"
            + b" " * (300 * 1024)
            + b"</wsdl:definitions>"
        )
        self.assertEqual(parse_wsdl(big, max_bytes=1024 * 1024).tag, f"{{{WSDL_NS}}}definitions")
        self.assertRaises(ValueError, parse_wsdl, big, 1024 * 1024 + 1)


class HashTests(SynchronousTestCase):
    """The portType hash of the listener policy (spec 10.3)."""

    def test_stable_under_cosmetics(self) -> None:
        """Addresses, prefixes and formatting do not change the hash."""
        original = parse_wsdl(wsdl_bytes())
        moved = parse_wsdl(rewrite_addresses(original, PUBLIC))
        reprefixed = parse_wsdl(
            wsdl_bytes()
            .replace(b"tns:", b"calc:")
            .replace(b"xmlns:tns=", b"xmlns:calc=")
            .replace(b"\n  ", b"\n")
        )
        self.assertEqual(port_type_hash(original), port_type_hash(moved))
        self.assertEqual(port_type_hash(original), port_type_hash(reprefixed))
        self.assertEqual(len(port_type_hash(original)), 64)

    def test_sensitive_to_contract(self) -> None:
        """Another contract, a changed action or a changed parameter element changes the hash."""
        original = port_type_hash(parse_wsdl(wsdl_bytes()))
        self.assertNotEqual(original, port_type_hash(parse_wsdl(generate_wsdl(contract_of(IChat), ADDRESS))))
        changed_action = wsdl_bytes().replace(
            b'wsam:Action="urn:example:calc/ICalculator/Add"', b'wsam:Action="urn:x"'
        )
        self.assertNotEqual(original, port_type_hash(parse_wsdl(changed_action)))
        changed_part = wsdl_bytes().replace(b'element="tns:Add"', b'element="tns:Divide"')
        self.assertNotEqual(original, port_type_hash(parse_wsdl(changed_part)))

    def test_sensitive_to_types(self) -> None:
        """
        The types the messages' elements are made of are part of the contract: another type, another hash.

        A listener whose parameter became a string, or whose complex type gained a field, cannot take the
        requests the name's other listeners take. Their prefixes, annotations and formatting do not count.
        """
        original = wsdl_bytes()
        digest = port_type_hash(parse_wsdl(original))
        add_a = b'<xsd:element name="a" type="xsd:long"/>'
        self.assertIn(add_a, original)
        retyped = original.replace(add_a, b'<xsd:element name="a" type="xsd:string"/>', 1)
        point = b'<xsd:element name="y" type="xsd:double"/>'
        grown = original.replace(point, point + b'<xsd:element name="z" type="xsd:double"/>')
        for changed in (retyped, grown):
            self.assertNotEqual(digest, port_type_hash(parse_wsdl(changed)))
        reprefixed = original.replace(b"xsd:", b"xs:").replace(b"xmlns:xsd=", b"xmlns:xs=")
        annotated = original.replace(
            b'<xsd:complexType name="Point">',
            b'<xsd:complexType name="Point"><xsd:annotation><xsd:documentation>A point.'
            b"</xsd:documentation></xsd:annotation>",
        )
        for cosmetic in (reprefixed, annotated, original.replace(b"\n      ", b"\n")):
            self.assertEqual(digest, port_type_hash(parse_wsdl(cosmetic)))

    def test_sensitive_to_soap_action(self) -> None:
        """Without wsam:Action the routing uses the binding's soapAction: another soapAction, another hash."""
        original = port_type_hash(parse_wsdl(SPYNE_LIKE))
        changed = SPYNE_LIKE.replace(b'soapAction="Add"', b'soapAction="Subtract"')
        self.assertNotEqual(original, port_type_hash(parse_wsdl(changed)))

    def test_linear_in_references(self) -> None:
        """
        A message referenced by thousands of inputs is described once: the canonical form stays small.

        Listing its parts at every reference made a WSDL of a few hundred kilobytes cost gigabytes.
        """
        parts, references = 400, 400
        document = (
            '<w:definitions xmlns:w="http://schemas.xmlsoap.org/wsdl/" targetNamespace="">'
            '<w:message name="m">' + '<w:part name="p"/>' * parts + "</w:message>"
            '<w:portType name="P"><w:operation name="o">'
            + '<w:input message="m"/>'
            * references
            + "</w:operation>"
            "</w:portType></w:definitions>"
        ).encode()
        canonical = json.dumps(_canonical_port_types(etree.fromstring(document)))
        self.assertLess(len(canonical), 40 * (parts + references))


class DescribeTests(SynchronousTestCase):
    """Operation descriptions the gateway routes by."""

    def test_ours(self) -> None:
        """Our WSDL yields each operation's action, one-way flag and request element."""
        operations = describe_operations(parse_wsdl(wsdl_bytes()))
        self.assertIn(
            WsdlOperation("Notify", "urn:example:calc/ICalculator/Notify", True, (NS, "Notify")), operations
        )
        self.assertIn(
            WsdlOperation("Add", "urn:example:calc/ICalculator/Add", False, (NS, "Add")), operations
        )
        self.assertEqual(len(operations), 5)

    def test_no_action_declared(self) -> None:
        """
        Neither wsam:Action nor a soapAction (JAX-WS's soapAction=""): the default action of WS-A Metadata.

        The operation had no action, so the gateway refused every call to it (ActionNotSupported).
        """
        jaxws = SPYNE_LIKE.replace(b'soapAction="Add"', b'soapAction=""')
        self.assertEqual(
            describe_operations(parse_wsdl(jaxws)),
            (WsdlOperation("Add", "urn:example:calc:Application:Add", False, (NS, "Add")),),
        )
        unnamed = jaxws.replace(b'<wsdl:input name="Add" message', b"<wsdl:input message")
        (operation,) = describe_operations(parse_wsdl(unnamed))
        self.assertEqual(operation.action, "urn:example:calc:Application:AddRequest")
        self.assertEqual(
            default_action("http://example.org/greeter", "Greeter", "greet"),
            "http://example.org/greeter/Greeter/greet",
        )
        self.assertEqual(
            default_action("http://example.org/", "Greeter", "greet"), "http://example.org/Greeter/greet"
        )
        self.assertEqual(default_action("URN:x:", "P", "m"), "URN:x:P:m")

    def test_spyne_like(self) -> None:
        """Without wsam:Action the soapAction (a bare name for spyne) is the action."""
        self.assertEqual(
            describe_operations(parse_wsdl(SPYNE_LIKE)), (WsdlOperation("Add", "Add", False, (NS, "Add")),)
        )
