"""Tests for L{relay.client.commands} and L{relay.client.headers}."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from relay.client.commands import (
    AcceptCommand,
    RequestCommand,
    UnknownCommand,
    parse_command,
    remote_endpoint,
    renew_token_message,
)
from relay.client.headers import Headers, parse_subprotocols
from relay.hybrid.messages import Accept, ControlMessageError, RemoteEndpoint, parse_renew_token

SPEC_ACCEPT = {
    "accept": {
        "address": "wss://relay.example.org/$hc/hyco/chat?room=1&sb-hc-action=accept&sb-hc-id=1b3f",
        "id": "1b3f",
        "connectHeaders": {"Host": "relay.example.org", "Sec-WebSocket-Protocol": "chat, superchat"},
        "remoteEndpoint": {"address": "203.0.113.7", "port": 51234},
    }
}


def payload(obj: object) -> bytes:
    return json.dumps(obj).encode()


class ParseCommandTests(SynchronousTestCase):
    def test_accept_from_the_spec(self) -> None:
        """The spec's example C{accept} parses into its fields."""
        command = parse_command(payload(SPEC_ACCEPT))
        assert isinstance(command, AcceptCommand)
        self.assertEqual(command.id, "1b3f")
        self.assertEqual(command.connect_headers["Sec-WebSocket-Protocol"], "chat, superchat")
        self.assertEqual(command.remote_endpoint, RemoteEndpoint("203.0.113.7", 51234))
        self.assertNotIn("sb-hc-id", repr(command))

    def test_accept_the_gateway_encodes(self) -> None:
        """What the gateway's codec emits, the client reads back unchanged."""
        sent = Accept(
            "ws://r/$hc/h?sb-hc-action=accept&sb-hc-id=9", "9", {"A": "b"}, RemoteEndpoint("::1", 7)
        )
        command = parse_command(sent.encode())
        assert isinstance(command, AcceptCommand)
        self.assertEqual(
            (command.address, command.id, dict(command.connect_headers), command.remote_endpoint),
            (sent.address, sent.id, {"A": "b"}, sent.remote_endpoint),
        )

    def test_lenient_accept(self) -> None:
        """Optional fields may be missing or odd (other relays); only the address is required."""
        command = parse_command(
            payload({"accept": {"address": "wss://r/x", "remoteEndpoint": {"address": "a"}}})
        )
        assert isinstance(command, AcceptCommand)
        self.assertEqual((command.id, dict(command.connect_headers)), ("", {}))
        self.assertEqual(command.remote_endpoint, RemoteEndpoint("a", 0))

    def test_remote_endpoint_ports(self) -> None:
        """
        A port that is not a number is 0: the command is still read.

        C{"²"} passes C{str.isdigit} but not C{int}; before, a request's endpoint was read with a bare
        C{int()} in the HTTP layer, which raised for it.
        """
        for port, expected in ((51234, 51234), ("8080", 8080), ("x", 0), ("\u00b2", 0), (None, 0), ([1], 0)):
            with self.subTest(port=port):
                self.assertEqual(
                    remote_endpoint({"address": "203.0.113.7", "port": port}),
                    RemoteEndpoint("203.0.113.7", expected),
                )
        self.assertIsNone(remote_endpoint({"port": 1}))
        self.assertIsNone(remote_endpoint("203.0.113.7:1"))

    def test_remote_endpoint_infinite_port(self) -> None:
        """
        A port of C{Infinity} or C{1e400} (JSON numbers Python reads as an infinite float) is 0.

        Before, C{int()} raised L{OverflowError} out of L{parse_command} and out of the control channel.
        """
        for text in (b"Infinity", b"-Infinity", b"1e400"):
            with self.subTest(port=text):
                command = parse_command(
                    b'{"accept":{"address":"wss://r/x","remoteEndpoint":{"address":"a","port":%s}}}' % text
                )
                assert isinstance(command, AcceptCommand)
                self.assertEqual(command.remote_endpoint, RemoteEndpoint("a", 0))

    def test_requests(self) -> None:
        """Both request forms parse; C{has_body} is set only by an explicit C{"body": true}."""
        small = parse_command(
            payload({"request": {"address": "wss://r/a", "id": "r1", "method": "GET", "body": True}})
        )
        assert isinstance(small, RequestCommand)
        self.assertEqual((small.id, small.has_body, small.fields["method"]), ("r1", True, "GET"))
        rendezvous = parse_command(payload({"request": {"address": "wss://r/a", "id": "r2"}}))
        assert isinstance(rendezvous, RequestCommand)
        self.assertFalse(rendezvous.has_body)

    def test_unknown(self) -> None:
        """Unknown commands are reported with their keys, not refused."""
        self.assertEqual(parse_command(b'{"ping":{},"x":1}'), UnknownCommand(("ping", "x")))

    def test_malformed(self) -> None:
        """Non-JSON, non-objects and commands without an address are errors."""
        for bad in (b"hello", b"[1]", b'{"accept":{}}', b'{"request":"x"}', b"\xff"):
            self.assertRaises(ControlMessageError, parse_command, bad)

    @given(st.text(min_size=1))
    def test_renew_token_message(self, token: str) -> None:
        """The C{renewToken} message is the JSON the gateway's codec reads."""
        message = json.loads(renew_token_message(token))
        self.assertEqual(list(message), ["renewToken"])
        self.assertEqual(parse_renew_token(message["renewToken"]).token, token)


class HeadersTests(SynchronousTestCase):
    def test_case_insensitive(self) -> None:
        """Names match in any case; iteration keeps the original spelling."""
        headers = Headers({"Sec-WebSocket-Protocol": "chat", "x-app": "1"})
        self.assertEqual(headers["sec-websocket-protocol"], "chat")
        self.assertEqual(headers.get("X-APP"), "1")
        self.assertIn("X-App", headers)
        self.assertNotIn(3, headers)
        self.assertEqual(list(headers), ["Sec-WebSocket-Protocol", "x-app"])
        self.assertEqual(len(headers), 2)
        self.assertIn("chat", repr(headers))

    def test_items(self) -> None:
        """C{items()} gives the original spellings with their values, and is the view a mapping's is."""
        headers = Headers({"Sec-WebSocket-Protocol": "chat", "x-app": "1"})
        self.assertEqual(list(headers.items()), [("Sec-WebSocket-Protocol", "chat"), ("x-app", "1")])
        self.assertIn(("X-App", "1"), headers.items())  # looked up case-insensitively, as Mapping's view does
        self.assertNotIn(("x-app", "2"), headers.items())
        self.assertEqual(len(headers.items()), 2)
        self.assertEqual(dict(headers.items()), {"Sec-WebSocket-Protocol": "chat", "x-app": "1"})
        self.assertEqual(headers, {"Sec-WebSocket-Protocol": "chat", "x-app": "1"})

    def test_subprotocols(self) -> None:
        """Offers are split on commas, trimmed, blanks dropped, order kept."""
        self.assertEqual(parse_subprotocols("chat, superchat,,  v2 "), ("chat", "superchat", "v2"))
        self.assertEqual(parse_subprotocols(None), ())
