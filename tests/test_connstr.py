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

    def test_shortest_key_without_equals_is_not_quoted(self) -> None:
        """
        A part is quoted only when it is one word of at most 30 letters.

        C{SharedAccessKey} and a key of 16 letters (the shortest a gateway accepts) run together are 31:
        only the known key is shown.
        """
        for key in ("abcdefghijklmnop", "abcdefghijklmnopqrstuvwxyzabcdef"):
            with self.subTest(key=key):
                with self.assertRaises(ConnectionStringError) as ctx:
                    parse_connection_string(f"Endpoint=sb://h/;SharedAccessKeyName=root;SharedAccessKey{key}")
                self.assertEqual(
                    str(ctx.exception), "connection string part 3 ('SharedAccessKey...') has no '='"
                )
        with self.assertRaises(ConnectionStringError) as ctx:
            parse_connection_string(
                "Endpoint=sb://h/; EntityPath ;SharedAccessKeyName=root;SharedAccessKey=k"
            )
        self.assertEqual(str(ctx.exception), "connection string part 2 ('EntityPath') has no '='")

    def test_a_key_pasted_alone_is_not_quoted(self) -> None:
        """
        A part without C{=} that is no known key is not quoted: it may be a key pasted without its name.

        A key of 16 to 30 letters alone was quoted whole in the error.
        """
        for part in ("abcdefghijklmnopqr", "A" * 30, "Endpiont"):
            with self.subTest(part=part):
                with self.assertRaises(ConnectionStringError) as ctx:
                    parse_connection_string(f"Endpoint=sb://h/;SharedAccessKeyName=root;{part}")
                self.assertEqual(str(ctx.exception), "connection string part 3 has no '='")

    def test_every_key_and_blanks(self) -> None:
        """
        Every key Azure writes is read, and L{ConnectionString.format} writes each back.

        Keys are read in any case, with blanks around names and values; empty parts are skipped.
        """
        cs = parse_connection_string(
            " endpoint = sb://h:9443/ ;; SHAREDACCESSKEYNAME = root ; sharedaccesskey = k= ;"
            "SharedAccessSignature=SharedAccessSignature sr=a&sig=b&se=1&skn=c; EntityPath = hc ; \t ;"
            "OperationTimeout=00:01:00;UseDevelopmentEmulator=True"
        )
        self.assertEqual(
            cs,
            ConnectionString(
                "sb://h:9443/", "root", "k=", "SharedAccessSignature sr=a&sig=b&se=1&skn=c", "hc", plain=True
            ),
        )
        self.assertEqual(parse_connection_string(cs.format()), cs)
        bare = ConnectionString("sb://h/", signature="SharedAccessSignature sr=a&sig=b&se=1&skn=c")
        self.assertEqual(
            bare.format(),
            "Endpoint=sb://h/;SharedAccessSignature=SharedAccessSignature sr=a&sig=b&se=1&skn=c",
        )
        self.assertEqual(parse_connection_string(bare.format()), bare)
        self.assertEqual(
            ConnectionString("sb://h/", "n", "k").format(),
            "Endpoint=sb://h/;SharedAccessKeyName=n;SharedAccessKey=k",
        )

    def test_key_name_and_key_go_together(self) -> None:
        """A key name without a key (or a key without its name) is no credential."""
        for text in ("Endpoint=sb://h/;SharedAccessKeyName=k", "Endpoint=sb://h/;SharedAccessKey=v"):
            with self.subTest(text=text):
                self.assertRaises(ConnectionStringError, parse_connection_string, text)

    def test_key_hidden_from_repr(self) -> None:
        """The key never shows in reprs."""
        self.assertNotIn("secret", repr(ConnectionString("sb://h/", "k", "secret")))
