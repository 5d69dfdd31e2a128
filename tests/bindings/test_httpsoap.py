"""The HTTP SOAP endpoint, ?wsdl and the registry feed, in memory (a real ServiceHost listens over iosim)."""

from __future__ import annotations

import os
import random
from typing import Any

from lxml import etree
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, TimeoutError
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from zope.interface import Interface

from bindings import inbound, registryfeed, wsdl
from bindings.addressing import ANONYMOUS, WSSE_NS, read_addressing, read_sender, relay_token_header
from bindings.channels import BytesProducer, HttpChannelFactory, read_capped
from bindings.contracts import ContractError, contract, contract_of, operation
from bindings.control import read_http_authorization
from bindings.faultcodes import RELAY_NS
from bindings.faults import SoapFault, parse_fault
from bindings.host import ServiceHost
from bindings.registry import ATOM_NS, build_feed
from bindings.settings import ONEWAY, BindingEntitySettings, Discovery, MulticastBinding, RequestReplyBinding
from bindings.soap import SOAP11_NS, SOAP12_NS, Envelope, SoapVersion, parse_envelope
from bindings.wsdl import SOAP11_BINDING_NS, SOAP12_BINDING_NS
from relay.entities import Entity

from .calculator import ICalculator, IChat, IChecked
from .services import Calculator, ChatRoom
from .wcfharness import HOST, LISTEN_KEY, SEND_KEY, BindingsTestCase

CALC = contract_of(ICalculator)
ADD = CALC.operation("Add")
NS = CALC.namespace


def soap11(body: str, header: str = "") -> bytes:
    return (
        f'<s:Envelope xmlns:s="{SOAP11_NS}" xmlns:c="{NS}"><s:Header>{header}</s:Header>'
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def soap12(body: str, header: str = "") -> bytes:
    return (
        f'<s:Envelope xmlns:s="{SOAP12_NS}" xmlns:c="{NS}" xmlns:a="http://www.w3.org/2005/08/addressing">'
        f"<s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


ADD_BODY = "<c:Add><c:a>2</c:a><c:b>3</c:b></c:Add>"


class Recorder:
    """Wraps a listener's handler to keep what the gateway delivered."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.seen: list[Envelope] = []

    def handle(self, envelope: Envelope) -> Deferred[Envelope | None]:
        self.seen.append(envelope)
        return self.handler.handle(envelope)  # type: ignore[no-any-return]


class HttpTestCase(BindingsTestCase):
    """An in-memory HTTP client next to the in-memory WebSocket network."""

    def setUp(self) -> None:
        super().setUp()
        self.agent = RequestTraversalAgent(self.service.root)
        self.calculator = Calculator()

    def host(
        self, path: str = "calc", service: Any = None, interface: Any = ICalculator, binding: Any = None
    ) -> Recorder:
        entity = self.service.store.get(self.namespace, path)
        binding = binding or RequestReplyBinding(
            client_auth=entity.settings.client_auth,
            discovery=entity.settings.discovery,  # type: ignore[union-attr]
        )
        host = ServiceHost(
            service or self.calculator,
            interface,
            f"wss://{HOST}/{path}",
            binding,
            self.credentials(),
            reactor=self.clock,
            endpoint=self.endpoint,
            rng=random.Random(0),
        )
        recorder = Recorder(host.session.handler)
        host.session.handler = recorder
        opening = host.open()
        self.net.flush()
        self.successResultOf(opening)
        return recorder

    def settle(self, d: Deferred[Any], seconds: float = 0) -> Any:
        for _ in range(50):
            self.agent.flush()
            self.net.flush()
            if d.called and not d.paused:
                break
        if seconds:
            self.net.advance(seconds)
            for _ in range(20):
                self.agent.flush()
                self.net.flush()
        return self.successResultOf(d)

    def http(
        self,
        method: bytes,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        wait: float = 0,
    ) -> tuple[int, Headers, bytes]:
        raw = Headers({k.encode(): [v.encode()] for k, v in (headers or {}).items()})
        response = self.settle(
            self.agent.request(
                method, f"http://{HOST}{path}".encode(), raw, BytesProducer(body) if body else None
            ),
            wait,
        )
        data = self.settle(read_capped(response, 1 << 24))
        return response.code, response.headers, data

    def post(
        self,
        path: str,
        body: bytes,
        version: SoapVersion = SoapVersion.SOAP11,
        token: str | None = "",
        action: str | None = ADD.action,
        wait: float = 0,
        **extra: str,
    ) -> tuple[int, Headers, bytes]:
        headers = dict(extra)
        if version is SoapVersion.SOAP11:
            headers["Content-Type"] = "text/xml; charset=utf-8"
            if action is not None:
                headers["SOAPAction"] = f'"{action}"'
        else:
            headers["Content-Type"] = "application/soap+xml; charset=utf-8" + (
                f'; action="{action}"' if action else ""
            )
        if token == "":
            token = self.token(path.strip("/").split("?")[0])
        if token is not None:
            headers["ServiceBusAuthorization"] = token
        return self.http(b"POST", path, body, headers, wait)

    def start_add(self, name: str) -> Deferred[IResponse]:
        """POST a SOAP 1.1 C{Add} with the name's token and let it reach the listener; the response is pending."""
        raw = Headers(
            {
                b"content-type": [b"text/xml"],
                b"soapaction": [ADD.action.encode()],
                b"servicebusauthorization": [self.token(name).encode()],
            }
        )
        pending: Deferred[IResponse] = self.agent.request(
            b"POST", f"http://{HOST}/{name}".encode(), raw, BytesProducer(soap11(ADD_BODY))
        )
        self.agent.flush()
        self.net.flush()
        return pending

    def fault_of(self, data: bytes, version: SoapVersion = SoapVersion.SOAP11) -> tuple[str, str]:
        envelope = parse_envelope(data, version)
        fault = parse_fault(envelope.body[0], version)
        return (fault.subcodes[-1][1] if fault.subcodes else fault.code.value), fault.reason


class SoapPostTests(HttpTestCase):
    """SOAP 1.1 and 1.2 senders over HTTP (spec 6.2, 6.3)."""

    def test_soap11_request(self) -> None:
        """SOAP 1.1: the listener sees SOAP 1.2 + WS-A; the caller gets 200 text/xml without addressing."""
        recorder = self.host()
        status, headers, data = self.post("/calc", soap11(ADD_BODY))
        self.assertEqual(status, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"text/xml; charset=utf-8"])
        reply = parse_envelope(data, SoapVersion.SOAP11)
        self.assertEqual(reply.headers, ())
        self.assertEqual(ADD.decode_response(reply.body[0]), 5)
        seen = recorder.seen[0]
        addressing = read_addressing(seen)
        self.assertEqual(seen.version, SoapVersion.SOAP12)
        self.assertEqual(
            (addressing.to, addressing.action, addressing.reply_to),
            (f"https://{HOST}/calc", ADD.action, ANONYMOUS),
        )
        self.assertTrue(addressing.message_id.startswith("urn:uuid:"))  # type: ignore[union-attr]
        self.assertEqual(read_sender(seen).key_name, "root")  # type: ignore[union-attr]

    def test_soap12_request(self) -> None:
        """SOAP 1.2 with only the action parameter: 200 with the reply's action in the Content-Type."""
        self.host()
        status, headers, data = self.post("/calc", soap12(ADD_BODY), SoapVersion.SOAP12)
        self.assertEqual(status, 200)
        self.assertIn(f'action="{ADD.reply_action}"'.encode(), headers.getRawHeaders(b"content-type")[0])  # type: ignore[index]
        self.assertEqual(ADD.decode_response(parse_envelope(data, SoapVersion.SOAP12).body[0]), 5)

    def test_body_decides_action(self) -> None:
        """Without any action source the body's element picks the operation."""
        self.host()
        status, _, _ = self.post("/calc", soap12(ADD_BODY), SoapVersion.SOAP12, action=None)
        self.assertEqual(status, 200)

    def test_one_way(self) -> None:
        """A one-way operation of a request/reply contract: 202, empty body, the service got it once."""
        self.host()
        notify = CALC.operation("Notify")
        status, _, data = self.post(
            "/calc", soap11("<c:Notify><c:text>x</c:text></c:Notify>"), action=notify.action
        )
        self.assertEqual((status, data), (202, b""))
        self.assertEqual(self.calculator.notified, ["x"])

    def test_multicast_count(self) -> None:
        """A multicast publish: 202 with Relay-Delivered-Count; zero subscribers is a success with 0."""
        say = contract_of(IChat).operation("Say")
        body = f'<h:Say xmlns:h="{say.namespace}"><h:who>a</h:who><h:text>b</h:text></h:Say>'
        status, headers, _ = self.post("/chat", soap12(body), SoapVersion.SOAP12, action=say.action)
        self.assertEqual((status, headers.getRawHeaders(b"relay-delivered-count")), (202, [b"0"]))
        rooms = [ChatRoom(), ChatRoom()]
        for room in rooms:
            self.host("chat", room, IChat, MulticastBinding())
        status, headers, _ = self.post("/chat", soap12(body), SoapVersion.SOAP12, action=say.action)
        self.assertEqual((status, headers.getRawHeaders(b"relay-delivered-count")), (202, [b"2"]))
        self.assertEqual([r.heard for r in rooms], [[("a", "b")]] * 2)

    def test_action_control_character(self) -> None:
        """A SOAPAction or action= with a control character, on a name without contract: 400, not 500."""
        body = soap12("<h:Say xmlns:h='urn:chat'/>")
        for version in (SoapVersion.SOAP11, SoapVersion.SOAP12):
            envelope = soap11("<h:Say xmlns:h='urn:chat'/>") if version is SoapVersion.SOAP11 else body
            status, _, data = self.post("/chat", envelope, version, action="urn:chat/\x01Say")
            self.assertEqual((status, self.fault_of(data, version)[0]), (400, "InvalidMessage"))

    def test_declared_fault(self) -> None:
        """A declared fault: SOAP 1.1 500 with Client and the detail; SOAP 1.2 400 with Sender."""
        self.host()
        divide = CALC.operation("Divide")
        body = "<c:Divide><c:a>7</c:a><c:b>0</c:b></c:Divide>"
        status, _, data = self.post("/calc", soap11(body), action=divide.action)
        self.assertEqual(status, 500)
        fault = parse_fault(parse_envelope(data, SoapVersion.SOAP11).body[0], SoapVersion.SOAP11)
        self.assertEqual((fault.code.value, fault.detail[0].tag), ("Sender", f"{{{NS}}}DivideByZero"))
        self.assertIn(b"<faultcode>s:Client</faultcode>", data)
        status, _, _ = self.post("/calc", soap12(body), SoapVersion.SOAP12, action=divide.action)
        self.assertEqual(status, 400)

    def test_undeclared_fault(self) -> None:
        """An undeclared exception: 500, faultcode r:InternalServiceFault, generic reason."""
        self.host()
        status, _, data = self.post("/calc", soap11("<c:Add><c:a>666</c:a><c:b>0</c:b></c:Add>"))
        self.assertEqual(status, 500)
        self.assertEqual(self.fault_of(data)[0], "InternalServiceFault")
        self.assertNotIn(b"beast", data)
        self.flushLoggedErrors(RuntimeError)

    def test_gateway_faults(self) -> None:
        """NoListener 502, Timeout 504, ListenerGone 502: SOAP faults naming path and tracking id."""
        status, _, data = self.post("/calc", soap11(ADD_BODY))
        self.assertEqual((status, self.fault_of(data)[0]), (502, "NoListener"))
        self.assertIn("Path: /calc. TrackingId:", self.fault_of(data)[1])
        self.host()
        self.calculator.hold = True
        status, _, data = self.post("/calc", soap11(ADD_BODY), wait=5.1)
        self.assertEqual((status, self.fault_of(data)[0]), (504, "Timeout"))

    def test_listener_gone(self) -> None:
        """The listener leaving mid-request: 502 ListenerGone."""
        self.host()
        self.calculator.hold = True
        pending = self.start_add("calc")
        self.bindings.websocket_factory.close_all(1001, "going")
        response = self.settle(pending)
        data = self.settle(read_capped(response, 1 << 24))
        self.assertEqual((response.code, self.fault_of(data)[0]), (502, "ListenerGone"))

    def test_too_large(self) -> None:
        """Over the name's limit: 413 MessageTooLarge before parsing; nothing reaches the listener."""
        recorder = self.host("small")
        big = soap11(f"<c:Add><c:a>1</c:a><c:b>2</c:b></c:Add><!-- {'x' * 3000} -->")
        status, _, data = self.post("/small", big)
        self.assertEqual((status, self.fault_of(data)[0]), (413, "MessageTooLarge"))
        self.assertEqual(recorder.seen, [])

    def test_version_mismatch(self) -> None:
        """A SOAP 1.2 envelope posted as text/xml: a SOAP 1.1 VersionMismatch fault, counted as $wcf's are."""
        recorder = self.host()
        status, _, data = self.post("/calc", soap12(ADD_BODY))
        self.assertEqual(status, 500)
        self.assertEqual(self.fault_of(data)[0], "VersionMismatch")
        self.assertEqual(recorder.seen, [])
        self.assertEqual(self.bindings.instruments.faults.labels("calc", "VersionMismatch").value, 1)

    def test_addressing_faults(self) -> None:
        """A non-anonymous ReplyTo, a disagreeing action, an unknown action: 400 with the addressing fault."""
        recorder = self.host()
        reply_to = "<a:ReplyTo><a:Address>http://evil.example/</a:Address></a:ReplyTo>"
        status, _, data = self.post("/calc", soap12(ADD_BODY, reply_to), SoapVersion.SOAP12)
        self.assertEqual(
            (status, self.fault_of(data, SoapVersion.SOAP12)[0]), (400, "OnlyAnonymousAddressSupported")
        )
        status, _, data = self.post("/calc", soap11(ADD_BODY), action=CALC.operation("Divide").action)
        self.assertEqual((status, self.fault_of(data)[0]), (400, "ActionMismatch"))
        status, _, data = self.post("/calc", soap11("<x:Other xmlns:x='urn:x'/>"), action="urn:x/Other")
        self.assertEqual((status, self.fault_of(data)[0]), (400, "ActionNotSupported"))
        self.assertEqual(recorder.seen, [])

    def test_repeated_header_with_relative_namespace(self) -> None:
        """Copies of a WS-Addressing header with a relative namespace name in scope are compared (was a 500)."""
        recorder = self.host()
        copy = '<a:MessageID xmlns:x="relative">urn:uuid:7<x:y/></a:MessageID>'
        status, _, data = self.post("/calc", soap12(ADD_BODY, copy + copy), SoapVersion.SOAP12)
        self.assertEqual(status, 200, data)
        self.assertEqual(read_addressing(recorder.seen[0]).message_id, "urn:uuid:7")

    def test_not_soap(self) -> None:
        """A body that is not a SOAP media type: 400 InvalidMessage."""
        status, _, data = self.http(b"POST", "/calc", b"{}", {"Content-Type": "application/json"})
        self.assertEqual((status, self.fault_of(data)[0]), (400, "InvalidMessage"))

    def test_methods(self) -> None:
        """GET without ?wsdl and other methods are refused."""
        self.assertEqual(self.http(b"GET", "/calc")[0], 405)
        self.assertEqual(self.http(b"PUT", "/calc", b"x")[0], 405)


class HostileXmlTests(HttpTestCase):
    """Every hostile document is refused with InvalidMessage and nothing reaches a listener (spec 11)."""

    def setUp(self) -> None:
        super().setUp()
        self.recorder = self.host()
        self.secret = os.path.abspath(self.mktemp())
        with open(self.secret, "w") as f:
            f.write("TOP-SECRET-CONTENT")

    def refused(self, document: bytes, version: SoapVersion = SoapVersion.SOAP12) -> str:
        status, _, data = self.post("/calc", document, version)
        self.assertEqual(status, 400, data)
        subcode, reason = self.fault_of(data, version)
        self.assertEqual(subcode, "InvalidMessage")
        self.assertNotIn(b"TOP-SECRET", data)
        self.assertEqual(self.recorder.seen, [])
        self.assertEqual(self.calculator.calls, 0)
        return reason

    def test_xxe_file_read(self) -> None:
        """An external entity naming a local file."""
        doc = (
            f'<?xml version="1.0"?><!DOCTYPE s:Envelope [<!ENTITY x SYSTEM "file://{self.secret}">]>'.encode()
        )
        reason = self.refused(doc + soap12("<c:Add><c:a>&x;</c:a><c:b>1</c:b></c:Add>"))
        self.assertIn("document type", reason)

    def test_billion_laughs(self) -> None:
        """Nested entity expansion."""
        entities = '<!ENTITY a "lol">' + "".join(
            f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9)
        )
        doc = f"<?xml version='1.0'?><!DOCTYPE s:Envelope [{entities}]>".encode()
        self.refused(doc + soap12("<c:Add><c:a>&j;</c:a><c:b>1</c:b></c:Add>"))

    def test_utf16_and_utf32_without_bom(self) -> None:
        """
        ASCII in UTF-16 or UTF-32 without a byte order mark is valid UTF-8 byte for byte: refused all the same.

        libxml2 would detect the encoding from the first bytes and parse it, past the UTF-8 rule and past
        the check for an encoding style (which reads the bytes as UTF-8).
        """
        style = 'xmlns:e="http://schemas.xmlsoap.org/soap/envelope/" e:encodingStyle="urn:any"'
        text = '<?xml version="1.0"?>' + soap12(f"<c:Add {style}><c:a>2</c:a><c:b>3</c:b></c:Add>").decode()
        for codec in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
            with self.subTest(codec=codec):
                self.assertIn("NUL byte", self.refused(text.encode(codec)))

    def test_external_dtd(self) -> None:
        """An external DTD (local file and network)."""
        dtd = os.path.abspath(self.mktemp())
        with open(dtd, "w") as f:
            f.write('<!ATTLIST Add injected CDATA "yes">')
        for system in (f"file://{dtd}", "http://example.invalid/evil.dtd"):
            self.refused(f'<!DOCTYPE s:Envelope SYSTEM "{system}">'.encode() + soap12(ADD_BODY))

    def test_deep_nesting(self) -> None:
        """Elements nested deeper than the name's max_depth (64)."""
        body = "<c:Add>" + "<c:x>" * 100 + "</c:x>" * 100 + "</c:Add>"
        self.assertIn("deep", self.refused(soap12(body)))

    def test_processing_instruction(self) -> None:
        """A processing instruction before the root element, and one inside the body."""
        self.refused(b'<?xml version="1.0"?><?evil run="1"?>' + soap12(ADD_BODY))
        self.refused(soap12("<c:Add><?pi x?><c:a>1</c:a><c:b>2</c:b></c:Add>"))

    def test_malformed_and_encoding(self) -> None:
        """Not well-formed, bad UTF-8, encodingStyle (SOAP 1.1 answers with 400 here too)."""
        self.refused(b"<s:Envelope xmlns:s='" + SOAP12_NS.encode() + b"'><s:Body>")
        self.refused(
            soap12("<c:Add><c:a>\xff</c:a></c:Add>".replace("\xff", "")).replace(b"<c:a>", b"<c:a>\xff")
        )
        self.refused(
            soap11(f'<c:Add s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">{ADD_BODY}</c:Add>'),
            SoapVersion.SOAP11,
        )

    def test_namespace_errors(self) -> None:
        """
        An undeclared prefix, or a namespace name that is not a URI, followed by a relative namespace name.

        The parser let these through (a 500 for SOAP 1.1, whose conversion could not copy the names; the
        listener got XML it could not parse for SOAP 1.2).
        """
        later = '<w xmlns="relative"/>'
        for version, make in ((SoapVersion.SOAP11, soap11), (SoapVersion.SOAP12, soap12)):
            with self.subTest(version=version):
                self.refused(make(f"<m:Add><c:a>2</c:a><c:b>3</c:b>{later}</m:Add>"), version)
                self.refused(
                    make(f'<c:Add xmlns:h="urn>:h"><c:a>2</c:a><c:b>3</c:b>{later}</c:Add>'), version
                )


class TokenTests(HttpTestCase):
    """Where senders put tokens and what the listener sees of them (spec 10.2)."""

    def setUp(self) -> None:
        super().setUp()
        self.recorder = self.host()

    def test_missing_and_insufficient(self) -> None:
        """No token: 401; a Listen-only token: 403; nothing reaches the listener."""
        status, _, data = self.post("/calc", soap11(ADD_BODY), token=None)
        self.assertEqual((status, self.fault_of(data)[0]), (401, "Unauthorized"))
        status, _, data = self.post(
            "/calc", soap11(ADD_BODY), token=self.token("calc", "listen-only", LISTEN_KEY)
        )
        self.assertEqual((status, self.fault_of(data)[0]), (403, "Forbidden"))
        self.assertEqual(self.recorder.seen, [])

    def test_service_bus_header_stripped(self) -> None:
        """The ServiceBusAuthorization token works and never reaches the listener."""
        token = self.token("calc", "send-only", SEND_KEY)
        self.assertEqual(self.post("/calc", soap11(ADD_BODY), token=token)[0], 200)
        delivered = self.recorder.seen[0]
        self.assertNotIn(token.split("sig=")[1].split("&")[0].encode(), delivered.to_bytes())
        self.assertEqual(read_sender(delivered).key_name, "send-only")  # type: ignore[union-attr]

    def test_placeholder_and_real_token_headers(self) -> None:
        """Of two C{ServiceBusAuthorization} headers (a token, then a placeholder) the valid one admits."""
        headers = Headers(
            {
                b"Content-Type": [b"text/xml; charset=utf-8"],
                b"SOAPAction": [f'"{ADD.action}"'.encode()],
                b"ServiceBusAuthorization": [self.token("calc").encode(), b"placeholder"],
            }
        )
        response = self.settle(
            self.agent.request(
                b"POST", f"http://{HOST}/calc".encode(), headers, BytesProducer(soap11(ADD_BODY))
            )
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(len(self.recorder.seen), 1)

    def test_relay_access_token_header(self) -> None:
        """The WCF-era RelayAccessToken SOAP header works and is removed before delivery."""
        header = etree.tostring(relay_token_header(self.token("calc", "send-only", SEND_KEY))).decode()
        status, _, _ = self.post("/calc", soap11(ADD_BODY, header), token=None)
        self.assertEqual(status, 200)
        self.assertNotIn(b"RelayAccessToken", self.recorder.seen[0].to_bytes())
        bad = etree.tostring(
            relay_token_header("SharedAccessSignature sr=x&sig=AA%3D%3D&se=1&skn=root")
        ).decode()
        self.assertEqual(self.post("/calc", soap11(ADD_BODY, bad), token=None)[0], 401)

    def test_authorization_headers(self) -> None:
        """A SAS Authorization header is a token; any other Authorization goes to the listener as r:HttpAuthorization."""
        status, _, _ = self.post("/calc", soap11(ADD_BODY), token=None, Authorization=self.token("calc"))
        self.assertEqual(status, 200)
        self.assertIsNone(read_http_authorization(self.recorder.seen[-1]))
        status, _, _ = self.post("/calc", soap11(ADD_BODY), Authorization="Basic dXNlcjpwYXNz")
        self.assertEqual(status, 200)
        self.assertEqual(read_http_authorization(self.recorder.seen[-1]), "Basic dXNlcjpwYXNz")

    def test_relay_access_token_not_ascii(self) -> None:
        """A RelayAccessToken whose base64 holds a non-ASCII letter is a 401, not a 500."""
        header = (
            f'<t:RelayAccessToken xmlns:t="http://schemas.microsoft.com/netservices/2009/05/servicebus/connect">'
            f'<w:BinarySecurityToken xmlns:w="{WSSE_NS}">\u00e9A==</w:BinarySecurityToken></t:RelayAccessToken>'
        )
        status, _, data = self.post("/calc", soap11(ADD_BODY, header), token=None)
        self.assertEqual((status, self.fault_of(data)[0]), (401, "Unauthorized"))
        self.assertEqual(self.recorder.seen, [])

    def test_authorization_control_character(self) -> None:
        """An Authorization header XML cannot carry (a control character) is a 400, not a 500."""
        status, _, data = self.post("/calc", soap11(ADD_BODY), Authorization="Basic \x01")
        self.assertEqual((status, self.fault_of(data)[0]), (400, "InvalidMessage"))
        self.assertEqual(self.recorder.seen, [])

    def test_forged_headers_replaced(self) -> None:
        """A sender cannot forge r:Sender or r:HttpAuthorization."""
        forged = f'<r:Sender xmlns:r="{RELAY_NS}"><r:KeyName>admin</r:KeyName></r:Sender><r:HttpAuthorization xmlns:r="{RELAY_NS}">Basic x</r:HttpAuthorization>'
        self.assertEqual(self.post("/calc", soap11(ADD_BODY, forged))[0], 200)
        delivered = self.recorder.seen[-1]
        self.assertEqual(read_sender(delivered).key_name, "root")  # type: ignore[union-attr]
        self.assertIsNone(read_http_authorization(delivered))

    def test_anonymous_name(self) -> None:
        """On a client_auth=anonymous name senders need nothing; a bad token is still refused."""
        self.host("open")
        status, _, data = self.post("/open", soap11(ADD_BODY), token=None)
        self.assertEqual(status, 200, data)
        self.assertEqual(
            self.post(
                "/open", soap11(ADD_BODY), token="SharedAccessSignature sr=x&sig=AA%3D%3D&se=1&skn=root"
            )[0],
            401,
        )


class WsdlTests(HttpTestCase):
    """GET ?wsdl (spec 9)."""

    def test_rewritten(self) -> None:
        """The registered WSDL comes back with both addresses at the public URL."""
        self.host()
        status, _headers, data = self.http(
            b"GET", "/calc?wsdl", headers={"ServiceBusAuthorization": self.token("calc")}
        )
        self.assertEqual(status, 200)
        root = etree.fromstring(data)
        locations = [
            a.get("location")
            for ns in (SOAP11_BINDING_NS, SOAP12_BINDING_NS)
            for a in root.iter(f"{{{ns}}}address")
        ]
        self.assertEqual(locations, [f"https://{HOST}/calc"] * 2)

    def test_not_a_page(self) -> None:
        """A listener's document: the browser may not sniff another type nor run scripts from it."""
        self.host()
        status, headers, _data = self.http(
            b"GET", "/calc?wsdl", headers={"ServiceBusAuthorization": self.token("calc")}
        )
        self.assertEqual(status, 200)
        self.assertEqual(headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
        self.assertEqual(headers.getRawHeaders(b"content-security-policy"), [b"sandbox; default-src 'none'"])

    def test_built_once_per_contract(self) -> None:
        """
        The document is built once per registered contract, not on every request (a flood costs no CPU).

        A contract registered anew after the listeners left is served from then on.
        """
        built: list[str] = []
        rewrite = wsdl.rewrite_addresses

        def counting(root: Any, public_url: str) -> bytes:
            built.append(public_url)
            return rewrite(root, public_url)

        self.patch(inbound, "rewrite_addresses", counting)
        token = {"ServiceBusAuthorization": self.token("calc")}
        listener = self.wcf("calc", "listen")
        self.register(listener)
        served = {self.http(b"GET", "/calc?wsdl", headers=token)[2] for _ in range(5)}
        self.assertEqual(len(served), 1)
        self.assertEqual(built, [f"https://{HOST}/calc"])
        listener.sendClose(1000)
        self.net.flush()
        other = self.wcf("calc", "listen")
        self.register(other, interface=IChecked)
        (document,) = {self.http(b"GET", "/calc?wsdl", headers=token)[2] for _ in range(3)}
        self.assertIn(b"urn:example:checked", document)
        self.assertEqual(len(built), 2)

    def test_rights_and_absence(self) -> None:
        """No token: 401; no contract registered yet: 404; an anonymous name needs no token."""
        self.assertEqual(self.http(b"GET", "/calc?wsdl")[0], 401)
        self.assertEqual(
            self.http(b"GET", "/calc?WSDL", headers={"ServiceBusAuthorization": self.token("calc")})[0], 404
        )
        self.host("open")
        self.assertEqual(self.http(b"GET", "/open?wsdl")[0], 200)


class RegistryTests(HttpTestCase):
    """The Atom service registry at the namespace root (spec 13)."""

    def entries(self, path: str = "/", token: str | None = None) -> dict[str, str]:
        headers = {"ServiceBusAuthorization": token} if token else {}
        status, response_headers, data = self.http(b"GET", path, headers=headers)
        self.assertEqual(status, 200)
        self.assertTrue(
            response_headers.getRawHeaders(b"content-type")[0].startswith(b"application/atom+xml")
        )  # type: ignore[index]
        feed = etree.fromstring(data)
        return {
            e.findtext(f"{{{ATOM_NS}}}id"): e.findtext(f"{{{ATOM_NS}}}title")
            for e in feed.iter(f"{{{ATOM_NS}}}entry")
        }  # type: ignore[misc]

    def test_public_only(self) -> None:
        """Public names are listed without a token; private ones only with a Manage token."""
        self.assertEqual(self.entries(), {f"https://{HOST}/calc": "Calculator"})
        managed = self.entries(token=self.token(""))
        self.assertIn(f"https://{HOST}/chat", managed)
        self.assertEqual(
            self.http(
                b"GET", "/", headers={"ServiceBusAuthorization": self.token("", "send-only", SEND_KEY)}
            )[0],
            403,
        )

    def test_dynamic_public_name(self) -> None:
        """A dynamic public name appears while listened on, under its prefix too, and disappears after."""
        room = ChatRoom()
        host = ServiceHost(
            room,
            IChat,
            f"wss://{HOST}/rooms/blue",
            MulticastBinding(discovery=Discovery.PUBLIC, display_name="Blue room"),
            self.credentials(),
            reactor=self.clock,
            endpoint=self.endpoint,
        )
        host.open()
        self.net.flush()
        self.assertEqual(self.entries()[f"https://{HOST}/rooms/blue"], "Blue room")
        self.assertEqual(list(self.entries("/rooms/")), [f"https://{HOST}/rooms/blue"])
        host.close()
        self.net.flush()
        self.assertNotIn(f"https://{HOST}/rooms/blue", self.entries())
        self.assertEqual(self.http(b"GET", "/rooms/")[0], 404)

    def test_private_prefix_hidden(self) -> None:
        """
        A prefix with only private names below it: 404 without a Manage token, as if nothing were there.

        It was a 200 with an empty feed, which told anyone that a private name existed below it.
        """
        host = ServiceHost(
            ChatRoom(),
            IChat,
            f"wss://{HOST}/hidden/orders",
            MulticastBinding(discovery=Discovery.PRIVATE),
            self.credentials(),
            reactor=self.clock,
            endpoint=self.endpoint,
        )
        host.open()
        self.net.flush()
        self.addCleanup(host.close)
        anonymous = self.http(b"GET", "/hidden/")
        nothing = self.http(b"GET", "/nothing/")
        self.assertEqual((anonymous[0], nothing[0]), (404, 404))
        self.assertEqual(anonymous[2].split(b"TrackingId")[0], nothing[2].split(b"TrackingId")[0])
        self.assertEqual(
            list(self.entries("/hidden/", token=self.token(""))), [f"https://{HOST}/hidden/orders"]
        )

    def test_unknown_paths_walk_no_names(self) -> None:
        """A GET for a path that names nothing is a 404 found without walking the namespace's names."""
        store = self.service.store
        public = BindingEntitySettings(kind=ONEWAY, discovery=Discovery.PUBLIC)
        for i in range(10_000):  # max_entities_per_namespace's default
            store.add(self.namespace, Entity(f"svc{i}", ONEWAY, settings=public))
        walked = [0]
        entities = store.entities

        def counting(namespace: Any) -> Any:
            found = entities(namespace)
            walked[0] += len(found)
            return found

        self.patch(store, "entities", counting)
        statuses = [self.http(b"GET", f"/nothing-{i}")[0] for i in range(100)]
        self.assertEqual(statuses, [404] * 100)
        self.assertEqual(walked[0], 0)  # 1,000,600 names before: every 404 walked them all

    def test_feed_rendered_once_per_change(self) -> None:
        """The feed is rendered again only after the registry changed; it is updated as of that change."""
        rendered = [0]

        def counting(*args: Any, **kwargs: Any) -> bytes:
            rendered[0] += 1
            return build_feed(*args, **kwargs)

        self.patch(registryfeed, "build_feed", counting)
        first = self.http(b"GET", "/")[2]
        self.clock.advance(60)
        self.assertEqual([self.http(b"GET", "/")[2], self.http(b"HEAD", "/")[0]], [first, 200])
        self.assertEqual(rendered[0], 1)
        self.entries(token=self.token(""))  # a Manage reader's feed is another one
        self.assertEqual(rendered[0], 2)
        public = BindingEntitySettings(kind=ONEWAY, discovery=Discovery.PUBLIC)
        self.service.store.add(self.namespace, Entity("Team/News", ONEWAY, settings=public))
        self.assertIn(f"https://{HOST}/Team/News", self.entries())
        self.assertEqual(rendered[0], 3)
        feed = etree.fromstring(self.http(b"GET", "/TEAM/")[2])
        self.assertEqual(feed.findtext(f"{{{ATOM_NS}}}title"), "test/team")
        self.assertEqual(feed.findtext(f"{{{ATOM_NS}}}updated"), "2023-11-14T22:14:20Z")  # when it was added
        self.http(b"GET", "/Team/")
        self.assertEqual(rendered[0], 4)


class HttpChannelFactoryTests(HttpTestCase):
    """Our HTTP proxies, both profiles, against the in-memory gateway."""

    def test_profiles(self) -> None:
        """basic and ws profiles call, get declared faults, and one-way counts."""
        self.host()
        for profile in ("basic", "ws"):
            factory = HttpChannelFactory(
                ICalculator,
                f"http://{HOST}/calc",
                profile,
                self.credentials(),
                reactor=self.clock,
                agent=self.agent,
            )
            calc = factory.create_channel()
            self.assertEqual(self.settle(calc.Add(20, 22)), 42)
            divide = calc.Divide(1, 0)
            for _ in range(10):
                self.agent.flush()
                self.net.flush()
            fault = self.failureResultOf(divide, SoapFault).value
            self.assertEqual(fault.declared.dividend, 1)  # type: ignore[union-attr]
            self.assertEqual(self.settle(calc.Notify("p")), 1)

    def test_a_request_delivered_as_a_datagram_fails(self) -> None:
        """
        A call that expects a reply and gets 202 (the listener's contract has the operation one-way) fails.

        As on the WebSocket channel: the count is no result. The HTTP proxy returned it, 1, as the
        operation's typed result.
        """

        @contract(namespace="urn:example:chat", name="Chat")
        class IAskingChat(Interface):
            @operation()
            def Say(who: str, text: str) -> int:
                """The listener's contract has Say one-way."""

        room = ChatRoom()
        self.host("calc", room, IChat)
        for profile in ("basic", "ws"):
            factory = HttpChannelFactory(
                IAskingChat,
                f"http://{HOST}/calc",
                profile,
                self.credentials(),
                reactor=self.clock,
                agent=self.agent,
            )
            said = factory.create_channel().Say("a", profile)
            for _ in range(10):
                self.agent.flush()
                self.net.flush()
            error = self.failureResultOf(said, ContractError).value
            self.assertIn("delivered as a datagram", str(error))
        self.assertEqual(room.heard, [("a", "basic"), ("a", "ws")])

    def test_token_in_soap_header(self) -> None:
        """token_in_header sends the WCF-era RelayAccessToken header instead of the HTTP header."""
        self.host()
        factory = HttpChannelFactory(
            ICalculator,
            f"http://{HOST}/calc",
            "basic",
            self.credentials(),
            reactor=self.clock,
            agent=self.agent,
            token_in_header=True,
        )
        self.assertEqual(self.settle(factory.create_channel().Add(1, 2)), 3)

    def test_a_call_that_gets_no_answer_times_out(self) -> None:
        """A call fails with TimeoutError after the factory's timeout, whatever the other end does."""
        self.host()
        self.calculator.hold = True
        factory = HttpChannelFactory(
            ICalculator,
            f"http://{HOST}/calc",
            "basic",
            self.credentials(),
            reactor=self.clock,
            agent=self.agent,
            timeout=2.0,
        )
        self.assertEqual(factory.timeout, 2.0)
        self.assertEqual(
            HttpChannelFactory(ICalculator, f"http://{HOST}/calc", reactor=self.clock).timeout, 65.0
        )
        call = factory.create_channel().Add(1, 2)
        self.agent.flush()
        self.net.flush()
        self.assertNoResult(call)
        self.clock.advance(1.9)
        self.assertNoResult(call)
        self.clock.advance(0.2)
        self.assertIn("Add", str(self.failureResultOf(call, TimeoutError).value))
