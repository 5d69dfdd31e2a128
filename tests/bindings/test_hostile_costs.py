"""
What a hostile but well-formed envelope may cost: work linear in its size, and an answer for every caller.

The costs themselves were measured, not asserted here (see the commit that made them linear); these
tests pin the behaviour that keeps them linear and the results that must not change.
"""

from __future__ import annotations

from lxml import etree
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

import bindings.addressing
from bindings.addressing import WSA_NS, addressing_headers, read_addressing
from bindings.safexml import XmlLimits
from bindings.soap import (
    SOAP11_NS,
    SOAP12_NS,
    Envelope,
    SoapVersion,
    content_type_header,
    parse_envelope,
    standalone,
)

from .test_httpsoap import ADD, NS, HttpTestCase, soap12


class RepeatedAddressingTests(SynchronousTestCase):
    """Repeated WS-Addressing headers: each copy is made canonical once, not once per comparison."""

    def test_canonical_form_once_per_copy(self) -> None:
        calls = [0]
        canonical = bindings.addressing._canonical

        def counting(element: etree._Element) -> bytes:
            calls[0] += 1
            return canonical(element)

        self.patch(bindings.addressing, "_canonical", counting)
        repeats = 500
        document = (
            f'<s:Envelope xmlns:s="{SOAP12_NS}" xmlns:a="{WSA_NS}"><s:Header><a:To>urn:first</a:To>'
            + "<a:To>urn:first</a:To>" * repeats
            + "<a:To>urn:other</a:To>" * repeats
            + "</s:Header><s:Body/></s:Envelope>"
        ).encode()
        headers = read_addressing(parse_envelope(document, None, XmlLimits(max_bytes=1 << 20)))
        self.assertEqual((headers.to, headers.duplicates), ("urn:first", ("To",)))
        self.assertEqual(calls[0], repeats + 2)  # the first copy, the equal repeats, the first different one


class ManyAttributesTests(SynchronousTestCase):
    """L{standalone} copies an element with many attributes whole, with every namespace in scope."""

    def copy_of(self, count: int) -> tuple[etree._Element, etree._Element]:
        attributes = " ".join(f'x{i}="v{i}"' for i in range(count))
        root = etree.fromstring(
            f'<r xmlns:a="urn:a" xmlns:q="urn:q"><e {attributes} q:kind="a:qname">a:text<c a:t="1"/></e>tail</r>'
        )
        element = root[0]
        return element, standalone(element)

    def test_same_copy_either_way(self) -> None:
        """Few attributes or many, the copy has the same attributes in order, namespaces and children."""
        for count in (3, 2000):
            with self.subTest(count=count):
                element, copy = self.copy_of(count)
                self.assertEqual(list(copy.attrib.items()), list(element.attrib.items()))
                self.assertEqual(copy.nsmap, {"a": "urn:a", "q": "urn:q"})  # "a" only in a value and text
                self.assertEqual((copy.text, copy.tail, copy[0].get("{urn:a}t")), ("a:text", None, "1"))
                self.assertIsNone(copy.getparent())

    def test_soap11_envelope_converted(self) -> None:
        """A SOAP 1.1 body element with many attributes reaches a listener as SOAP 1.2, attributes intact."""
        attributes = " ".join(f'x{i}=""' for i in range(1000))
        document = (
            f'<s:Envelope xmlns:s="{SOAP11_NS}"><s:Body><c:Add xmlns:c="{NS}" {attributes}/></s:Body></s:Envelope>'
        ).encode()
        envelope = parse_envelope(document, None, XmlLimits(max_bytes=1 << 20))
        converted = bindings.soap.to_soap12(envelope)
        self.assertEqual(converted.version, SoapVersion.SOAP12)
        self.assertEqual(len(converted.body[0].attrib), 1000)


class ReplyActionTests(HttpTestCase):
    """A listener's reply whose action is not Latin-1 still answers the HTTP caller."""

    def test_action_as_uri_in_content_type(self) -> None:
        """An IRI action goes into C{Content-Type} as its URI form (RFC 3987 3.1)."""
        value = content_type_header(SoapVersion.SOAP12, 'urn:calc/Add\u20acResponse"')
        self.assertEqual(
            value, 'application/soap+xml; charset=utf-8; action="urn:calc/Add%E2%82%ACResponse\\""'
        )
        value.encode("ascii")

    def test_caller_answered(self) -> None:
        recorder = self.host()

        class EuroAction:
            def handle(self, envelope: Envelope) -> Deferred[Envelope]:
                headers = addressing_headers(
                    action="urn:calc/Add\u20acResponse", relates_to=read_addressing(envelope).message_id
                )
                body = etree.fromstring(
                    f'<c:AddResponse xmlns:c="{NS}"><c:AddResult>5</c:AddResult></c:AddResponse>'
                )
                return succeed(Envelope(SoapVersion.SOAP12, headers, (body,)))

        recorder.handler = EuroAction()
        status, headers, data = self.post(
            "/calc", soap12("<c:Add><c:a>2</c:a><c:b>3</c:b></c:Add>"), SoapVersion.SOAP12, action=ADD.action
        )
        self.assertEqual(status, 200, data)
        self.assertIn(b"%E2%82%AC", headers.getRawHeaders(b"content-type")[0])
        self.assertIn(b"<c:AddResult>5</c:AddResult>", data)
