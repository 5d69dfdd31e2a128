"""
End to end: a service whose WSDL gives its operations no action (C{soapAction=""}, no C{wsam:Action}).

That is the default of JAX-WS and Apache CXF services: they dispatch on the body element. zeep calls them
with C{SOAPAction: ""} and no WS-Addressing headers.
"""

from __future__ import annotations

from typing import Any

from lxml import etree
from twisted.internet import reactor
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import Site

from bindings.bridge import SoapBridge
from bindings.credentials import parse_address

from .e2e_support import BindingsE2E

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "http://example.org/greeter"

WSDL = f"""<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:tns="{TNS}" targetNamespace="{TNS}" name="GreeterService">
  <types>
    <xsd:schema targetNamespace="{TNS}" elementFormDefault="unqualified">
      <xsd:element name="greet"><xsd:complexType><xsd:sequence>
        <xsd:element name="name" type="xsd:string"/></xsd:sequence></xsd:complexType></xsd:element>
      <xsd:element name="greetResponse"><xsd:complexType><xsd:sequence>
        <xsd:element name="return" type="xsd:string"/></xsd:sequence></xsd:complexType></xsd:element>
    </xsd:schema>
  </types>
  <message name="greet"><part name="parameters" element="tns:greet"/></message>
  <message name="greetResponse"><part name="parameters" element="tns:greetResponse"/></message>
  <portType name="Greeter">
    <operation name="greet"><input message="tns:greet"/><output message="tns:greetResponse"/></operation>
  </portType>
  <binding name="GreeterPortBinding" type="tns:Greeter">
    <soap:binding transport="http://schemas.xmlsoap.org/soap/http" style="document"/>
    <operation name="greet">
      <soap:operation soapAction=""/>
      <input><soap:body use="literal"/></input><output><soap:body use="literal"/></output>
    </operation>
  </binding>
  <service name="GreeterService">
    <port name="GreeterPort" binding="tns:GreeterPortBinding"><soap:address location="http://x/greeter"/></port>
  </service>
</definitions>
""".encode()


class Greeter(Resource):
    """What a JAX-WS endpoint does with such a contract: dispatch on the body element, note SOAPAction."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.soap_actions: list[bytes | None] = []

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/xml;charset=utf-8")
        return WSDL

    def render_POST(self, request: Any) -> bytes:
        self.soap_actions.append(request.getHeader(b"soapaction"))
        envelope = etree.fromstring(request.content.read())
        name = envelope.findtext(f"{{{SOAP11}}}Body/{{{TNS}}}greet/name")
        request.setHeader(b"content-type", b"text/xml;charset=utf-8")
        return (
            f'<S:Envelope xmlns:S="{SOAP11}"><S:Body><ns2:greetResponse xmlns:ns2="{TNS}">'
            f"<return>Hello {name}</return></ns2:greetResponse></S:Body></S:Envelope>"
        ).encode()


class ActionlessContractTests(BindingsE2E):
    async def test_call_through_the_bridge(self) -> None:
        """
        zeep's call reaches the service, with the SOAPAction its WSDL declares (empty), and answers.

        The gateway refused it: no action came with it and the contract's operation had none
        (ActionNotSupported, "the message names no action and its body matches no operation").
        """
        await self.start()
        greeter = Greeter()
        port: IListeningPort = reactor.listenTCP(0, Site(greeter), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        backend = f"http://127.0.0.1:{port.getHost().port}/greeter"  # type: ignore[attr-defined]
        bridge = SoapBridge(backend, parse_address(self.url("legacy")), self.credentials(), reactor=reactor)
        await bridge.start()
        self.addCleanup(bridge.stop)
        answer = await self.in_thread(
            lambda: self.zeep_client("legacy", self.token("legacy")).service.greet("Ada")
        )
        self.assertEqual(answer, "Hello Ada")
        self.assertEqual(greeter.soap_actions, [b'""'])
