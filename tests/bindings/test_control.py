"""Tests for L{bindings.control}: the $wcf control envelopes and client addresses/credentials."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from bindings.addressing import read_addressing
from bindings.control import (
    ACTION_DELIVERED,
    ACTION_REGISTER,
    ACTION_RENEW_TOKEN,
    ControlError,
    Registered,
    Registration,
    control_action,
    delivered_bytes,
    delivered_envelope,
    http_authorization_header,
    parse_delivered,
    parse_register,
    parse_registered,
    parse_renew_token,
    read_http_authorization,
    register_envelope,
    registered_envelope,
    renew_token_envelope,
    token_renewed_envelope,
)
from bindings.credentials import SasCredentials, from_connection_string, parse_address
from bindings.soap import Envelope, SoapVersion, parse_envelope
from bindings.wsclient import HandshakeRefused, SoapClientProtocol
from relay.auth import Rights, SharedAccessRule, validate_token


def reparsed(envelope: Envelope) -> Envelope:
    return parse_envelope(envelope.to_bytes(), SoapVersion.SOAP12)


class ControlTests(SynchronousTestCase):
    """Control messages survive the wire and refuse malformed input."""

    def test_register_round_trip(self) -> None:
        """r:Register carries kind, policy, display name and the WSDL bytes; the action and id are set."""
        registration = Registration("oneway", "anonymous", "public", "Orders", b"<wsdl/>")
        envelope = reparsed(register_envelope(registration, "urn:uuid:1"))
        headers = read_addressing(envelope)
        self.assertEqual((headers.action, headers.message_id), (ACTION_REGISTER, "urn:uuid:1"))
        self.assertEqual(parse_register(envelope, 1024), registration)
        self.assertEqual(control_action(envelope), ACTION_REGISTER)

    def test_register_defaults_and_errors(self) -> None:
        """Missing policy means token/private; missing kind, bad base64 and oversize WSDL are refused."""
        envelope = reparsed(register_envelope(Registration("multicast"), "urn:uuid:2"))
        self.assertEqual(parse_register(envelope, 1024), Registration("multicast"))
        self.assertRaises(
            ControlError, parse_register, reparsed(register_envelope(Registration(""), "u")), 1024
        )
        big = reparsed(register_envelope(Registration("oneway", wsdl=b"x" * 2000), "u"))
        self.assertRaises(ControlError, parse_register, big, 1024)
        broken = Envelope(
            SoapVersion.SOAP12, (), (register_envelope(Registration("oneway", wsdl=b"x"), "u").body[0],)
        )
        broken.body[0][-1].text = "***"
        self.assertRaises(ControlError, parse_register, broken, 1024)
        self.assertRaises(ControlError, parse_register, reparsed(delivered_envelope(1, "u")), 1024)

    def test_registered_delivered_renewed(self) -> None:
        """The gateway's answers relate to the message they answer."""
        registered = Registered("https://h/calc", "calc", "requestreply")
        envelope = reparsed(registered_envelope(registered, "urn:r"))
        self.assertEqual(
            (parse_registered(envelope), read_addressing(envelope).relates_to), (registered, "urn:r")
        )
        delivered = reparsed(delivered_envelope(3, "urn:d"))
        self.assertEqual(
            (parse_delivered(delivered), read_addressing(delivered).action), (3, ACTION_DELIVERED)
        )
        renewed = reparsed(token_renewed_envelope(99, "urn:t"))
        self.assertEqual(read_addressing(renewed).relates_to, "urn:t")
        renew = reparsed(renew_token_envelope("SharedAccessSignature x", "urn:n"))
        self.assertEqual(
            (parse_renew_token(renew), control_action(renew)), ("SharedAccessSignature x", ACTION_RENEW_TOKEN)
        )

    def test_http_authorization(self) -> None:
        """The forwarded Authorization header is read back; none means None."""
        envelope = Envelope(SoapVersion.SOAP12, (http_authorization_header("Basic abc"),), ())
        self.assertEqual(read_http_authorization(reparsed(envelope)), "Basic abc")
        self.assertIsNone(read_http_authorization(Envelope(SoapVersion.SOAP12)))

    @given(count=st.integers(min_value=0, max_value=10**9))
    def test_delivered_counts(self, count: int) -> None:
        """Any count round-trips."""
        self.assertEqual(parse_delivered(reparsed(delivered_envelope(count, "u"))), count)

    def test_bad_count(self) -> None:
        """A count that is not a non-negative integer is refused."""
        for text in ("-1", "\u00b2", "\u0663"):  # "²" and an Arabic-Indic 3 pass str.isdigit
            with self.subTest(text=text):
                envelope = delivered_envelope(1, "u")
                envelope.body[0][0].text = text
                self.assertRaises(ControlError, parse_delivered, envelope)


class CredentialTests(SynchronousTestCase):
    """Client addresses and SAS credentials."""

    def test_addresses(self) -> None:
        """sb:// means TLS; ws/http plain; $wcf in the path is tolerated; the URLs follow spec 3."""
        address = parse_address("sb://relay.example/team/calc")
        self.assertEqual((address.secure, address.path), (True, "team/calc"))
        self.assertEqual(
            address.websocket_url("listen"), "wss://relay.example/$wcf/team/calc?sb-wcf-action=listen"
        )
        self.assertEqual(address.http_url, "https://relay.example/team/calc")
        plain = parse_address("http://127.0.0.1:9080/$wcf/calc")
        self.assertEqual(
            (plain.secure, plain.port, plain.http_url), (False, 9080, "http://127.0.0.1:9080/calc")
        )
        self.assertEqual(
            parse_address("sb://h/x", secure=False).websocket_url("send", "me"),
            "ws://h/$wcf/x?sb-wcf-action=send&sb-wcf-id=me",
        )
        for bad in ("ftp://h/x", "sb://h/", "calc"):
            self.assertRaises(ValueError, parse_address, bad)

    def test_scheme_decides_tls(self) -> None:
        """wss and https addresses are TLS, ws and http plain; the override changes sb:// addresses only."""
        for scheme, secure in (("sb", True), ("wss", True), ("https", True), ("ws", False), ("http", False)):
            for override in (None, True, False):
                with self.subTest(scheme=scheme, override=override):
                    address = parse_address(f"{scheme}://Relay.Example:8443/calc", secure=override)
                    expected = override if scheme == "sb" and override is not None else secure
                    self.assertEqual(address.secure, expected)
                    self.assertEqual((address.host, address.port), ("relay.example", 8443))
                    self.assertTrue(
                        address.websocket_url("send").startswith("wss://" if expected else "ws://")
                    )
        self.assertEqual(parse_address("wss://relay.example/calc").port, 443)
        self.assertEqual(parse_address("ws://relay.example/calc").port, 80)

    def test_wcf_segment(self) -> None:
        """A leading C{$wcf} segment (any case) is dropped, the rest of the name kept whole."""
        for address in ("sb://h/$wcf/team/app/calc/", "wss://h/$WCF/team/app/calc", "sb://h/team/app/calc"):
            with self.subTest(address=address):
                self.assertEqual(parse_address(address).path, "team/app/calc")
        for bad in ("sb://h/$wcf", "sb://h/$wcf/", "sb://h//"):
            with self.subTest(bad=bad):
                self.assertRaises(ValueError, parse_address, bad)

    def test_connection_string(self) -> None:
        """Endpoint, key and emulator flag become an address and credentials."""
        text = "Endpoint=sb://127.0.0.1:9080/;SharedAccessKeyName=root;SharedAccessKey=k0123456789abcdef;UseDevelopmentEmulator=true"
        address, credentials = from_connection_string(text, "calc")
        self.assertEqual((address.http_url, credentials.key_name), ("http://127.0.0.1:9080/calc", "root"))
        self.assertRaises(ValueError, from_connection_string, text)
        self.assertNotIn("k0123456789abcdef", repr(credentials))
        tls, _ = from_connection_string(text.replace(";UseDevelopmentEmulator=true", ""), "calc")
        self.assertEqual(tls.websocket_url("listen"), "wss://127.0.0.1:9080/$wcf/calc?sb-wcf-action=listen")

    def test_connection_string_without_key(self) -> None:
        """A string with a ready-made token but no key cannot sign renewals: refused, naming what is missing."""
        text = (
            "Endpoint=sb://relay.example/;SharedAccessSignature=SharedAccessSignature sr=x&sig=y&se=1&skn=z"
        )
        with self.assertRaises(ValueError) as ctx:
            from_connection_string(text, "calc")
        self.assertIn("SharedAccessKey", str(ctx.exception))
        with self.assertRaises(ValueError):
            from_connection_string(text + ";SharedAccessKeyName=root", "calc")

    def test_tokens(self) -> None:
        """Signed tokens validate for the name and last ttl seconds; renewal happens before expiry."""
        credentials = SasCredentials("root", "k0123456789abcdef", ttl=100)
        token = credentials.token("http://relay.example/calc", now=1000)
        rule = SharedAccessRule("root", "k0123456789abcdef", Rights.LISTEN)
        decision = validate_token(
            token,
            rules=[rule],
            namespace_hosts=["relay.example"],
            entity_path="calc",
            needed=Rights.LISTEN,
            now=1050,
        )
        self.assertEqual(decision.expiry, 1100)  # type: ignore[union-attr]
        self.assertEqual(credentials.renew_after, 80)
        self.assertRaises(ValueError, SasCredentials, "a", "b", ttl=0)
        for fraction in (0, 1, 1.5, -0.1):
            with self.subTest(fraction=fraction):
                self.assertRaises(ValueError, SasCredentials, "a", "b", renew_fraction=fraction)
        self.assertEqual(SasCredentials("a", "b", ttl=0.5, renew_fraction=0.5).renew_after, 0.25)

    def test_base64_of_token(self) -> None:
        """Sanity: SAS tokens are ASCII, so the RelayAccessToken carrier is plain base64 of them."""
        token = SasCredentials("root", "k0123456789abcdef").token("http://h/x", now=0)
        self.assertEqual(base64.b64decode(base64.b64encode(token.encode())).decode(), token)


class DeliveredBytesTests(SynchronousTestCase):
    """The r:Delivered answer written as text is byte for byte the element-built one."""

    @given(
        count=st.integers(min_value=0, max_value=10**6),
        relates_to=st.text(
            alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
            min_size=1,
            max_size=60,
        ),
    )
    def test_same_bytes(self, count: int, relates_to: str) -> None:
        """Any count and any id (escaped as lxml escapes it)."""
        self.assertEqual(delivered_bytes(count, relates_to), delivered_envelope(count, relates_to).to_bytes())


class HandshakeStatusTests(SynchronousTestCase):
    """How a client WebSocket that closed before opening reports the gateway's status line."""

    def closed_with(self, status_line: str) -> HandshakeRefused:
        protocol = SoapClientProtocol()
        protocol.http_status_line = status_line
        protocol.onClose(False, 1006, "closed")
        refused: HandshakeRefused = self.failureResultOf(protocol.opened, HandshakeRefused).value
        return refused

    def test_status_code(self) -> None:
        """The status of a refused handshake is read from the status line."""
        self.assertEqual(self.closed_with("HTTP/1.1 401 Unauthorized").status, 401)

    def test_digits_that_are_not_ascii(self) -> None:
        """A status of other digits ("²" passes C{str.isdigit}, C{int} refuses it) is no status."""
        for line in ("HTTP/1.1 \u00b201 Odd", "HTTP/1.1 \u0664\u0660\u0661 Odd", ""):
            with self.subTest(line=line):
                self.assertIsNone(self.closed_with(line).status)
