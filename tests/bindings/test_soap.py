"""Tests for L{bindings.soap}: envelope parsing, serialisation, version conversion and HTTP framing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from twisted.trial.unittest import SynchronousTestCase

from bindings.safexml import Rule
from bindings.soap import (
    SOAP11_NEXT,
    SOAP11_NS,
    SOAP12_NEXT,
    SOAP12_NS,
    Envelope,
    SoapError,
    SoapErrorKind,
    SoapVersion,
    classify_request,
    content_type_header,
    convert,
    parse_content_type,
    parse_envelope,
    soap_action_value,
    to_soap12,
    xml_text,
)

SOAP11_REQUEST = b"""<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns:tns="urn:example:calc" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <soapenv:Header>
    <h:Trace xmlns:h="urn:trace" soapenv:mustUnderstand="1" soapenv:actor="http://schemas.xmlsoap.org/soap/actor/next">abc</h:Trace>
    <h:Other xmlns:h="urn:trace" soapenv:mustUnderstand="0" soapenv:actor="urn:some-actor"/>
  </soapenv:Header>
  <soapenv:Body>
    <tns:Add><tns:a xsi:type="tns:MyInt">2</tns:a><tns:b>3</tns:b></tns:Add>
  </soapenv:Body>
</soapenv:Envelope>"""


def shape(element: etree._Element) -> tuple[object, ...]:
    """Names, attributes, text and children of an element, ignoring prefixes and formatting whitespace."""
    return (
        element.tag,
        sorted(element.attrib.items()),
        (element.text or "").strip(),
        [shape(child) for child in element],
    )


class ParseTests(SynchronousTestCase):
    """Parsing envelopes from bytes."""

    def test_soap11(self) -> None:
        """A SOAP 1.1 envelope yields its version, header blocks and body children."""
        envelope = parse_envelope(SOAP11_REQUEST, SoapVersion.SOAP11)
        self.assertIs(envelope.version, SoapVersion.SOAP11)
        self.assertEqual([etree.QName(h).localname for h in envelope.headers], ["Trace", "Other"])
        self.assertEqual(envelope.first_body_child.tag, "{urn:example:calc}Add")  # type: ignore[union-attr]
        self.assertFalse(envelope.is_fault)

    def test_no_header(self) -> None:
        """The Header is optional."""
        envelope = parse_envelope(b'<s:Envelope xmlns:s="%s"><s:Body/></s:Envelope>' % SOAP12_NS.encode())
        self.assertEqual((envelope.headers, envelope.body), ((), ()))

    def test_version_mismatch(self) -> None:
        """A 1.2 envelope where 1.1 was announced is a VersionMismatch to answer in 1.1."""
        data = b'<s:Envelope xmlns:s="%s"><s:Body/></s:Envelope>' % SOAP12_NS.encode()
        error = self.assertRaises(SoapError, parse_envelope, data, SoapVersion.SOAP11)
        self.assertEqual((error.kind, error.version), (SoapErrorKind.VERSION_MISMATCH, SoapVersion.SOAP11))

    def test_unknown_envelope_namespace(self) -> None:
        """An Envelope in an unknown namespace is a VersionMismatch."""
        data = b'<s:Envelope xmlns:s="urn:other"><s:Body/></s:Envelope>'
        error = self.assertRaises(SoapError, parse_envelope, data, SoapVersion.SOAP12)
        self.assertEqual(error.kind, SoapErrorKind.VERSION_MISMATCH)

    def test_not_an_envelope(self) -> None:
        """A root that is not an Envelope is an invalid message."""
        error = self.assertRaises(SoapError, parse_envelope, b"<Add/>")
        self.assertEqual(error.kind, SoapErrorKind.INVALID_MESSAGE)

    def test_structure(self) -> None:
        """Missing Body, two Bodies, Header after Body, stray text or unqualified headers are refused."""
        ns = SOAP12_NS.encode()
        for inner in (
            b"",
            b"<s:Body/><s:Body/>",
            b"<s:Body/><s:Header/>",
            b"text<s:Body/>",
            b"<s:Header><plain/></s:Header><s:Body/>",
            b"<s:Body/><x:extra xmlns:x='urn:x'/>",
        ):
            data = b'<s:Envelope xmlns:s="%s">%s</s:Envelope>' % (ns, inner)
            error = self.assertRaises(SoapError, parse_envelope, data)
            self.assertEqual(error.kind, SoapErrorKind.INVALID_MESSAGE, inner)

    def test_only_xml_whitespace_between_parts(self) -> None:
        """Text that is not XML whitespace (a no-break space) directly inside the Envelope is refused."""
        data = f'<s:Envelope xmlns:s="{SOAP12_NS}">\u00a0<s:Body/></s:Envelope>'.encode()
        error = self.assertRaises(SoapError, parse_envelope, data)
        self.assertEqual(error.kind, SoapErrorKind.INVALID_MESSAGE)

    def test_text_inside_header_or_body(self) -> None:
        """
        Text directly inside the Header or the Body is refused, as inside the Envelope; XML whitespace is not.

        Text before the first block was dropped, text after a block was forwarded only when the envelope
        kept its version.
        """
        block = "<x:a xmlns:x='urn:x'/>"
        for namespace in (SOAP11_NS, SOAP12_NS):
            for inner in (
                f"<s:Header>text{block}</s:Header><s:Body/>",
                f"<s:Header>{block}text</s:Header><s:Body/>",
                f"<s:Body>text{block}</s:Body>",
                f"<s:Body>{block}text</s:Body>",
                "<s:Body>text</s:Body>",
            ):
                data = f'<s:Envelope xmlns:s="{namespace}">{inner}</s:Envelope>'.encode()
                error = self.assertRaises(SoapError, parse_envelope, data)
                self.assertEqual(error.kind, SoapErrorKind.INVALID_MESSAGE, inner)
                self.assertEqual(error.version, SoapVersion.for_namespace(namespace))
            spaced = f'<s:Envelope xmlns:s="{namespace}"><s:Header>\n {block}\n</s:Header><s:Body>\r\n\t{block} </s:Body></s:Envelope>'
            envelope = parse_envelope(spaced.encode())
            self.assertEqual((len(envelope.headers), len(envelope.body)), (1, 1))

    def test_must_understand_is_a_boolean(self) -> None:
        """
        A header block's mustUnderstand must be a boolean (1, 0, true, false, spaces around allowed).

        A listener's reply with mustUnderstand="yes" went to SOAP 1.2 callers as written, unreadable, and
        failed only in conversion for SOAP 1.1 callers, blamed on the caller.
        """
        for namespace in (SOAP11_NS, SOAP12_NS):
            version = SoapVersion.for_namespace(namespace)
            for value in ("yes", "", "TRUE", "2"):
                data = (
                    f'<s:Envelope xmlns:s="{namespace}"><s:Header><x:a xmlns:x="urn:x" '
                    f's:mustUnderstand="{value}"/></s:Header><s:Body/></s:Envelope>'
                ).encode()
                error = self.assertRaises(SoapError, parse_envelope, data)
                self.assertEqual((error.kind, error.version), (SoapErrorKind.INVALID_MESSAGE, version))
                self.assertIn("mustUnderstand", str(error))
            for value in ("1", "0", "true", "false", " true "):
                data = (
                    f'<s:Envelope xmlns:s="{namespace}"><s:Header><x:a xmlns:x="urn:x" '
                    f's:mustUnderstand="{value}"/></s:Header><s:Body/></s:Envelope>'
                ).encode()
                self.assertEqual(len(parse_envelope(data).headers), 1)

    def test_encoding_style_refused(self) -> None:
        """Any encodingStyle attribute, anywhere, is refused: only document/literal is supported."""
        style = 's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"'
        for envelope_attr, body_attr, op_attr in ((style, "", ""), ("", style, ""), ("", "", style)):
            data = (
                f'<s:Envelope xmlns:s="{SOAP11_NS}" xmlns:x="urn:x" {envelope_attr}>'
                f"<s:Body {body_attr}><x:op {op_attr}/></s:Body></s:Envelope>"
            ).encode()
            error = self.assertRaises(SoapError, parse_envelope, data, SoapVersion.SOAP11)
            self.assertEqual(error.kind, SoapErrorKind.INVALID_MESSAGE)
            self.assertIn("encodingStyle", str(error))

    def test_hostile_xml(self) -> None:
        """A hardening rejection becomes an invalid message that names the rule."""
        data = (
            b'<!DOCTYPE s [<!ENTITY x "y">]><s:Envelope xmlns:s="%s"><s:Body/></s:Envelope>'
            % SOAP12_NS.encode()
        )
        error = self.assertRaises(SoapError, parse_envelope, data)
        self.assertEqual((error.kind, error.xml_rule), (SoapErrorKind.INVALID_MESSAGE, Rule.DOCTYPE))


class SerialiseTests(SynchronousTestCase):
    """Envelope values to bytes."""

    def test_round_trip(self) -> None:
        """Serialising and parsing gives the same header and body content."""
        envelope = parse_envelope(SOAP11_REQUEST)
        again = parse_envelope(envelope.to_bytes())
        self.assertEqual(
            [shape(e) for e in again.headers + again.body],
            [shape(e) for e in envelope.headers + envelope.body],
        )

    def test_building_does_not_move_elements(self) -> None:
        """Serialising twice gives the same bytes: the held elements stay where the parser put them."""
        envelope = parse_envelope(SOAP11_REQUEST)
        parent = envelope.body[0].getparent()
        self.assertEqual(envelope.to_bytes(), envelope.to_bytes())
        self.assertIs(envelope.body[0].getparent(), parent)
        self.assertEqual(etree.QName(parent).localname, "Body")

    def test_empty_header_omitted(self) -> None:
        """An envelope without header blocks has no Header element."""
        self.assertNotIn(b"Header", Envelope(SoapVersion.SOAP12).to_bytes())

    @given(
        text=st.text(
            alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
            max_size=50,
        )
    )
    def test_text_round_trip(self, text: str) -> None:
        """Body text survives a round trip through bytes in both versions."""
        child = etree.Element("{urn:x}v")
        child.text = text
        for version in SoapVersion:
            parsed = parse_envelope(Envelope(version, (), (child,)).to_bytes(), version)
            self.assertEqual(parsed.body[0].text or "", text)


class ConversionTests(SynchronousTestCase):
    """SOAP 1.1 to 1.2 and back (spec 6.2)."""

    def test_up(self) -> None:
        """mustUnderstand and actor become their 1.2 forms; "next" maps onto the 1.2 next role."""
        converted = to_soap12(parse_envelope(SOAP11_REQUEST))
        self.assertIs(converted.version, SoapVersion.SOAP12)
        trace, other = converted.headers
        self.assertEqual(trace.get(f"{{{SOAP12_NS}}}mustUnderstand"), "true")
        self.assertEqual(trace.get(f"{{{SOAP12_NS}}}role"), SOAP12_NEXT)
        self.assertEqual(other.get(f"{{{SOAP12_NS}}}mustUnderstand"), "false")
        self.assertEqual(other.get(f"{{{SOAP12_NS}}}role"), "urn:some-actor")
        for header in converted.headers:
            self.assertFalse([a for a in header.attrib if a.startswith(f"{{{SOAP11_NS}}}")])
        data = converted.to_bytes()
        self.assertIn(SOAP12_NS.encode(), data)
        reparsed = parse_envelope(data, SoapVersion.SOAP12)
        self.assertEqual(reparsed.headers[0].text, "abc")

    def test_body_moved_with_namespaces(self) -> None:
        """Body children keep the declarations they used from ancestors (QNames inside attribute values)."""
        converted = parse_envelope(to_soap12(parse_envelope(SOAP11_REQUEST)).to_bytes())
        a = converted.body[0][0]
        prefix, _, local = a.get("{http://www.w3.org/2001/XMLSchema-instance}type").partition(":")
        self.assertEqual((a.nsmap[prefix], local), ("urn:example:calc", "MyInt"))
        self.assertEqual([c.text for c in converted.body[0]], ["2", "3"])

    def test_down(self) -> None:
        """Converting back restores 1.1 attributes, including the 1.1 next actor."""
        back = convert(to_soap12(parse_envelope(SOAP11_REQUEST)), SoapVersion.SOAP11)
        trace, other = back.headers
        self.assertEqual(trace.get(f"{{{SOAP11_NS}}}mustUnderstand"), "1")
        self.assertEqual(trace.get(f"{{{SOAP11_NS}}}actor"), SOAP11_NEXT)
        self.assertEqual(other.get(f"{{{SOAP11_NS}}}mustUnderstand"), "0")

    def test_ultimate_receiver_role_dropped(self) -> None:
        """The 1.2 ultimateReceiver role means no actor in 1.1."""
        block = etree.Element("{urn:h}H")
        block.set(f"{{{SOAP12_NS}}}role", "http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver")
        block.set(f"{{{SOAP12_NS}}}relay", "true")
        down = convert(Envelope(SoapVersion.SOAP12, (block,)), SoapVersion.SOAP11)
        self.assertEqual(dict(down.headers[0].attrib), {})

    def test_bad_must_understand(self) -> None:
        """A mustUnderstand value that is not a boolean is an invalid message."""
        block = etree.Element("{urn:h}H")
        block.set(f"{{{SOAP11_NS}}}mustUnderstand", "yes")
        error = self.assertRaises(SoapError, to_soap12, Envelope(SoapVersion.SOAP11, (block,)))
        self.assertEqual(error.kind, SoapErrorKind.INVALID_MESSAGE)

    def test_same_version(self) -> None:
        """Converting to the version an envelope already has returns it as is."""
        envelope = Envelope(SoapVersion.SOAP12)
        self.assertIs(to_soap12(envelope), envelope)


class HttpFramingTests(SynchronousTestCase):
    """Content types and SOAPAction."""

    def test_soap11_request(self) -> None:
        """text/xml means SOAP 1.1; the SOAPAction header loses its quotes; an action parameter is ignored."""
        request = classify_request('text/xml; charset="utf-8"; action="x"', '"urn:a/Add"')
        self.assertEqual(
            (request.version, request.charset, request.media_action, request.soap_action),
            (SoapVersion.SOAP11, "utf-8", None, "urn:a/Add"),
        )

    def test_soap12_request(self) -> None:
        """application/soap+xml means SOAP 1.2 with the action media-type parameter."""
        request = classify_request('Application/SOAP+XML;charset=UTF-16;action="urn:a/\\"q\\""')
        self.assertEqual(
            (request.version, request.charset, request.media_action),
            (SoapVersion.SOAP12, "UTF-16", 'urn:a/"q"'),
        )

    def test_unquoted_action_parameter(self) -> None:
        """
        An unquoted action parameter is read whole, to the next ';' (':' and '/' are no token characters).

        It was cut at its first ':' (C{urn:a/Add} read as C{urn}), so the sender got ActionMismatch (with a
        wsa:Action) or ActionNotSupported for an action its contract has.
        """
        for value in (
            "application/soap+xml; charset=utf-8; action=urn:a/Add",
            "application/soap+xml;action=urn:a/Add ;charset=utf-8",
        ):
            request = classify_request(value)
            self.assertEqual((request.media_action, request.charset), ("urn:a/Add", "utf-8"))
        self.assertEqual(
            classify_request("application/soap+xml; action=http://x/y?a=b").media_action, "http://x/y?a=b"
        )

    def test_empty_soap_action(self) -> None:
        """An empty SOAPAction, quoted or not, means no action; bare values are accepted."""
        self.assertIsNone(soap_action_value('""'))
        self.assertIsNone(soap_action_value(""))
        self.assertIsNone(soap_action_value(None))
        self.assertEqual(soap_action_value("Add"), "Add")

    def test_other_media_types(self) -> None:
        """Anything else, or no Content-Type, is an invalid message."""
        for value in ("application/json", None, "garbage"):
            error = self.assertRaises(SoapError, classify_request, value)
            self.assertEqual(error.kind, SoapErrorKind.INVALID_MESSAGE)

    def test_content_type_header(self) -> None:
        """Response content types are UTF-8; the 1.2 form carries a quoted action."""
        self.assertEqual(content_type_header(SoapVersion.SOAP11, "ignored"), "text/xml; charset=utf-8")
        value = content_type_header(SoapVersion.SOAP12, 'urn:a"b')
        self.assertEqual(value, 'application/soap+xml; charset=utf-8; action="urn:a\\"b"')
        self.assertEqual(parse_content_type(value).params["action"], 'urn:a"b')

    @given(action=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1))
    def test_action_round_trip(self, action: str) -> None:
        """Any printable ASCII action survives being written into and read from a Content-Type."""
        parsed = classify_request(content_type_header(SoapVersion.SOAP12, action))
        self.assertEqual(parsed.media_action, action)


class SerialisationTests(SynchronousTestCase):
    """Envelopes serialise held elements without namespace mix-ups."""

    def test_shadowed_prefix(self) -> None:
        """A header that redeclares the envelope's C{s} prefix keeps its envelope-namespace attribute."""
        v12 = SoapVersion.SOAP12
        header = etree.fromstring(
            f'<m:H xmlns:m="urn:m" xmlns:s="urn:mine" xmlns:e="{v12.namespace}" e:mustUnderstand="true"/>'
        )
        reread = parse_envelope(Envelope(v12, (header,), ()).to_bytes(), v12)
        self.assertEqual(reread.headers[0].get(v12.qname("mustUnderstand")), "true")

    def test_converted_header(self) -> None:
        """A SOAP 1.1 sender using the C{s} prefix: its mustUnderstand header becomes a 1.2 one."""
        v11 = SoapVersion.SOAP11
        data = (
            f'<s:Envelope xmlns:s="{v11.namespace}"><s:Header><m:H xmlns:m="urn:m" s:mustUnderstand="1"/>'
            "</s:Header><s:Body/></s:Envelope>"
        ).encode()
        up = parse_envelope(convert(parse_envelope(data, v11), SoapVersion.SOAP12).to_bytes())
        self.assertEqual(up.headers[0].get(SoapVersion.SOAP12.qname("mustUnderstand")), "true")
        self.assertIsNone(up.headers[0].get(v11.qname("mustUnderstand")))


class XmlTextTests(SynchronousTestCase):
    """L{xml_text} escapes character data exactly as lxml serialises an element's text."""

    @given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
    def test_as_lxml(self, text: str) -> None:
        """Same escaped text, or the same refusal for characters XML cannot carry."""
        element = etree.Element("t")
        try:
            element.text = text
        except ValueError:
            self.assertRaises(ValueError, xml_text, text)
            return
        expected = etree.tostring(element, encoding="utf-8").decode()
        self.assertEqual(f"<t>{xml_text(text)}</t>", expected)
