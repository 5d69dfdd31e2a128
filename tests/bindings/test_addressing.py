"""Tests for L{bindings.addressing}."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from twisted.trial.unittest import SynchronousTestCase

from bindings.addressing import (
    ANONYMOUS,
    CONNECT_NS,
    NONE_ADDRESS,
    WSSE_NS,
    AddressingError,
    Delivery,
    SenderInfo,
    TokenSource,
    addressing_header_bytes,
    addressing_headers,
    check_anonymous,
    choose_token,
    delivery_bytes,
    extract_relay_token,
    message_id_of,
    new_message_id,
    peek_message_id,
    prepare_for_listener,
    read_addressing,
    read_sender,
    relay_token_header,
    require,
    resolve_action,
    sender_header,
)
from bindings.faultcodes import RELAY_NS, WSA_NS, RelayFault
from bindings.safexml import XmlLimits
from bindings.soap import SOAP12_NS, Envelope, SoapVersion, parse_envelope

TOKEN = "SharedAccessSignature sr=x&sig=y&se=1&skn=k"


def envelope_with(*headers: str) -> Envelope:
    data = (
        f'<s:Envelope xmlns:s="{SOAP12_NS}" xmlns:wsa="{WSA_NS}"><s:Header>{"".join(headers)}</s:Header>'
        '<s:Body><x:Add xmlns:x="urn:x"/></s:Body></s:Envelope>'
    ).encode()
    return parse_envelope(data)


class ReadTests(SynchronousTestCase):
    """Reading addressing headers."""

    def test_all_headers(self) -> None:
        """Every message addressing property is read."""
        headers = read_addressing(
            envelope_with(
                "<wsa:To> urn:to </wsa:To>",
                "<wsa:Action>urn:a</wsa:Action>",
                "<wsa:MessageID>urn:uuid:1</wsa:MessageID>",
                '<wsa:RelatesTo RelationshipType="urn:rel">urn:uuid:0</wsa:RelatesTo>',
                f"<wsa:ReplyTo><wsa:Address>{ANONYMOUS}</wsa:Address></wsa:ReplyTo>",
                f"<wsa:FaultTo><wsa:Address>{ANONYMOUS}</wsa:Address></wsa:FaultTo>",
                "<wsa:From><wsa:Address>urn:me</wsa:Address></wsa:From>",
            )
        )
        self.assertEqual(
            (headers.to, headers.action, headers.message_id, headers.relates_to, headers.relationship_type),
            ("urn:to", "urn:a", "urn:uuid:1", "urn:uuid:0", "urn:rel"),
        )
        self.assertEqual(
            (headers.reply_to, headers.fault_to, headers.from_address), (ANONYMOUS, ANONYMOUS, "urn:me")
        )
        self.assertEqual(headers.duplicates, ())

    def test_absent(self) -> None:
        """Missing headers read as None; the relationship defaults to reply."""
        headers = read_addressing(envelope_with())
        self.assertIsNone(headers.message_id)
        self.assertEqual(headers.relationship_type, "http://www.w3.org/2005/08/addressing/reply")

    def test_identical_duplicates(self) -> None:
        """Identical copies of a header are tolerated silently, even in strict mode."""
        envelope = envelope_with("<wsa:Action>urn:a</wsa:Action>", "<wsa:Action>urn:a</wsa:Action>")
        self.assertEqual(read_addressing(envelope, strict=True).duplicates, ())

    def test_differing_duplicates(self) -> None:
        """Differing copies (zeep with its plugin): the first is used and the name is reported."""
        envelope = envelope_with(
            "<wsa:MessageID>urn:uuid:1</wsa:MessageID>",
            "<wsa:Action>urn:a</wsa:Action>",
            "<wsa:MessageID>urn:uuid:2</wsa:MessageID>",
            "<wsa:MessageID>urn:uuid:3</wsa:MessageID>",
        )
        headers = read_addressing(envelope)
        self.assertEqual((headers.message_id, headers.duplicates), ("urn:uuid:1", ("MessageID",)))

    def test_strict_duplicates(self) -> None:
        """With strict addressing, differing copies are an InvalidAddressingHeader fault."""
        envelope = envelope_with("<wsa:To>urn:1</wsa:To>", "<wsa:To>urn:2</wsa:To>")
        error = self.assertRaises(AddressingError, read_addressing, envelope, True)
        self.assertEqual((error.kind, error.header), (RelayFault.INVALID_CARDINALITY, "To"))
        self.assertEqual(error.kind.subcodes[0][1], "InvalidAddressingHeader")

    def test_duplicates_with_relative_namespace(self) -> None:
        """
        Copies holding a relative namespace URI (which XML allows, and canonical XML refuses) are compared.

        The comparison used to raise lxml's C14NError, which no caller handles: an HTTP sender got a 500.
        """
        same = '<wsa:To xmlns:x="rel">urn:to<x:y/></wsa:To>'
        envelope = envelope_with(same, same)
        self.assertEqual(read_addressing(envelope, strict=True), read_addressing(envelope_with(same)))
        envelope = envelope_with(same, '<wsa:To xmlns:x="rel">urn:other<x:y/></wsa:To>')
        self.assertEqual(read_addressing(envelope).duplicates, ("To",))
        error = self.assertRaises(AddressingError, read_addressing, envelope, True)
        self.assertEqual((error.kind, error.header), (RelayFault.INVALID_CARDINALITY, "To"))

    def test_empty_values(self) -> None:
        """An empty header or an endpoint without Address is invalid."""
        for header in ("<wsa:Action> </wsa:Action>", "<wsa:ReplyTo/>"):
            error = self.assertRaises(AddressingError, read_addressing, envelope_with(header))
            self.assertEqual(error.kind, RelayFault.INVALID_ADDRESSING_HEADER)

    def test_only_anonymous(self) -> None:
        """A ReplyTo or FaultTo other than anonymous (including none) is refused."""
        for name, address in (("ReplyTo", "http://evil.example/"), ("FaultTo", NONE_ADDRESS)):
            headers = read_addressing(
                envelope_with(f"<wsa:{name}><wsa:Address>{address}</wsa:Address></wsa:{name}>")
            )
            error = self.assertRaises(AddressingError, check_anonymous, headers)
            self.assertEqual((error.kind, error.header), (RelayFault.ONLY_ANONYMOUS_ADDRESS_SUPPORTED, name))
        check_anonymous(
            read_addressing(
                envelope_with(f"<wsa:ReplyTo><wsa:Address>{ANONYMOUS}</wsa:Address></wsa:ReplyTo>")
            )
        )

    def test_require(self) -> None:
        """Missing required headers give MessageAddressingHeaderRequired naming the header."""
        headers = read_addressing(envelope_with("<wsa:MessageID>m</wsa:MessageID>"))
        require(headers, "MessageID")
        error = self.assertRaises(AddressingError, require, headers, "MessageID", "RelatesTo")
        self.assertEqual(
            (error.kind, error.header), (RelayFault.MESSAGE_ADDRESSING_HEADER_REQUIRED, "RelatesTo")
        )


class MessageIdForFaultsTests(SynchronousTestCase):
    """The MessageID a fault relates to, for messages refused before their headers are read."""

    def test_message_id_of_unchecked_headers(self) -> None:
        """The first MessageID is read even when other addressing headers are unusable; blank is None."""
        envelope = envelope_with("<wsa:Action> </wsa:Action>", "<wsa:MessageID> m1 </wsa:MessageID>")
        self.assertEqual(message_id_of(envelope), "m1")
        self.assertIsNone(message_id_of(envelope_with("<wsa:MessageID> </wsa:MessageID>")))

    def test_peek_reads_only_the_header_within_the_limits(self) -> None:
        """Read from the header only, within the byte and depth limits; None beyond them or in the body."""
        pad = "<p:pad xmlns:p='urn:p'>" + "x" * 400 + "</p:pad>"
        data = envelope_with("<wsa:MessageID>m1</wsa:MessageID>").to_bytes()
        late = envelope_with(pad, "<wsa:MessageID>m2</wsa:MessageID>").to_bytes()
        nested = "<x:a xmlns:x='urn:x'><x:b><x:c/></x:b></x:a>"
        deep = envelope_with(nested, "<wsa:MessageID>m3</wsa:MessageID>").to_bytes()
        in_body = (
            f'<s:Envelope xmlns:s="{SOAP12_NS}" xmlns:wsa="{WSA_NS}"><s:Body>'
            "<wsa:MessageID>m4</wsa:MessageID></s:Body></s:Envelope>"
        ).encode()
        limits = XmlLimits(max_bytes=400, max_depth=4)
        self.assertEqual(peek_message_id(data + b"<not xml", limits), "m1")
        self.assertIsNone(peek_message_id(late, limits))
        self.assertEqual(peek_message_id(late, XmlLimits(max_bytes=len(late))), "m2")
        self.assertIsNone(peek_message_id(deep, limits))
        self.assertIsNone(peek_message_id(in_body, limits))
        self.assertIsNone(peek_message_id(b"\x00garbage", limits))


class ActionTests(SynchronousTestCase):
    """Action resolution (spec 6.4)."""

    def test_order(self) -> None:
        """The first source present wins; agreeing sources are fine."""
        self.assertEqual(resolve_action("urn:a", "urn:a", "urn:a", "urn:a"), "urn:a")
        self.assertEqual(resolve_action(None, "urn:b"), "urn:b")
        self.assertEqual(resolve_action(None, None, "Add"), "Add")
        self.assertEqual(resolve_action(None, None, None, "urn:c"), "urn:c")
        self.assertIsNone(resolve_action(None, None, None, None))

    def test_mismatch(self) -> None:
        """Any two present sources that disagree give ActionMismatch."""
        for args in (
            ("a", "b"),
            ("a", None, "b"),
            (None, "a", "b"),
            (None, None, "a", "b"),
            ("a", None, None, "b"),
        ):
            error = self.assertRaises(AddressingError, resolve_action, *args)
            self.assertEqual(error.kind, RelayFault.ACTION_MISMATCH)

    @given(st.lists(st.none() | st.sampled_from(["a", "b"]), min_size=4, max_size=4))
    def test_property(self, sources: list[str | None]) -> None:
        """The outcome is the first source when all present sources agree, ActionMismatch otherwise."""
        present = [s for s in sources if s]
        try:
            result = resolve_action(*sources)
        except AddressingError:
            self.assertGreater(len(set(present)), 1)
        else:
            self.assertEqual(result, present[0] if present else None)
            self.assertLessEqual(len(set(present)), 1)


class DeliveryTests(SynchronousTestCase):
    """Headers set before a listener sees a message (spec 6.1)."""

    def test_prepare(self) -> None:
        """To/Action/MessageID/ReplyTo are replaced, forged r:Sender and tokens removed, other headers kept."""
        envelope = envelope_with(
            "<wsa:To>urn:old</wsa:To>",
            "<wsa:Action>urn:old</wsa:Action>",
            "<wsa:MessageID>urn:uuid:sender</wsa:MessageID>",
            f"<r:Sender xmlns:r='{RELAY_NS}'><r:KeyName>root</r:KeyName></r:Sender>",
            "<h:Custom xmlns:h='urn:h'>keep</h:Custom>",
        ).replace(headers=None)
        envelope = envelope.replace(headers=(*envelope.headers, relay_token_header(TOKEN)))
        prepared, message_id = prepare_for_listener(
            envelope,
            Delivery(
                to="https://relay.example/calc",
                action="urn:x/Add",
                message_id="urn:uuid:sender",
                request_reply=True,
                sender=SenderInfo("sendkey", "T-9"),
            ),
        )
        reparsed = parse_envelope(prepared.to_bytes())
        headers = read_addressing(reparsed, strict=True)
        self.assertEqual(message_id, "urn:uuid:sender")
        self.assertEqual(
            (headers.to, headers.action, headers.message_id, headers.reply_to),
            ("https://relay.example/calc", "urn:x/Add", "urn:uuid:sender", ANONYMOUS),
        )
        self.assertEqual(read_sender(reparsed), SenderInfo("sendkey", "T-9"))
        self.assertEqual(len(reparsed.find_headers(f"{{{RELAY_NS}}}Sender")), 1)
        self.assertEqual(reparsed.find_headers(f"{{{CONNECT_NS}}}RelayAccessToken"), ())
        self.assertEqual([h.text for h in reparsed.find_headers("{urn:h}Custom")], ["keep"])
        self.assertIsNone(
            reparsed.find_headers(f"{{{RELAY_NS}}}Sender")[0].get(f"{{{SOAP12_NS}}}mustUnderstand")
        )

    def test_generated_id(self) -> None:
        """Without a sender id the gateway generates one; one-way messages get no ReplyTo."""
        prepared, message_id = prepare_for_listener(
            Envelope(SoapVersion.SOAP12),
            Delivery(
                "urn:to", "urn:a", None, False, SenderInfo("anonymous", "t"), new_id=lambda: "urn:uuid:new"
            ),
        )
        headers = read_addressing(prepared)
        self.assertEqual(
            (message_id, headers.message_id, headers.reply_to), ("urn:uuid:new", "urn:uuid:new", None)
        )

    def test_reply_headers(self) -> None:
        """Reply headers carry Action and RelatesTo."""
        headers = read_addressing(
            Envelope(SoapVersion.SOAP12, addressing_headers(action="urn:r", relates_to="urn:uuid:1"))
        )
        self.assertEqual(
            (headers.action, headers.relates_to, headers.message_id), ("urn:r", "urn:uuid:1", None)
        )

    def test_read_sender_absent(self) -> None:
        """Envelopes without r:Sender have no sender info."""
        self.assertIsNone(read_sender(Envelope(SoapVersion.SOAP12)))
        self.assertEqual(sender_header(SenderInfo("k", "t")).tag, f"{{{RELAY_NS}}}Sender")


class TokenTests(SynchronousTestCase):
    """Token carriers (spec 10.2)."""

    def test_soap_header_round_trip(self) -> None:
        """A RelayAccessToken header holds base64 of the token and is removed on extraction."""
        header = relay_token_header(TOKEN)
        binary = header[0]
        self.assertEqual(base64.b64decode(binary.text).decode(), TOKEN)  # type: ignore[arg-type]
        envelope = Envelope(
            SoapVersion.SOAP12, (header, relay_token_header("other"), etree.Element("{urn:h}Keep"))
        )
        token, rest = extract_relay_token(envelope)
        self.assertEqual(token, TOKEN)
        self.assertEqual([h.tag for h in rest.headers], ["{urn:h}Keep"])

    def test_goazure_style(self) -> None:
        """The header as WCF-era clients write it (wsu:Id, line-wrapped base64) is understood."""
        encoded = base64.b64encode(TOKEN.encode()).decode()
        wrapped = encoded[:10] + "\n  " + encoded[10:]
        envelope = envelope_with(
            f'<RelayAccessToken xmlns="{CONNECT_NS}"><wsse:BinarySecurityToken'
            ' xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"'
            ' xmlns:wsu="urn:wsu" wsu:Id="uuid:1" ValueType="http://schemas.xmlsoap.org/ws/2009/11/swt-token-profile-1.0"'
            f">{wrapped}</wsse:BinarySecurityToken></RelayAccessToken>"
        )
        self.assertEqual(extract_relay_token(envelope)[0], TOKEN)

    def test_no_token(self) -> None:
        """An envelope without the header is returned unchanged."""
        envelope = Envelope(SoapVersion.SOAP12)
        self.assertEqual(extract_relay_token(envelope), (None, envelope))

    def test_bad_token(self) -> None:
        """A header without a decodable token is Unauthorized."""
        for inner in (
            "",
            "<wsse:BinarySecurityToken xmlns:wsse='http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd'>!!</wsse:BinarySecurityToken>",
        ):
            envelope = envelope_with(f'<RelayAccessToken xmlns="{CONNECT_NS}">{inner}</RelayAccessToken>')
            error = self.assertRaises(AddressingError, extract_relay_token, envelope)
            self.assertEqual(error.kind, RelayFault.UNAUTHORIZED)

    def test_non_ascii_token(self) -> None:
        """Non-ASCII text in the token is Unauthorized too (b64decode raises a plain ValueError for it)."""
        inner = f"<wsse:BinarySecurityToken xmlns:wsse='{WSSE_NS}'>\u00e9A==</wsse:BinarySecurityToken>"
        envelope = envelope_with(f'<RelayAccessToken xmlns="{CONNECT_NS}">{inner}</RelayAccessToken>')
        error = self.assertRaises(AddressingError, extract_relay_token, envelope)
        self.assertEqual(error.kind, RelayFault.UNAUTHORIZED)

    def test_choice_order(self) -> None:
        """Query beats ServiceBusAuthorization beats the SOAP header beats Authorization."""
        self.assertEqual(choose_token("q", "h", "s", "SharedAccessSignature a").source, TokenSource.QUERY)
        self.assertEqual(choose_token(None, "h", "s").source, TokenSource.SERVICE_BUS_HEADER)
        self.assertEqual(choose_token(None, None, "s").token, "s")

    def test_authorization(self) -> None:
        """Authorization is consumed only for SAS with no other carrier; otherwise it is forwarded."""
        choice = choose_token(authorization="SharedAccessSignature sr=a")
        self.assertEqual(
            (choice.token, choice.source, choice.forward_authorization),
            ("SharedAccessSignature sr=a", TokenSource.AUTHORIZATION, False),
        )
        self.assertTrue(choose_token("q", authorization="SharedAccessSignature sr=a").forward_authorization)
        basic = choose_token(authorization="Basic dXNlcg==")
        self.assertEqual((basic.token, basic.forward_authorization), (None, True))
        self.assertEqual(choose_token(), choose_token(None, "", None, None))
        self.assertNotIn("sr=a", repr(choice))


_xml_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
    min_size=1,
    max_size=40,
)


class DeliveryBytesTests(SynchronousTestCase):
    """L{delivery_bytes} writes the gateway's headers as text: the same bytes as the element path."""

    @given(
        action=_xml_text,
        message_id=_xml_text,
        key_name=st.text(
            alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
            max_size=20,
        ),
        tracking_id=_xml_text,
        request_reply=st.booleans(),
    )
    def test_same_bytes(
        self, action: str, message_id: str, key_name: str, tracking_id: str, request_reply: bool
    ) -> None:
        """Any header values, sender headers kept and replaced, extra headers after r:Sender."""
        envelope = envelope_with(
            "<wsa:To>urn:old</wsa:To>",
            "<wsa:Action>urn:old</wsa:Action>",
            f"<r:Sender xmlns:r='{RELAY_NS}'><r:KeyName>forged</r:KeyName></r:Sender>",
            "<h:Custom xmlns:h='urn:h' xmlns:t='urn:t'>t:keep &amp; &lt;this&gt;</h:Custom>",
        )
        envelope = envelope.replace(headers=(*envelope.headers, relay_token_header(TOKEN)))
        delivery = Delivery(
            to="https://relay.example/calc?x=1&y=2",
            action=action,
            message_id=message_id,
            request_reply=request_reply,
            sender=SenderInfo(key_name, tracking_id),
        )
        extra = etree.Element("{urn:e}Extra", nsmap={"e": "urn:e"})
        extra.text = "Bearer a&b"
        expected, expected_id = prepare_for_listener(envelope, delivery)
        expected = expected.replace(headers=(*expected.headers, extra))
        self.assertEqual(delivery_bytes(envelope, delivery, (extra,)), (expected.to_bytes(), expected_id))

    def test_generated_id(self) -> None:
        """Without a sender id the generated one is written and returned."""
        delivery = Delivery(
            "urn:to", "urn:a", None, False, SenderInfo("anonymous", "t"), new_id=lambda: "urn:n"
        )
        payload, message_id = delivery_bytes(Envelope(SoapVersion.SOAP12), delivery)
        self.assertEqual(message_id, "urn:n")
        self.assertEqual(payload, prepare_for_listener(Envelope(SoapVersion.SOAP12), delivery)[0].to_bytes())

    def test_refuses_what_xml_cannot_carry(self) -> None:
        """A control character in a header value is refused, as lxml refuses it."""
        delivery = Delivery("urn:to", "urn:a\x01", "urn:m", False, SenderInfo("k", "t"))
        self.assertRaises(ValueError, delivery_bytes, Envelope(SoapVersion.SOAP12), delivery)
        self.assertRaises(ValueError, prepare_for_listener, Envelope(SoapVersion.SOAP12), delivery)


class WrittenHeaderTests(SynchronousTestCase):
    """Headers the client library writes as text, and its message ids."""

    @given(
        to=st.none() | _xml_text,
        action=st.none() | _xml_text,
        message_id=st.none() | _xml_text,
        relates_to=st.none() | _xml_text,
        reply=st.booleans(),
    )
    def test_same_bytes(
        self, to: str | None, action: str | None, message_id: str | None, relates_to: str | None, reply: bool
    ) -> None:
        """L{addressing_header_bytes} is L{addressing_headers} serialised."""
        options = {"to": to, "action": action, "message_id": message_id, "relates_to": relates_to}
        self.assertEqual(
            addressing_header_bytes(**options, reply_to_anonymous=reply),  # type: ignore[arg-type]
            [
                etree.tostring(h, encoding="utf-8")
                for h in addressing_headers(**options, reply_to_anonymous=reply)  # type: ignore[arg-type]
            ],
        )

    def test_message_ids_are_uuid4(self) -> None:
        """Message ids are random version 4 UUIDs, all different."""
        import uuid

        ids = {new_message_id() for _ in range(1000)}
        self.assertEqual(len(ids), 1000)
        for value in list(ids)[:50]:
            self.assertTrue(value.startswith("urn:uuid:"))
            parsed = uuid.UUID(value[len("urn:uuid:") :])
            self.assertEqual((parsed.version, parsed.variant), (4, uuid.RFC_4122))
            self.assertEqual(str(parsed), value[len("urn:uuid:") :])
