"""Tests for L{bindings.inbound}: sender envelopes before routing (spec 6, 10.2, 11)."""

from __future__ import annotations

from lxml import etree
from twisted.trial.unittest import SynchronousTestCase

from bindings.addressing import ANONYMOUS, SenderInfo, read_addressing, read_sender, relay_token_header
from bindings.contracts import contract_of
from bindings.control import HTTP_AUTHORIZATION_TAG, read_http_authorization
from bindings.faultcodes import RelayFault
from bindings.inbound import Operations, Refusal, contract_problems, open_envelope, prepare, register_contract
from bindings.safexml import XmlLimits
from bindings.settings import MULTICAST, ONEWAY, REQUEST_REPLY
from bindings.soap import SOAP11_NS, SOAP12_NS, SoapVersion, parse_envelope
from bindings.wsdl import WsdlError, describe_operations, generate_wsdl, parse_wsdl

from .calculator import ICalculator, IChat

CALC = contract_of(ICalculator)
OPERATIONS = Operations(describe_operations(parse_wsdl(generate_wsdl(CALC, "sb://x/calc"))))
ADD = CALC.operation("Add")
NOTIFY = CALC.operation("Notify")
SENDER = SenderInfo("root", "T-1")
TO = "https://relay.example/calc"


def document(version: SoapVersion, body: bytes, header: bytes = b"") -> bytes:
    return (
        f'<s:Envelope xmlns:s="{version.namespace}" xmlns:a="http://www.w3.org/2005/08/addressing">'.encode()
        + b"<s:Header>"
        + header
        + b"</s:Header><s:Body>"
        + body
        + b"</s:Body></s:Envelope>"
    )


ADD_BODY = etree.tostring(ADD.encode_request(2, 3))


class OpenEnvelopeTests(SynchronousTestCase):
    """Parsing through the hardened parser, with the fault each refusal maps to."""

    def refusal(
        self, data: bytes, announced: SoapVersion | None = SoapVersion.SOAP12, limit: int = 65536
    ) -> Refusal:
        with self.assertRaises(Refusal) as caught:
            open_envelope(data, announced=announced, charset=None, limits=XmlLimits(max_bytes=limit))
        return caught.exception

    def test_hostile(self) -> None:
        """DOCTYPE, PI before the root, depth and garbage: InvalidMessage in the announced version."""
        for data in (
            b"<!DOCTYPE x [<!ENTITY e 'x'>]>" + document(SoapVersion.SOAP12, ADD_BODY),
            b"<?pi x?>" + document(SoapVersion.SOAP12, ADD_BODY),
            document(SoapVersion.SOAP12, b"<a>" * 80 + b"</a>" * 80),
            b"not xml",
        ):
            refusal = self.refusal(data)
            self.assertEqual(
                (refusal.kind, refusal.version), (RelayFault.INVALID_MESSAGE, SoapVersion.SOAP12)
            )

    def test_size_and_version(self) -> None:
        """Over the limit: MessageTooLarge; another envelope namespace: VersionMismatch in the announced one."""
        self.assertIs(
            self.refusal(document(SoapVersion.SOAP12, ADD_BODY), limit=100).kind, RelayFault.MESSAGE_TOO_LARGE
        )
        mismatch = self.refusal(document(SoapVersion.SOAP12, ADD_BODY), SoapVersion.SOAP11)
        self.assertEqual(
            (mismatch.kind, mismatch.version, mismatch.subcode), (None, SoapVersion.SOAP11, "VersionMismatch")
        )

    def test_relay_token_taken_out(self) -> None:
        """The RelayAccessToken header is returned as the token and removed; a broken one is Unauthorized."""
        header = etree.tostring(relay_token_header("SharedAccessSignature x"))
        envelope, token = open_envelope(
            document(SoapVersion.SOAP11, ADD_BODY, header),
            announced=SoapVersion.SOAP11,
            charset=None,
            limits=XmlLimits(),
        )
        self.assertEqual((token, envelope.headers), ("SharedAccessSignature x", ()))
        broken = header.replace(b">U2", b">!!")
        self.assertIs(
            self.refusal(document(SoapVersion.SOAP11, ADD_BODY, broken), SoapVersion.SOAP11).kind,
            RelayFault.UNAUTHORIZED,
        )


class PrepareTests(SynchronousTestCase):
    """Addressing rules, action resolution and delivery headers."""

    def envelope(
        self, version: SoapVersion = SoapVersion.SOAP12, header: bytes = b"", body: bytes = ADD_BODY
    ) -> object:
        return parse_envelope(document(version, body, header), version)

    def prepared(
        self,
        version: SoapVersion = SoapVersion.SOAP12,
        header: bytes = b"",
        body: bytes = ADD_BODY,
        **kwargs: object,
    ) -> object:
        options = {"kind": REQUEST_REPLY, "operations": OPERATIONS, "to": TO, "sender": SENDER, **kwargs}
        return prepare(self.envelope(version, header, body), **options)  # type: ignore[arg-type]

    def test_soap11_request(self) -> None:
        """SOAP 1.1 with SOAPAction: SOAP 1.2 for the listener, To, Action, generated MessageID, ReplyTo, r:Sender."""
        prepared = self.prepared(SoapVersion.SOAP11, soap_action=ADD.action)
        delivered = parse_envelope(prepared.payload, SoapVersion.SOAP12)  # type: ignore[attr-defined]
        headers = read_addressing(delivered)
        self.assertEqual((headers.to, headers.action, headers.reply_to), (TO, ADD.action, ANONYMOUS))
        self.assertEqual(headers.message_id, prepared.message_id)  # type: ignore[attr-defined]
        self.assertTrue(prepared.message_id.startswith("urn:uuid:"))  # type: ignore[attr-defined]
        self.assertEqual(read_sender(delivered), SENDER)
        self.assertFalse(prepared.one_way)  # type: ignore[attr-defined]

    def test_one_way_operation(self) -> None:
        """A one-way operation of a request/reply contract is a datagram: no ReplyTo."""
        body = etree.tostring(NOTIFY.encode_request("x"))
        prepared = self.prepared(body=body)
        self.assertTrue(prepared.one_way)  # type: ignore[attr-defined]
        self.assertIsNone(read_addressing(parse_envelope(prepared.payload)).reply_to)  # type: ignore[attr-defined]

    def test_action_sources(self) -> None:
        """wsa:Action, the media action and SOAPAction must agree with each other and with the body."""
        wsa = f"<a:Action>{NOTIFY.action}</a:Action>".encode()
        with self.assertRaises(Refusal) as caught:
            self.prepared(header=wsa)
        self.assertIs(caught.exception.kind, RelayFault.ACTION_MISMATCH)
        with self.assertRaises(Refusal) as caught:
            self.prepared(media_action="urn:other")
        self.assertIs(caught.exception.kind, RelayFault.ACTION_MISMATCH)
        with self.assertRaises(Refusal) as caught:
            self.prepared(body=b"<x:Y xmlns:x='urn:x'/>", media_action="urn:x/Y")
        self.assertIs(caught.exception.kind, RelayFault.ACTION_NOT_SUPPORTED)

    def test_multicast_without_contract(self) -> None:
        """Without a registered contract any action is accepted, but one is needed."""
        self.assertEqual(
            self.prepared(kind=MULTICAST, operations=None, media_action="urn:any").action, "urn:any"
        )  # type: ignore[attr-defined]
        with self.assertRaises(Refusal) as caught:
            self.prepared(kind=MULTICAST, operations=None)
        self.assertIs(caught.exception.kind, RelayFault.MESSAGE_ADDRESSING_HEADER_REQUIRED)

    def test_addressing_refusals(self) -> None:
        """Non-anonymous ReplyTo/FaultTo, a missing MessageID on WebSocket, strict duplicates."""
        reply_to = (
            b"<a:ReplyTo><a:Address>http://evil/</a:Address></a:ReplyTo><a:MessageID>urn:1</a:MessageID>"
        )
        with self.assertRaises(Refusal) as caught:
            self.prepared(header=reply_to)
        self.assertEqual(
            (caught.exception.kind, caught.exception.relates_to),
            (RelayFault.ONLY_ANONYMOUS_ADDRESS_SUPPORTED, "urn:1"),
        )
        with self.assertRaises(Refusal) as caught:
            self.prepared(require_message_id=True)
        self.assertIs(caught.exception.kind, RelayFault.MESSAGE_ADDRESSING_HEADER_REQUIRED)
        twice = b"<a:MessageID>urn:1</a:MessageID><a:MessageID>urn:2</a:MessageID>"
        self.assertEqual(self.prepared(header=twice).duplicates, ("MessageID",))  # type: ignore[attr-defined]
        with self.assertRaises(Refusal) as caught:
            self.prepared(header=twice, strict=True)
        self.assertIs(caught.exception.kind, RelayFault.INVALID_CARDINALITY)

    def test_authorization_and_forgeries(self) -> None:
        """A forwarded Authorization becomes r:HttpAuthorization; forged r: headers are replaced or dropped."""
        forged = b'<r:HttpAuthorization xmlns:r="urn:relay:bindings:1">Basic forged</r:HttpAuthorization><r:Sender xmlns:r="urn:relay:bindings:1"><r:KeyName>admin</r:KeyName></r:Sender>'
        plain = parse_envelope(self.prepared(header=forged).payload)  # type: ignore[attr-defined]
        self.assertEqual((read_http_authorization(plain), read_sender(plain)), (None, SENDER))
        forwarded = parse_envelope(self.prepared(authorization="Basic abc").payload)  # type: ignore[attr-defined]
        self.assertEqual(read_http_authorization(forwarded), "Basic abc")
        self.assertEqual(len(forwarded.find_headers(HTTP_AUTHORIZATION_TAG)), 1)

    def test_soap11_header_attributes(self) -> None:
        """SOAP 1.1 mustUnderstand/actor become SOAP 1.2 mustUnderstand/role."""
        header = f'<x:H xmlns:x="urn:x" xmlns:e="{SOAP11_NS}" e:mustUnderstand="1" e:actor="http://schemas.xmlsoap.org/soap/actor/next"/>'.encode()
        delivered = parse_envelope(
            self.prepared(SoapVersion.SOAP11, header=header, soap_action=ADD.action).payload
        )  # type: ignore[attr-defined]
        block = delivered.find_headers("{urn:x}H")[0]
        self.assertEqual(block.get(f"{{{SOAP12_NS}}}mustUnderstand"), "true")
        self.assertEqual(
            block.get(f"{{{SOAP12_NS}}}role"), "http://www.w3.org/2003/05/soap-envelope/role/next"
        )


class ContractTests(SynchronousTestCase):
    """Registered contracts."""

    def test_kinds(self) -> None:
        """oneway and multicast names need all one-way contracts; request/reply takes any."""
        chat = describe_operations(parse_wsdl(generate_wsdl(contract_of(IChat), "sb://x/chat")))
        self.assertIsNone(contract_problems(ONEWAY, chat))
        self.assertIsNone(contract_problems(REQUEST_REPLY, OPERATIONS.items))
        self.assertIn("Add", contract_problems(MULTICAST, OPERATIONS.items) or "")
        self.assertIsNotNone(contract_problems(ONEWAY, ()))

    def test_register_contract(self) -> None:
        """A registered WSDL is re-parsed, described and hashed; a hostile one is refused."""
        contract = register_contract(generate_wsdl(CALC, "sb://x/calc"), REQUEST_REPLY, 262144)
        self.assertEqual(contract.operations.by_action(ADD.action).name, "Add")  # type: ignore[union-attr]
        self.assertEqual(contract.operations.by_element(ADD.request_element).name, "Add")  # type: ignore[union-attr]
        self.assertEqual(len(contract.hash), 64)
        self.assertRaises(WsdlError, register_contract, b"<!DOCTYPE x []><x/>", REQUEST_REPLY, 262144)
        self.assertRaises(WsdlError, register_contract, generate_wsdl(CALC, "sb://x"), ONEWAY, 262144)
