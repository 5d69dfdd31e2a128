"""Tests for L{bindings.bridge.SoapBridge}'s timeout: it covers the backend's whole answer, body included."""

from __future__ import annotations

from typing import Any

from lxml import etree
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from bindings.addressing import addressing_headers, new_message_id
from bindings.bridge import SoapBridge, as_utf8
from bindings.credentials import parse_address
from bindings.faults import FaultCode, parse_fault
from bindings.soap import Envelope, SoapVersion


class StalledBody:
    """The transport of a response body the backend stopped sending halfway."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.stopped = False

    def stopProducing(self) -> None:
        self.stopped = True
        self.protocol.connectionLost(Failure(ConnectionError("aborted")))


class StallingResponse:
    """A 200 whose body starts and never ends."""

    code = 200
    headers = Headers({b"content-type": [b"text/xml; charset=utf-8"]})
    length = 10_000

    def __init__(self) -> None:
        self.body: StalledBody | None = None

    def deliverBody(self, protocol: Any) -> None:
        self.body = StalledBody(protocol)
        protocol.makeConnection(self.body)
        protocol.dataReceived(b"<soap:Envelope")


class Backend:
    """An agent whose every request gets a L{StallingResponse}."""

    def __init__(self) -> None:
        self.responses: list[StallingResponse] = []

    def request(self, method: bytes, uri: bytes, headers: Any = None, body: Any = None) -> Deferred[Any]:
        response = StallingResponse()
        self.responses.append(response)
        return succeed(response)


class BridgeTimeoutTests(SynchronousTestCase):
    def test_a_body_that_stalls_is_cut_at_the_timeout(self) -> None:
        """The caller gets a fault when the timeout passes, and the backend connection is dropped."""
        clock = Clock()
        backend = Backend()
        bridge = SoapBridge(
            "http://backend.test/service",
            parse_address("sb://relay.test/legacy"),
            None,
            reactor=clock,
            agent=backend,  # type: ignore[arg-type]
            request_timeout=10.0,
        )
        body = etree.fromstring(b'<c:Add xmlns:c="urn:calc"><c:a>1</c:a></c:Add>')
        headers = addressing_headers(
            action="urn:calc/Add", message_id=new_message_id(), reply_to_anonymous=True
        )
        envelope = Envelope(SoapVersion.SOAP11, headers, (body,))
        call = Deferred.fromCoroutine(bridge._forward(envelope))
        clock.advance(9)
        self.assertNoResult(call)
        clock.advance(2)
        reply = self.successResultOf(call)
        assert reply is not None
        self.assertTrue(reply.is_fault)
        self.assertTrue(backend.responses[0].body.stopped)  # type: ignore[union-attr]


class BridgeRefusalTests(SynchronousTestCase):
    def test_header_the_backend_version_cannot_carry(self) -> None:
        """An invalid mustUnderstand on the way to a SOAP 1.1 backend: a Sender fault at once, nothing sent."""
        backend = Backend()
        bridge = SoapBridge(
            "http://backend.test/service",
            parse_address("sb://relay.test/legacy"),
            None,
            reactor=Clock(),
            agent=backend,  # type: ignore[arg-type]
            soap_version=SoapVersion.SOAP11,
        )
        custom = etree.fromstring(
            b'<x:Trace xmlns:x="urn:x" xmlns:e="http://www.w3.org/2003/05/soap-envelope" '
            b'e:mustUnderstand="yes">t</x:Trace>'
        )
        headers = addressing_headers(
            action="urn:calc/Add", message_id=new_message_id(), reply_to_anonymous=True
        )
        envelope = Envelope(
            SoapVersion.SOAP12, (*headers, custom), (etree.fromstring(b'<c:Add xmlns:c="urn:calc"/>'),)
        )
        reply = self.successResultOf(Deferred.fromCoroutine(bridge._forward(envelope)))
        assert reply is not None
        self.assertTrue(reply.is_fault)
        self.assertIn(b"mustUnderstand", reply.to_bytes())
        self.assertEqual(backend.responses, [])

    def test_malformed_soap12_fault_from_the_backend(self) -> None:
        """
        A SOAP 1.2 backend's fault without a SOAP Code: the bridge's own BackendUnavailable fault.

        It was passed on, the gateway refused it as the listener's malformed reply, and the caller got an
        InvalidMessage (a Sender fault, as if its request were wrong).
        """
        bridge = SoapBridge(
            "http://backend.test/service",
            parse_address("sb://relay.test/legacy"),
            None,
            reactor=Clock(),
            agent=Backend(),  # type: ignore[arg-type]
            soap_version=SoapVersion.SOAP12,
        )
        response = StallingResponse()
        response.headers = Headers({b"content-type": [b"application/soap+xml; charset=utf-8"]})
        data = (
            b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><s:Fault><s:Code>'
            b"<s:Value>s3Sender</s:Value></s:Code></s:Fault></s:Body></s:Envelope>"
        )
        reply = bridge._reply(response, data, "urn:calc/Add", "urn:uuid:1")  # type: ignore[arg-type]
        fault = parse_fault(reply.body[0], SoapVersion.SOAP12)
        self.assertEqual((fault.code, fault.subcodes[-1][1]), (FaultCode.RECEIVER, "BackendUnavailable"))
        self.assertIn("no usable SOAP envelope", fault.reason)


class BridgeWsdlUrlTests(SynchronousTestCase):
    def test_default_wsdl_url(self) -> None:
        """The contract is fetched at URL?wsdl, or URL&wsdl when the URL has a query of its own."""
        for backend, expected in (
            ("http://backend.test/service", "http://backend.test/service?wsdl"),
            ("http://backend.test/service.asmx?v=2", "http://backend.test/service.asmx?v=2&wsdl"),
        ):
            bridge = SoapBridge(backend, parse_address("sb://relay.test/legacy"), None, reactor=Clock())
            self.assertEqual(bridge.wsdl_url, expected)


class BackendEncodingTests(SynchronousTestCase):
    """L{as_utf8}: what the backend sent, in the only encoding the gateway takes from listeners."""

    def test_charset_of_the_content_type(self) -> None:
        """Without an XML declaration, the Content-Type's charset tells (here windows-1252)."""
        self.assertEqual(as_utf8("<a>€ é</a>".encode("cp1252"), "windows-1252"), "<a>€ é</a>".encode())

    def test_declaration_wins_and_is_dropped(self) -> None:
        """The declaration is what lxml (so zeep) would go by; a wrong charset does not matter."""
        data = "<?xml version='1.0' encoding='iso-8859-1'?>\n<a>é</a>".encode("latin-1")
        self.assertEqual(as_utf8(data, "utf-8"), "\n<a>é</a>".encode())

    def test_byte_order_mark(self) -> None:
        data = '<?xml version="1.0" encoding="UTF-16"?><a>é</a>'.encode("utf-16")
        self.assertEqual(as_utf8(data, None), "<a>é</a>".encode())

    def test_utf8_as_it_is(self) -> None:
        data = "<?xml version='1.0' encoding='UTF-8'?><a>é</a>".encode()
        self.assertIs(as_utf8(data, "utf-8"), data)
        self.assertIs(as_utf8(data, None), data)

    def test_unknown_or_wrong_encoding(self) -> None:
        with self.assertRaises(ValueError):
            as_utf8(b"<a/>", "x-no-such-charset")
        with self.assertRaises(ValueError):
            as_utf8(b"<a/>", "base64")  # a codec, but not a text encoding
        with self.assertRaises(ValueError):
            as_utf8(b"<a>\xff\xfe\xfd</a>", "shift_jis")


class BridgeAddressingTests(SynchronousTestCase):
    def test_to_names_the_backend(self) -> None:
        """
        To a SOAP 1.2 service the bridge sends wsa:To with the service's URL, not the relay's.

        The gateway addresses the listener with the name's public URL; forwarded as it was, a service that
        checks wsa:To (WCF's address filter) refused every call as not for it.
        """
        bridge = SoapBridge(
            "http://backend.test/service",
            parse_address("sb://relay.test/legacy"),
            None,
            reactor=Clock(),
            soap_version=SoapVersion.SOAP12,
        )
        headers = addressing_headers(
            to="https://relay.test/legacy",
            action="urn:calc/Add",
            message_id=new_message_id(),
            reply_to_anonymous=True,
        )
        envelope = Envelope(SoapVersion.SOAP12, headers, (etree.fromstring(b'<c:Add xmlns:c="urn:calc"/>'),))
        body, _ = bridge._outgoing(envelope)
        sent = etree.fromstring(body)
        wsa = "{http://www.w3.org/2005/08/addressing}"
        self.assertEqual([e.text for e in sent.iter(f"{wsa}To")], ["http://backend.test/service"])
        self.assertEqual([e.text for e in sent.iter(f"{wsa}Action")], ["urn:calc/Add"])
