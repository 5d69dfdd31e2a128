"""
End to end: services shaped like JAX-WS and WCF ones behind the bridge, called by zeep.

JAX-WS and Apache CXF give operations no action by default (C{soapAction=""}, no C{wsam:Action}) and
dispatch on the body element; zeep calls them with C{SOAPAction: ""} and no WS-Addressing headers. Their
WSDL imports its schema (C{?xsd=1}); a WCF service's C{?wsdl} imports a second WSDL (C{?wsdl=wsdl0}).
"""

from __future__ import annotations

from typing import Any

from lxml import etree
from twisted.internet import reactor
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import Site

from bindings.bridge import BridgeError, SoapBridge
from bindings.credentials import parse_address

from .e2e_support import BindingsE2E

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "http://example.org/greeter"

WSDL = f"""<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:tns="{TNS}" targetNamespace="{TNS}" name="GreeterService">
  <types>
    <xsd:schema><xsd:import namespace="{TNS}" schemaLocation="greeter?xsd=1"/></xsd:schema>
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


XSD = f"""<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:tns="{TNS}" targetNamespace="{TNS}" version="1.0">
  <xs:element name="greet" type="tns:greet"/>
  <xs:element name="greetResponse" type="tns:greetResponse"/>
  <xs:complexType name="greet"><xs:sequence><xs:element name="name" type="xs:string"/></xs:sequence></xs:complexType>
  <xs:complexType name="greetResponse"><xs:sequence>
    <xs:element name="return" type="xs:string"/></xs:sequence></xs:complexType>
</xs:schema>
""".encode()


class Greeter(Resource):
    """What a JAX-WS endpoint does with such a contract: dispatch on the body element, note SOAPAction."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.soap_actions: list[bytes | None] = []

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/xml;charset=utf-8")
        if request.args.get(b"xsd") == [b"1"]:
            return XSD
        if request.args.get(b"wsdl") == [b"wsdl0"] or b"wcf" in request.uri:
            return WSDL.replace(
                b"<types>", b'<import namespace="urn:other" location="greeter?wsdl=wsdl0"/><types>'
            )
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
        The schema the WSDL imports (?xsd=1, relative) is put in the WSDL the relay serves: zeep looked for
        it at the relay's URL and got 404.
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

        def soap12() -> Any:
            body = (
                f'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
                f'<g:greet xmlns:g="{TNS}"><name>Bo</name></g:greet></s:Body></s:Envelope>'
            )
            headers = {"content-type": "application/soap+xml; charset=utf-8"}
            return self.session(self.token("legacy")).post(
                self.url("legacy"), data=body.encode(), headers=headers
            )

        reply = await self.in_thread(soap12)
        self.assertEqual(reply.status_code, 200)
        # the reply action WS-Addressing Metadata gives the output (wsa:Action and the action parameter)
        self.assertIn(f'action="{TNS}/Greeter/greetResponse"', reply.headers["content-type"])

    async def test_wsdl_importing_wsdl(self) -> None:
        """
        A WSDL that imports another WSDL (WCF's ?wsdl): the bridge says so at start.

        It cannot be registered as one document; the message names WCF's single-document form, rather
        than the bridge registering half a contract (routing found no operation in it).
        """
        await self.start()
        port: IListeningPort = reactor.listenTCP(0, Site(Greeter()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        backend = f"http://127.0.0.1:{port.getHost().port}/greeter"  # type: ignore[attr-defined]
        bridge = SoapBridge(
            backend,
            parse_address(self.url("legacy")),
            self.credentials(),
            reactor=reactor,
            wsdl_url=backend + "?wsdl&wcf",
        )
        with self.assertRaises(BridgeError) as refused:
            await bridge.start()
        self.assertIn("imports another WSDL", str(refused.exception))
        self.assertIn("?singleWsdl", str(refused.exception))
