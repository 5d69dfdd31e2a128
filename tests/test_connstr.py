"""Tests for L{relay.connstr}."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from relay.connstr import ConnectionString, ConnectionStringError, parse_connection_string


class ConnectionStringTests(SynchronousTestCase):
    """Azure-format connection strings."""

    def test_parse_azure(self) -> None:
        """The portal's format, keys in any case, with a trailing semicolon."""
        cs = parse_connection_string(
            "Endpoint=sb://contoso.servicebus.windows.net/;sharedaccesskeyname=root;SharedAccessKey=abc=;EntityPath=hyco;"
        )
        self.assertEqual(cs.host, "contoso.servicebus.windows.net")
        self.assertEqual(cs.websocket_base, "wss://contoso.servicebus.windows.net")
        self.assertEqual(cs.http_base, "https://contoso.servicebus.windows.net")
        self.assertEqual((cs.key_name, cs.key, cs.entity_path, cs.plain), ("root", "abc=", "hyco", False))

    def test_emulator(self) -> None:
        """C{UseDevelopmentEmulator=true} selects plain ws:// and http://, keeping the port."""
        cs = parse_connection_string(
            "Endpoint=sb://127.0.0.1:9080/;SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true"
        )
        self.assertEqual(cs.websocket_base, "ws://127.0.0.1:9080")
        self.assertEqual(parse_connection_string(cs.format()), cs)

    def test_errors(self) -> None:
        """Unknown keys, missing endpoint or credentials are refused with a reason."""
        for text, fragment in [
            ("Endpoint=sb://h/;Foo=1;SharedAccessKeyName=k;SharedAccessKey=v", "unknown"),
            ("SharedAccessKeyName=k;SharedAccessKey=v", "no Endpoint"),
            ("Endpoint=h;SharedAccessKeyName=k;SharedAccessKey=v", "absolute"),
            ("Endpoint=sb://[::1/;SharedAccessKeyName=k;SharedAccessKey=v", "absolute"),  # unclosed bracket
            ("Endpoint=sb://:80/;SharedAccessKeyName=k;SharedAccessKey=v", "absolute"),  # no host name
            ("Endpoint=sb://user@/;SharedAccessKeyName=k;SharedAccessKey=v", "absolute"),
            ("Endpoint=sb://h/", "needs"),
            ("Endpoint=sb://h/;junk", "no '='"),
        ]:
            with self.subTest(text=text):
                with self.assertRaises(ConnectionStringError) as ctx:
                    parse_connection_string(text)
                self.assertIn(fragment, str(ctx.exception))

    def test_errors_do_not_quote_the_key(self) -> None:
        """A key written with C{:}, a space or nothing instead of C{=} is refused without quoting it."""
        secret = "q8bXjA9S0uYkLm3nPzR7tV2wE5yH1cF4dG6iJ0oK8sM="
        for pair in (f"SharedAccessKey:{secret}", f"SharedAccessKey {secret}", f"SharedAccessKey{secret}"):
            for text in (
                f"Endpoint=sb://h/;SharedAccessKeyName=root;{pair}",
                f"Endpoint=h {pair}",
                f"Endpoint=h,SharedAccessKeyName=root,SharedAccessKey={secret}",
            ):
                with self.subTest(text=text):
                    with self.assertRaises(ConnectionStringError) as ctx:
                        parse_connection_string(text)
                    self.assertNotIn(secret[:6], str(ctx.exception))

    def test_key_hidden_from_repr(self) -> None:
        """The key never shows in reprs."""
        self.assertNotIn("secret", repr(ConnectionString("sb://h/", "k", "secret")))
