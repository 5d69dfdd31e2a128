"""Tests for L{relay.client.address}: how endpoints become URLs."""

from __future__ import annotations

from urllib.parse import urlsplit

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from relay.client.address import (
    HybridConnectionAddress,
    encode_query,
    parse_address,
    reject_url,
    split_accept_address,
)
from relay.hybrid.addressing import split_target

KEYS = ";SharedAccessKeyName=root;SharedAccessKey=s3cret"
SECRET = "SuperSecretKey0123456789abcdef="
SPACED = (
    "Endpoint = sb://127.0.0.1:9080/; SharedAccessKeyName = RootManageSharedAccessKey; "
    f"SharedAccessKey = {SECRET}; UseDevelopmentEmulator = true"
)


class ParseAddressTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """Connection strings and endpoint URIs of every supported kind map to scheme, host and path."""
        cases = [
            (
                ("Endpoint=sb://ns.servicebus.windows.net/" + KEYS, "hyco"),
                ("wss", "ns.servicebus.windows.net", "hyco"),
            ),
            (("Endpoint=sb://ns/" + KEYS + ";EntityPath=hyco", None), ("wss", "ns", "hyco")),
            (
                ("Endpoint=sb://localhost:9080/" + KEYS + ";UseDevelopmentEmulator=true", "hyco"),
                ("ws", "localhost:9080", "hyco"),
            ),
            (("sb://ns/hyco", None), ("wss", "ns", "hyco")),
            (("sb://ns", "team/app"), ("wss", "ns", "team/app")),
            (("wss://relay.example.org:9443", "/hyco/"), ("wss", "relay.example.org:9443", "hyco")),
            (("https://relay.example.org", "hyco"), ("wss", "relay.example.org", "hyco")),
            (("ws://127.0.0.1:9080/$hc/hyco", None), ("ws", "127.0.0.1:9080", "hyco")),
            (("http://[::1]:9080/", "hyco"), ("ws", "[::1]:9080", "hyco")),
            (("ws://h/", "a b"), ("ws", "h", "a%20b")),
        ]
        for (endpoint, path), (scheme, netloc, hc) in cases:
            address, _ = parse_address(endpoint, path)
            self.assertEqual((address.scheme, address.netloc, address.path), (scheme, netloc, hc), endpoint)

    def test_spaces_around_equals(self) -> None:
        """A connection string with white space around C{=}, which relay.connstr accepts, is read as one."""
        address, cs = parse_address(SPACED, "hyco")
        self.assertEqual((address.scheme, address.netloc, address.path), ("ws", "127.0.0.1:9080", "hyco"))
        assert cs is not None
        self.assertEqual(cs.key, SECRET)

    def test_refusal_does_not_echo_the_key(self) -> None:
        """Whatever is wrong with a connection string, the error never shows its C{SharedAccessKey}."""
        for text in (
            SPACED.replace("Endpoint", "Endpiont"),
            SPACED.replace(" = ", ": "),
            SPACED.replace("sb://", "ftp://"),
        ):
            with self.subTest(text=text):
                with self.assertRaises(ValueError) as ctx:
                    parse_address(text, "other")
                self.assertNotIn(SECRET, str(ctx.exception))

    def test_connection_string_is_returned(self) -> None:
        """The parsed connection string comes back so callers can take credentials from it."""
        _, cs = parse_address("Endpoint=sb://ns/" + KEYS, "hyco")
        assert cs is not None
        self.assertEqual(cs.key_name, "root")
        self.assertIsNone(parse_address("sb://ns/hyco")[1])

    def test_refusals(self) -> None:
        """Unknown schemes, missing or doubled paths and endpoint queries are errors."""
        for endpoint, path in [
            ("ftp://ns/", "hyco"),
            ("ns/hyco", None),
            ("sb://ns/", None),
            ("sb://ns/hyco", "other"),
            ("Endpoint=sb://ns/" + KEYS + ";EntityPath=hyco", "other"),
            ("wss://ns/hyco?sb-hc-token=x", None),
        ]:
            self.assertRaises(ValueError, parse_address, endpoint, path)

    def test_bad_ports_are_refused(self) -> None:
        """
        A port that is no number from 0 to 65535 is refused at once.

        Before, it was accepted and every connection attempt failed with L{ValueError} (C{relay expose}
        retried for ever, as if the relay were unreachable).
        """
        for endpoint in (
            "sb://ns:abc/hyco",
            "ws://ns:99999/hyco",
            "ws://ns:\u0661\u0662/hyco",
            "Endpoint=sb://ns:-1/" + KEYS,
        ):
            with self.subTest(endpoint=endpoint):
                with self.assertRaises(ValueError) as ctx:
                    parse_address(endpoint, "hyco")
                self.assertIn("port", str(ctx.exception).lower())
        self.assertEqual(parse_address("ws://ns:9080/hyco")[0].netloc, "ns:9080")

    def test_same_path_twice_is_fine(self) -> None:
        """Naming the same path in both places is accepted."""
        self.assertEqual(parse_address("sb://ns/hyco", "hyco")[0].path, "hyco")


class UrlTests(SynchronousTestCase):
    address = HybridConnectionAddress("wss", "ns.example:443", "team/app")

    def test_listen_url(self) -> None:
        """The control channel URL carries the action and the listener's tracking id, nothing secret."""
        self.assertEqual(
            self.address.listen_url("5f0c"),
            "wss://ns.example:443/$hc/team/app?sb-hc-action=listen&sb-hc-id=5f0c",
        )

    def test_connect_url(self) -> None:
        """Suffix and application query come before the reserved parameters, which come last."""
        self.assertEqual(
            self.address.connect_url("id-1", "chat/room 1", {"a": "1 2", "b": "x&y"}),
            "wss://ns.example:443/$hc/team/app/chat/room%201?a=1%202&b=x%26y&sb-hc-action=connect&sb-hc-id=id-1",
        )
        self.assertEqual(
            self.address.connect_url("id-1", "/x", "a=1&a=2&sb-hc-flag"),
            "wss://ns.example:443/$hc/team/app/x?a=1&a=2&sb-hc-flag&sb-hc-action=connect&sb-hc-id=id-1",
        )
        self.assertEqual(
            self.address.connect_url("a b"),
            "wss://ns.example:443/$hc/team/app?sb-hc-action=connect&sb-hc-id=a%20b",
        )

    def test_reserved_query_parameters_are_refused(self) -> None:
        """An application cannot set relay parameters such as the action or a token."""
        for query in ("sb-hc-action=listen", "x=1&SB-HC-TOKEN=abc", [("sb-hc-id", "1")]):
            self.assertRaises(ValueError, encode_query, query)
        self.assertRaises(ValueError, self.address.connect_url, "i", "/a?b=1")

    def test_audience(self) -> None:
        """Tokens are requested for C{http://host/path/}, without port, as the .NET client does."""
        self.assertEqual(self.address.audience, "http://ns.example/team/app/")
        self.assertEqual(HybridConnectionAddress("ws", "[::1]:80", "h").audience, "http://[::1]/h/")

    def test_reject_url(self) -> None:
        """The status and a form-encoded description are appended to the accept address."""
        url = reject_url("wss://r/$hc/hyco?sb-hc-action=accept&sb-hc-id=1", 401, "Not you & not now")
        self.assertEqual(
            url,
            "wss://r/$hc/hyco?sb-hc-action=accept&sb-hc-id=1&sb-hc-statusCode=401"
            "&sb-hc-statusDescription=Not+you+%26+not+now",
        )
        target = split_target(url.split("wss://r", 1)[1])
        self.assertEqual(target.param("statuscode"), "401")
        self.assertEqual(target.param("statusdescription"), "Not you & not now")


class SplitAcceptAddressTests(SynchronousTestCase):
    def test_cases(self) -> None:
        """The hybrid connection name is removed ignoring case and encoding; reserved parameters go."""
        cases = [
            ("wss://r/$hc/hyco?sb-hc-action=accept&sb-hc-id=1", "hyco", ("", "")),
            ("wss://r/$hc/hyco/chat?room=1&sb-hc-action=accept&sb-hc-id=1", "hyco", ("/chat", "room=1")),
            ("wss://r/$hc/HYCO/a/b/?x&sb-hc-id=1&y=%20", "hyco", ("/a/b/", "x&y=%20")),
            ("wss://r/%24hc/team/app/x?sb-hc-action=accept", "team/app", ("/x", "")),
            ("wss://r/$hc/other/x?q=1", "hyco", ("/other/x", "q=1")),
        ]
        for address, path, expected in cases:
            self.assertEqual(split_accept_address(address, path), expected, address)

    def test_an_address_that_is_no_url(self) -> None:
        """What urlsplit refuses (the relay sent it) reads as no suffix and no query, not a ValueError."""
        for address in ("wss://[::1/$hc/hyco?sb-hc-action=accept", "wss://r\uff03x/$hc/hyco/a?q=1", "//]/x"):
            self.assertEqual(split_accept_address(address, "hyco"), ("", ""), address)

    @given(
        suffix=st.lists(st.text(alphabet="abcXYZ019-._~ %", min_size=1, max_size=5), max_size=3),
        pairs=st.lists(
            st.tuples(st.text("abc", min_size=1, max_size=3), st.text("xyz &=", max_size=4)), max_size=3
        ),
    )
    def test_round_trip(self, suffix: list[str], pairs: list[tuple[str, str]]) -> None:
        """What a sender puts in its URL is what the listener reads back from the accept address."""
        sender = HybridConnectionAddress("ws", "r", "hyco").connect_url("id", "/".join(suffix), pairs)
        parts = urlsplit(sender)
        accept = f"ws://r{parts.path}?{parts.query}".replace("sb-hc-action=connect", "sb-hc-action=accept")
        got_suffix, got_query = split_accept_address(accept, "hyco")
        expected = split_target(f"{parts.path}?{parts.query}")
        self.assertEqual(got_query, expected.query)
        self.assertEqual("/hyco" + got_suffix if got_suffix else "/hyco", expected.path.split("/$hc", 1)[1])
