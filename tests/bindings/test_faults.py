"""Tests for L{bindings.faults} and the table in L{bindings.faultcodes}."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from twisted.trial.unittest import SynchronousTestCase

from bindings.faultcodes import RELAY_NS, WSA_NS, FaultCode, RelayFault
from bindings.faults import (
    ADDRESSING_FAULT_ACTION,
    SOAP_FAULT_ACTION,
    Fault,
    FaultFormatError,
    SoapFault,
    fault_element,
    gateway_fault,
    parse_fault,
    reply_to_soap11,
    reply_to_soap12,
    service_fault_status,
    version_mismatch,
)
from bindings.soap import SOAP11_NS, SOAP12_NS, Envelope, SoapVersion, parse_envelope

DISPATCHER_NS = "http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher"


class TableTests(SynchronousTestCase):
    """The subcode table of spec 7.1."""

    def test_rows(self) -> None:
        """Each row of the spec table has its Code and HTTP status."""
        expected = {
            "InvalidMessage": (FaultCode.SENDER, 400),
            "MessageTooLarge": (FaultCode.SENDER, 413),
            "Unauthorized": (FaultCode.SENDER, 401),
            "Forbidden": (FaultCode.SENDER, 403),
            "NoSuchEntity": (FaultCode.SENDER, 404),
            "ActionNotSupported": (FaultCode.SENDER, 400),
            "ActionMismatch": (FaultCode.SENDER, 400),
            "DuplicateMessageId": (FaultCode.SENDER, 400),
            "MessageAddressingHeaderRequired": (FaultCode.SENDER, 400),
            "OnlyAnonymousAddressSupported": (FaultCode.SENDER, 400),
            "InvalidAddressingHeader": (FaultCode.SENDER, 400),
            "NoListener": (FaultCode.RECEIVER, 502),
            "ListenerGone": (FaultCode.RECEIVER, 502),
            "ServerBusy": (FaultCode.RECEIVER, 503),
            "Timeout": (FaultCode.RECEIVER, 504),
        }
        for name, (code, status) in expected.items():
            row = RelayFault.for_subcode(name)
            assert row is not None, name
            self.assertEqual((row.code, row.status), (code, status), name)

    def test_namespaces(self) -> None:
        """Relay subcodes are in the r: namespace, addressing faults in the WS-Addressing namespace."""
        self.assertEqual(RelayFault.NO_LISTENER.subcodes, ((RELAY_NS, "NoListener"),))
        self.assertTrue(RelayFault.ONLY_ANONYMOUS_ADDRESS_SUPPORTED.is_addressing)
        self.assertEqual(
            RelayFault.ONLY_ANONYMOUS_ADDRESS_SUPPORTED.subcodes[0], (WSA_NS, "InvalidAddressingHeader")
        )
        self.assertFalse(RelayFault.TIMEOUT.is_addressing)
        self.assertIsNone(RelayFault.for_subcode("Nope"))


class GatewayFaultTests(SynchronousTestCase):
    """Faults the gateway raises."""

    def test_soap12(self) -> None:
        """A 1.2 gateway fault has Code, r: subcode, a reason with path and tracking id, and RelayError."""
        envelope = gateway_fault(
            RelayFault.NO_LISTENER,
            SoapVersion.SOAP12,
            path="calc",
            tracking_id="T-1",
            relates_to="urn:uuid:1",
        )
        parsed = parse_envelope(envelope.to_bytes(), SoapVersion.SOAP12)
        self.assertTrue(parsed.is_fault)
        fault = parse_fault(parsed.body[0], SoapVersion.SOAP12)
        self.assertEqual(fault.code, FaultCode.RECEIVER)
        self.assertEqual(fault.subcodes, ((RELAY_NS, "NoListener"),))
        self.assertIn("/calc", fault.reason)
        self.assertIn("TrackingId:T-1", fault.reason)
        error = fault.detail[0]
        self.assertEqual(error.tag, f"{{{RELAY_NS}}}RelayError")
        self.assertEqual(
            (error.findtext(f"{{{RELAY_NS}}}Code"), error.findtext(f"{{{RELAY_NS}}}TrackingId")),
            ("NoListener", "T-1"),
        )
        headers = {etree.QName(h).localname: h.text for h in parsed.headers}
        self.assertEqual(headers, {"Action": SOAP_FAULT_ACTION, "RelatesTo": "urn:uuid:1"})

    def test_soap11(self) -> None:
        """A 1.1 gateway fault puts the r: subcode in faultcode, with the same detail and no headers."""
        envelope = gateway_fault(RelayFault.TIMEOUT, SoapVersion.SOAP11, path="/calc", tracking_id="T-2")
        parsed = parse_envelope(envelope.to_bytes(), SoapVersion.SOAP11)
        self.assertEqual(parsed.headers, ())
        element = parsed.body[0]
        code = element.findtext("faultcode")
        prefix, _, local = code.partition(":")
        self.assertEqual((element.find("faultcode").nsmap[prefix], local), (RELAY_NS, "Timeout"))  # type: ignore[union-attr]
        fault = parse_fault(element, SoapVersion.SOAP11)
        self.assertEqual((fault.code, fault.subcodes), (FaultCode.RECEIVER, ((RELAY_NS, "Timeout"),)))
        self.assertEqual(fault.detail[0].findtext(f"{{{RELAY_NS}}}TrackingId"), "T-2")

    def test_addressing_action(self) -> None:
        """Addressing faults use the WS-Addressing fault action and the nested wsa subcodes."""
        envelope = gateway_fault(
            RelayFault.ONLY_ANONYMOUS_ADDRESS_SUPPORTED, SoapVersion.SOAP12, path="x", tracking_id="t"
        )
        self.assertEqual(envelope.headers[0].text, ADDRESSING_FAULT_ACTION)
        fault = parse_fault(envelope.body[0], SoapVersion.SOAP12)
        self.assertEqual(
            fault.subcodes, ((WSA_NS, "InvalidAddressingHeader"), (WSA_NS, "OnlyAnonymousAddressSupported"))
        )

    def test_custom_message(self) -> None:
        """A cause given by the caller replaces the subcode name in the reason."""
        envelope = gateway_fault(
            RelayFault.NO_LISTENER,
            SoapVersion.SOAP11,
            path="a",
            tracking_id="t",
            message="No listener is connected",
        )
        self.assertTrue(
            parse_fault(envelope.body[0], SoapVersion.SOAP11).reason.startswith("No listener is connected.")
        )

    def test_version_mismatch(self) -> None:
        """VersionMismatch is answered in the announced version; 1.2 adds the Upgrade header."""
        for version in SoapVersion:
            envelope = version_mismatch(version, "t")
            fault = parse_fault(envelope.body[0], version)
            self.assertEqual(fault.code, FaultCode.VERSION_MISMATCH)
        upgrade = version_mismatch(SoapVersion.SOAP12, "t").headers[-1]
        names = []
        for supported in upgrade:
            prefix, _, local = supported.get("qname").partition(":")
            names.append((supported.nsmap[prefix], local))
        self.assertEqual(names, [(SOAP12_NS, "Envelope"), (SOAP11_NS, "Envelope")])


class ConversionTests(SynchronousTestCase):
    """Service faults from 1.2 to 1.1 (spec 6.2)."""

    def convert(self, fault: Fault) -> Fault:
        reply = Envelope(SoapVersion.SOAP12, (), (fault_element(fault, SoapVersion.SOAP12),))
        down = reply_to_soap11(reply)
        self.assertIs(down.version, SoapVersion.SOAP11)
        parsed = parse_envelope(down.to_bytes(), SoapVersion.SOAP11)
        return parse_fault(parsed.body[0], SoapVersion.SOAP11)

    def test_innermost_subcode(self) -> None:
        """faultcode is the innermost subcode (WCF's InternalServiceFault)."""
        element = reply_to_soap11(
            Envelope(
                SoapVersion.SOAP12,
                (),
                (
                    fault_element(
                        Fault(
                            FaultCode.RECEIVER,
                            "boom",
                            subcodes=(("urn:outer", "Outer"), (DISPATCHER_NS, "InternalServiceFault")),
                        ),
                        SoapVersion.SOAP12,
                    ),
                ),
            )
        ).body[0]
        prefix, _, local = element.findtext("faultcode").partition(":")
        self.assertEqual(
            (element.find("faultcode").nsmap[prefix], local), (DISPATCHER_NS, "InternalServiceFault")
        )  # type: ignore[union-attr]
        self.assertEqual(element.findtext("faultstring"), "boom")

    def test_codes(self) -> None:
        """Without subcodes, Sender becomes Client and Receiver becomes Server; the others stay."""
        for code, expected in (
            (FaultCode.SENDER, "Client"),
            (FaultCode.RECEIVER, "Server"),
            (FaultCode.VERSION_MISMATCH, "VersionMismatch"),
            (FaultCode.MUST_UNDERSTAND, "MustUnderstand"),
        ):
            element = fault_element(Fault(code, "r"), SoapVersion.SOAP11)
            self.assertEqual(element.findtext("faultcode"), f"s:{expected}")
            self.assertEqual(element.find("faultcode").nsmap["s"], SOAP11_NS)  # type: ignore[union-attr]
            self.assertEqual(self.convert(Fault(code, "r")).code, code)

    def test_english_reason_node_detail(self) -> None:
        """The English reason is preferred, Node becomes faultactor, Detail children move to detail."""
        data = (
            f'<s:Envelope xmlns:s="{SOAP12_NS}"><s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code>'
            '<s:Reason><s:Text xml:lang="de">Fehler</s:Text><s:Text xml:lang="en-US">Error</s:Text></s:Reason>'
            "<s:Node>urn:node</s:Node><s:Detail><d:Info xmlns:d='urn:d'>x</d:Info></s:Detail>"
            "</s:Fault></s:Body></s:Envelope>"
        ).encode()
        down = reply_to_soap11(parse_envelope(data))
        element = down.body[0]
        self.assertEqual(element.findtext("faultstring"), "Error")
        self.assertEqual(element.findtext("faultactor"), "urn:node")
        self.assertEqual(element.find("detail")[0].tag, "{urn:d}Info")  # type: ignore[index]
        self.assertEqual(element.findtext("faultcode"), "s:Client")

    def test_plain_reply_loses_addressing(self) -> None:
        """A normal reply keeps its body and non-addressing headers but loses WS-Addressing headers."""
        action = etree.Element(f"{{{WSA_NS}}}Action")
        action.text = "urn:x/AddResponse"
        other = etree.Element("{urn:h}Keep")
        body = etree.Element("{urn:x}AddResponse")
        down = reply_to_soap11(Envelope(SoapVersion.SOAP12, (action, other), (body,)))
        self.assertEqual([h.tag for h in down.headers], ["{urn:h}Keep"])
        self.assertEqual(down.body[0].tag, "{urn:x}AddResponse")

    def test_malformed(self) -> None:
        """A Fault without its mandatory parts is reported as malformed."""
        self.assertRaises(
            FaultFormatError, parse_fault, etree.Element(f"{{{SOAP12_NS}}}Fault"), SoapVersion.SOAP12
        )
        self.assertRaises(
            FaultFormatError, parse_fault, etree.Element(f"{{{SOAP11_NS}}}Fault"), SoapVersion.SOAP11
        )
        self.assertRaises(FaultFormatError, parse_fault, etree.Element("x"), SoapVersion.SOAP11)
        bad = etree.fromstring(f'<s:Fault xmlns:s="{SOAP11_NS}"><faultcode>zz:X</faultcode></s:Fault>')
        self.assertRaises(FaultFormatError, parse_fault, bad, SoapVersion.SOAP11)

    def test_malformed_soap12_answer(self) -> None:
        """
        A SOAP 1.2 answer is kept as it is, unless its fault is malformed: that one is refused like a 1.1 one.

        The gateway refuses a listener's malformed fault, so the bridge must not pass one on.
        """
        data = (
            f'<s:Envelope xmlns:s="{SOAP12_NS}"><s:Body><s:Fault><s:Code><s:Value>Sender</s:Value>'
            '</s:Code><s:Reason><s:Text xml:lang="en">x</s:Text></s:Reason></s:Fault></s:Body></s:Envelope>'
        ).encode()
        self.assertRaises(FaultFormatError, reply_to_soap12, parse_envelope(data))
        good = parse_envelope(data.replace(b">Sender<", b">s:Sender<"))
        self.assertIs(reply_to_soap12(good), good)

    def test_spyne_dotted_code(self) -> None:
        """A 1.1 faultcode like spyne's C{Client.Boom} reads as Sender."""
        element = etree.fromstring(
            f'<s:Fault xmlns:s="{SOAP11_NS}"><faultcode>s:Client.Boom</faultcode><faultstring>b</faultstring></s:Fault>'
        )
        self.assertEqual(parse_fault(element, SoapVersion.SOAP11).code, FaultCode.SENDER)

    def test_code_in_no_namespace(self) -> None:
        """An unprefixed code (no default namespace) converts both ways into well-formed envelopes."""
        data = (
            f'<s:Envelope xmlns:s="{SOAP11_NS}"><s:Body><s:Fault><faultcode>Client</faultcode>'
            "<faultstring>bad</faultstring></s:Fault></s:Body></s:Envelope>"
        ).encode()
        up = parse_envelope(reply_to_soap12(parse_envelope(data)).to_bytes(), SoapVersion.SOAP12)
        fault = parse_fault(up.body[0], SoapVersion.SOAP12)
        self.assertEqual((fault.code, fault.subcodes), (FaultCode.RECEIVER, (("", "Client"),)))
        down = parse_envelope(reply_to_soap11(up).to_bytes(), SoapVersion.SOAP11)
        self.assertEqual(parse_fault(down.body[0], SoapVersion.SOAP11).subcodes, (("", "Client"),))


class StatusTests(SynchronousTestCase):
    """HTTP status of service faults."""

    def test_statuses(self) -> None:
        """SOAP 1.1 always 500; SOAP 1.2 400 for Sender, else 500."""
        self.assertEqual(service_fault_status(Fault(FaultCode.SENDER, "x"), SoapVersion.SOAP11), 500)
        self.assertEqual(service_fault_status(Fault(FaultCode.SENDER, "x"), SoapVersion.SOAP12), 400)
        self.assertEqual(service_fault_status(Fault(FaultCode.RECEIVER, "x"), SoapVersion.SOAP12), 500)

    def test_soap_fault_exception(self) -> None:
        """L{SoapFault} exposes the fault's parts."""
        fault = Fault(FaultCode.SENDER, "why", subcodes=((RELAY_NS, "X"),))
        error = SoapFault(fault)
        self.assertEqual(
            (error.code, error.subcodes, error.reason, error.detail), (fault.code, fault.subcodes, "why", ())
        )


_names = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,10}", fullmatch=True)
_reason = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
    max_size=40,
)


class PropertyTests(SynchronousTestCase):
    """Fault round trips."""

    @given(
        code=st.sampled_from([FaultCode.SENDER, FaultCode.RECEIVER]),
        reason=_reason,
        subcodes=st.lists(st.tuples(st.sampled_from([RELAY_NS, "urn:a", "urn:b"]), _names), max_size=3),
        node=st.none() | st.just("urn:node"),
    )
    def test_soap12_round_trip(
        self, code: FaultCode, reason: str, subcodes: list[tuple[str, str]], node: str | None
    ) -> None:
        """Any 1.2 fault survives being written and read back."""
        fault = Fault(code, reason, subcodes=tuple(subcodes), node=node)
        envelope = parse_envelope(
            Envelope(SoapVersion.SOAP12, (), (fault_element(fault, SoapVersion.SOAP12),)).to_bytes()
        )
        self.assertEqual(parse_fault(envelope.body[0], SoapVersion.SOAP12), fault)

    @given(
        code=st.sampled_from([FaultCode.SENDER, FaultCode.RECEIVER]),
        reason=_reason,
        subcodes=st.lists(st.tuples(st.sampled_from(["urn:a", "urn:b"]), _names), max_size=3),
    )
    def test_soap11_keeps_innermost(
        self, code: FaultCode, reason: str, subcodes: list[tuple[str, str]]
    ) -> None:
        """Down-conversion keeps the reason and the innermost subcode (or the code without one)."""
        fault = Fault(code, reason, subcodes=tuple(subcodes))
        down = reply_to_soap11(Envelope(SoapVersion.SOAP12, (), (fault_element(fault, SoapVersion.SOAP12),)))
        parsed = parse_fault(parse_envelope(down.to_bytes()).body[0], SoapVersion.SOAP11)
        self.assertEqual(parsed.reason, reason)
        self.assertEqual(parsed.subcodes, tuple(subcodes[-1:]))
        if not subcodes:
            self.assertEqual(parsed.code, code)
