"""The RFC 6455 server handshake the gateway answers itself for senders and rendezvous (no Autobahn)."""

from __future__ import annotations

import base64
import hashlib

from twisted.trial.unittest import SynchronousTestCase

from relay.hybrid.handshake import (
    WEBSOCKET_GUID,
    Upgrade,
    accept_value,
    read_upgrade,
    refusal,
    switching_protocols,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3
URI = b"/$hc/hyco?sb-hc-action=connect"


def headers(**changes: str | None) -> list[tuple[bytes, list[bytes]]]:
    """A valid upgrade's header fields as twisted.web gives them, with fields changed or removed (None)."""
    fields = {
        "Host": "relay.example:443",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    for name, value in changes.items():
        name = name.replace("_", "-")
        fields.pop(name, None)
        if value is not None:
            fields[name] = value
    return [(name.encode(), [value.encode("latin-1")]) for name, value in fields.items()]


class ReadUpgradeTests(SynchronousTestCase):
    """Which requests are answered here; everything else is left to Autobahn (None)."""

    def test_valid(self) -> None:
        upgrade = read_upgrade(b"GET", b"HTTP/1.1", URI, headers())
        self.assertEqual(
            upgrade,
            Upgrade(
                key=KEY,
                host="relay.example",
                headers={
                    "host": "relay.example:443",
                    "upgrade": "websocket",
                    "connection": "Upgrade",
                    "sec-websocket-key": KEY,
                    "sec-websocket-version": "13",
                },
                protocols=(),
            ),
        )

    def test_valid_variants(self) -> None:
        """
        Token lists, case, IPv6 hosts, subprotocols and extension offers (declined later) are fine.

        The host is read as every entry point reads it: lower case, no port, no IPv6 brackets.
        """
        cases = [
            ({"Upgrade": "WebSocket"}, "relay.example", ()),
            ({"Connection": "keep-alive, Upgrade"}, "relay.example", ()),
            ({"Upgrade": "h2c, websocket"}, "relay.example", ()),
            ({"Host": "relay.example"}, "relay.example", ()),
            ({"Host": "[::1]"}, "::1", ()),  # as plain HTTP and token audiences read it
            ({"Host": "[::1]:9080"}, "::1", ()),
            ({"Host": "Relay.Example:443"}, "relay.example", ()),
            ({"Sec_WebSocket_Protocol": "a, b"}, "relay.example", ("a", "b")),
            ({"Sec_WebSocket_Extensions": "permessage-deflate; client_max_window_bits"}, "relay.example", ()),
            ({"ServiceBusAuthorization": "SharedAccessSignature sr=x"}, "relay.example", ()),
        ]
        for changes, host, protocols in cases:
            with self.subTest(changes=changes):
                upgrade = read_upgrade(b"GET", b"HTTP/1.1", URI, headers(**changes))
                assert upgrade is not None
                self.assertEqual((upgrade.host, upgrade.protocols), (host, protocols))

    def test_left_to_autobahn(self) -> None:
        """Invalid or special handshakes get None, so Autobahn answers them as it always did."""
        cases: list[tuple[str, bytes, bytes, bytes, list[tuple[bytes, list[bytes]]]]] = [
            ("POST", b"POST", b"HTTP/1.1", URI, headers()),
            ("HTTP/1.0", b"GET", b"HTTP/1.0", URI, headers()),
            ("fragment", b"GET", b"HTTP/1.1", URI + b"#x", headers()),
            ("no Upgrade", b"GET", b"HTTP/1.1", URI, headers(Upgrade=None)),
            ("other Upgrade", b"GET", b"HTTP/1.1", URI, headers(Upgrade="h2c")),
            ("no Connection", b"GET", b"HTTP/1.1", URI, headers(Connection=None)),
            ("Connection close", b"GET", b"HTTP/1.1", URI, headers(Connection="close")),
            ("no version", b"GET", b"HTTP/1.1", URI, headers(Sec_WebSocket_Version=None)),
            ("version 8", b"GET", b"HTTP/1.1", URI, headers(Sec_WebSocket_Version="8")),
            ("no key", b"GET", b"HTTP/1.1", URI, headers(Sec_WebSocket_Key=None)),
            ("short key", b"GET", b"HTTP/1.1", URI, headers(Sec_WebSocket_Key="dGhlIHNhbXBsZQ==")),
            ("bad key", b"GET", b"HTTP/1.1", URI, headers(Sec_WebSocket_Key="dGhlIHNhbXBsZSBub25j!Q==")),
            ("no Host", b"GET", b"HTTP/1.1", URI, headers(Host=None)),
            ("bad port", b"GET", b"HTTP/1.1", URI, headers(Host="relay.example:https")),
            ("superscript port", b"GET", b"HTTP/1.1", URI, headers(Host="relay.example:\u00b2")),
            ("not a host", b"GET", b"HTTP/1.1", URI, headers(Host="relay example")),
            ("user information", b"GET", b"HTTP/1.1", URI, headers(Host="user@relay.example")),
            ("Origin", b"GET", b"HTTP/1.1", URI, headers(Origin="https://app.example")),
            ("duplicate subprotocol", b"GET", b"HTTP/1.1", URI, headers(Sec_WebSocket_Protocol="a, a")),
            ("repeated field", b"GET", b"HTTP/1.1", URI, [*headers(), (b"X-Twice", [b"1", b"2"])]),
        ]
        for name, method, version, uri, fields in cases:
            with self.subTest(name):
                self.assertIsNone(read_upgrade(method, version, uri, fields))


class AnswerTests(SynchronousTestCase):
    """The answers, byte for byte what Autobahn sends."""

    def test_accept_value_of_the_rfc_example(self) -> None:
        self.assertEqual(accept_value(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        digest = hashlib.sha1(KEY.encode() + WEBSOCKET_GUID).digest()  # noqa: S324
        self.assertEqual(accept_value(KEY), base64.b64encode(digest).decode())

    def test_switching_protocols(self) -> None:
        self.assertEqual(
            switching_protocols(KEY, None, "relay"),
            b"HTTP/1.1 101 Switching Protocols\r\nServer: relay\r\nUpgrade: WebSocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        )

    def test_switching_protocols_with_subprotocol_and_no_server_name(self) -> None:
        self.assertEqual(
            switching_protocols(KEY, "chat", None),
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        )

    def test_refusal(self) -> None:
        self.assertEqual(refusal(404, "No listener"), b"HTTP/1.1 404 No listener\r\n\r\n")
