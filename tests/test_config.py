"""Tests for L{relay.config}: the TOML configuration file and its error messages."""

from __future__ import annotations

import os
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from relay.auth import Rights
from relay.config import ConfigError, load_config, parse_config
from relay.entities import HYBRID_CONNECTION, HybridConnectionSettings

GOOD = """
[gateway]
listen = ["tcp:9080", "ssl:443:privateKey=k.pem:certKey=c.pem"]
public_url = "https://relay.example.org"
rendezvous_timeout = 10

[[namespaces]]
name = "contoso"
hosts = ["relay.example.org", "Alias.Example.org"]
auto_create = true

  [[namespaces.rules]]
  name = "RootManageSharedAccessKey"
  key = "0123456789abcdef0123456789abcdef"
  rights = ["Listen", "Send", "Manage"]

  [[namespaces.hybrid_connections]]
  name = "team/app"
  requires_client_authorization = false
  max_listeners = 3
  request_timeout = 5.5

    [[namespaces.hybrid_connections.rules]]
    name = "app-send"
    key = "fedcba9876543210fedcba9876543210"
    rights = ["send"]

  [[namespaces.hybrid_connections]]
  name = "hyco"
"""


class LoadConfigTests(SynchronousTestCase):
    """A valid file becomes frozen values; a bad one names file, key and problem."""

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(textwrap.dedent(text))
        return path

    def test_good_file(self) -> None:
        """Every documented setting is read."""
        config = load_config(self.write(GOOD))
        self.assertEqual(config.listen, ("tcp:9080", "ssl:443:privateKey=k.pem:certKey=c.pem"))
        self.assertEqual(config.public_url, "https://relay.example.org")
        self.assertEqual(config.limits["rendezvous_timeout"], 10.0)
        self.assertEqual(config.limits["control_ping_interval"], 30.0)
        (ns,) = config.namespaces
        self.assertEqual(ns.namespace.hosts, ("relay.example.org", "alias.example.org"))
        self.assertTrue(ns.namespace.auto_create)
        self.assertEqual(ns.namespace.rules[0].rights, Rights.LISTEN | Rights.SEND | Rights.MANAGE)
        app, hyco = ns.entities
        self.assertEqual((app.name, app.kind), ("team/app", HYBRID_CONNECTION))
        self.assertEqual(app.settings, HybridConnectionSettings(False, 3, 5.5, True))
        self.assertEqual(app.rules[0].name, "app-send")
        self.assertEqual(hyco.settings, HybridConnectionSettings())

    def assertProblem(self, text: str, key: str, fragment: str) -> None:
        path = self.write(text)
        with self.assertRaises(ConfigError) as ctx:
            load_config(path)
        message = str(ctx.exception)
        self.assertTrue(message.startswith(path), message)
        self.assertEqual(ctx.exception.key, key, message)
        self.assertIn(fragment, message)

    def test_errors_name_the_key(self) -> None:
        """Each kind of mistake is reported with its key path."""
        ns = '[[namespaces]]\nhosts = ["h"]\n'
        hc = ns + "[[namespaces.hybrid_connections]]\n"
        rule = ns + "[[namespaces.rules]]\n"
        self.assertProblem("[gateway]\nlisten = 5\n", "gateway.listen", "must be an array")
        self.assertProblem("[gateway]\nlistne = []\n", "gateway.listne", "not a known setting")
        self.assertProblem(
            "[gateway]\npublic_url = 'relay.example'\n", "gateway.public_url", "must start with"
        )
        self.assertProblem("[gateway]\nrendezvous_timeout = 0\n", "gateway.rendezvous_timeout", "between")
        self.assertProblem("[[namespaces]]\nname = 'x'\n", "namespaces[0].hosts", "is required")
        self.assertProblem(
            '[[namespaces]]\nhosts = ["h:443"]\n', "namespaces[0].hosts", "without scheme, port"
        )
        self.assertProblem(hc + 'name = "a b"\n', "namespaces[0].hybrid_connections[0].name", "segment")
        self.assertProblem(hc + 'name = "$hc/x"\n', "namespaces[0].hybrid_connections[0].name", "")
        self.assertProblem(
            hc + 'name = "x"\nmax_listeners = 0\n',
            "namespaces[0].hybrid_connections[0].max_listeners",
            "between 1 and 1000",
        )
        self.assertProblem(
            hc + 'name = "x"\nmax_listeners = "5"\n',
            "namespaces[0].hybrid_connections[0].max_listeners",
            "must be an integer",
        )
        self.assertProblem(
            hc + 'name = "x"\nrequires_client_authorization = 1\n',
            "namespaces[0].hybrid_connections[0].requires_client_authorization",
            "true or false",
        )
        self.assertProblem(
            hc + 'name = "x"\n' + "[[namespaces.hybrid_connections]]\nname = 'X'\n",
            "namespaces[0].hybrid_connections[1].name",
            "already defined",
        )
        self.assertProblem(
            rule + 'name = "r"\nkey = "short"\nrights = ["Send"]\n',
            "namespaces[0].rules[0].key",
            "at least 16",
        )
        self.assertProblem(
            rule + 'name = "r"\nkey = "0123456789abcdef0"\nrights = ["Read"]\n',
            "namespaces[0].rules[0].rights",
            "unknown right",
        )
        self.assertProblem(
            rule + 'name = "r"\nkey = "0123456789abcdef0"\nrights = ["None"]\n',
            "namespaces[0].rules[0].rights",
            "unknown right",
        )
        self.assertProblem(
            rule + 'name = "r"\nkey = "0123456789abcdef0"\nrights = []\n',
            "namespaces[0].rules[0].rights",
            "non-empty",
        )
        self.assertProblem(ns + '[[namespaces]]\nhosts = ["H"]\n', "namespaces[1].hosts", "already belongs")

    def test_host_names(self) -> None:
        """
        A host that no request's Host could ever match is refused, naming it; IP literals are accepted.

        A request's host is compared as it came (lower case, no port, IPv6 without brackets): a wildcard
        pattern, a control character or a trailing dot would select this namespace for no request.
        """
        for host in (
            "*.example.org",
            "relay\\texample.org",
            "relay.example.org.",
            "ex\\u00e4mple.org",
            ".",
            "[::1",
        ):
            self.assertProblem(f'[[namespaces]]\nhosts = ["{host}"]\n', "namespaces[0].hosts", "")
        config = load_config(
            self.write('[[namespaces]]\nhosts = ["::1", "[FE80:0:0::1]", "10.0.0.1", "relay_1.internal"]\n')
        )
        self.assertEqual(
            config.namespaces[0].namespace.hosts, ("::1", "fe80::1", "10.0.0.1", "relay_1.internal")
        )

    def test_blank_state_dir(self) -> None:
        """An empty state_dir is refused, as --state-dir '' is; it was taken as no setting (the default)."""
        for blank in ('""', '"  "'):
            self.assertProblem(f"[gateway]\nstate_dir = {blank}\n", "gateway.state_dir", "must not be empty")
        self.assertEqual(load_config(self.write('[gateway]\nstate_dir = "st"\n')).state_dir, "st")

    def test_state_dir_in_the_home_directory(self) -> None:
        """C{~} in state_dir is the home directory, as in a shell; it made a directory named C{~}."""
        self.patch(os, "environ", {**os.environ, "HOME": "/home/relay"})
        config = load_config(self.write('[gateway]\nstate_dir = "~/state"\n'))
        self.assertEqual(config.state_dir, "/home/relay/state")

    def test_unreadable_and_not_toml(self) -> None:
        """A missing file and a syntax error are reported with the file name."""
        with self.assertRaises(ConfigError) as ctx:
            load_config("/nonexistent/relay.toml")
        self.assertIn("/nonexistent/relay.toml: cannot read the file", str(ctx.exception))
        with self.assertRaises(ConfigError) as ctx:
            load_config(self.write("[gateway\n"))
        self.assertIn("not valid TOML", str(ctx.exception))

    def test_nested_too_deeply(self) -> None:
        """An array nested thousands deep is a TOML error, not a RecursionError traceback."""
        with self.assertRaises(ConfigError) as ctx:
            load_config(self.write("a = " + "[" * 5000 + "]" * 5000 + "\n"))
        self.assertIn("not valid TOML: nested too deeply", str(ctx.exception))

    def test_failure_delay_within_its_maximum(self) -> None:
        """A first refusal delay above the maximum would be capped silently (to 0: no throttle at all)."""
        for gateway in (
            {"listener_failure_delay": 20},
            {"listener_failure_delay": 1, "listener_failure_max_delay": 0},
        ):
            with self.subTest(gateway=gateway):
                with self.assertRaises(ConfigError) as ctx:
                    parse_config({"gateway": gateway}, "f.toml")
                self.assertIn("gateway.listener_failure_max_delay", str(ctx.exception))
                self.assertIn("must be at least listener_failure_delay", str(ctx.exception))
        parse_config({"gateway": {"listener_failure_delay": 8, "listener_failure_max_delay": 8}}, "f.toml")

    def test_empty(self) -> None:
        """An empty document is valid and configures nothing."""
        config = parse_config({}, "x.toml")
        self.assertEqual(config.namespaces, ())

    def test_not_utf8(self) -> None:
        """A file that is not UTF-8 text is reported as not TOML, with its line, not as a decoding traceback."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"[gateway]\nadmin = 'tcp:1'\n\xff\xfe\n")
        with self.assertRaises(ConfigError) as ctx:
            load_config(path)
        self.assertEqual(str(ctx.exception), f"{path}: not valid TOML: not UTF-8 text (at line 3)")

    def test_directory(self) -> None:
        """A directory instead of a file is named as such."""
        path = self.mktemp()
        os.mkdir(path)
        with self.assertRaises(ConfigError) as ctx:
            load_config(path)
        self.assertIn(f"{path}: cannot read the file: Is a directory", str(ctx.exception))

    def test_duplicate_namespace_names(self) -> None:
        """
        Two namespaces may not share a name, given or taken from their first host.

        Entity tables are kept by namespace name, so the second would take over the first one's entities.
        """
        self.assertProblem(
            '[[namespaces]]\nname = "x"\nhosts = ["a"]\n[[namespaces]]\nname = "x"\nhosts = ["b"]\n',
            "namespaces[1].name",
            "already the name of namespaces[0]",
        )
        self.assertProblem(
            '[[namespaces]]\nhosts = ["a"]\n[[namespaces]]\nname = "a"\nhosts = ["b"]\n',
            "namespaces[1].name",
            "already the name of namespaces[0]",
        )
        self.assertProblem('[[namespaces]]\nname = " "\nhosts = ["a"]\n', "namespaces[0].name", "white space")

    def test_keys_and_names_fit_connection_strings(self) -> None:
        """
        A rule's name or key with white space at either end, a ';' or a control character is refused.

        Connection strings drop white space around values and split at ';': no client could sign with it.
        """
        rule = '[[namespaces]]\nhosts = ["h"]\n[[namespaces.rules]]\nrights = ["Send"]\n'
        good_key = 'key = "0123456789abcdef0"\n'
        for key, fragment in (
            (" 0123456789abcdef0", "white space"),
            ("0123456789abcdef0\\t", "white space"),
            ("                    ", "white space"),
            ("0123456789;abcdef0", "';'"),
            ("0123456789\\u0007abcdef0", "control characters"),
        ):
            self.assertProblem(rule + f'name = "r"\nkey = "{key}"\n', "namespaces[0].rules[0].key", fragment)
        for name in ("r ", "a;b", "a\\nb"):
            self.assertProblem(
                rule + f'name = "{name}"\n' + good_key, "namespaces[0].rules[0].name", "must not"
            )
        hc_rule = (
            '[[namespaces]]\nhosts = ["h"]\n[[namespaces.hybrid_connections]]\nname = "x"\n'
            '[[namespaces.hybrid_connections.rules]]\nname = "r"\nkey = " 0123456789abcdef0"\nrights = ["Send"]\n'
        )
        self.assertProblem(hc_rule, "namespaces[0].hybrid_connections[0].rules[0].key", "white space")
        config = load_config(self.write(rule + 'name = "Send Only"\nkey = "0123456789+/=abcdef"\n'))
        self.assertEqual(config.namespaces[0].namespace.rules[0].key, "0123456789+/=abcdef")

    def test_counts_are_integers(self) -> None:
        """Limits that count bytes or things take integers; a fraction is refused, not truncated."""
        for name in (
            "splice_buffer_bytes",
            "http_max_header_bytes",
            "metrics_max_entities",
            "trace_messages",
        ):
            self.assertProblem(f"[gateway]\n{name} = 20000.5\n", f"gateway.{name}", "must be an integer")
        self.assertProblem(
            '[gateway]\nrendezvous_timeout = "30"\n',
            "gateway.rendezvous_timeout",
            "must be a number, not str",
        )
        config = load_config(self.write("[gateway]\nsplice_buffer_bytes = 20000\nrendezvous_timeout = 2.5\n"))
        self.assertEqual(config.limits["splice_buffer_bytes"], 20000.0)
        self.assertEqual(config.limits["rendezvous_timeout"], 2.5)

    def test_public_url(self) -> None:
        """The file's public_url is checked as --public-url is, and reported with its key."""
        for url in (
            "https://",
            "https://x:99999",
            "https://x/?q",
            "https://x/#f",
            "https://user@x/",
            "http://x:0",
            "https://relay example.org/",
            "https://relay<x>.org/",
            "https://[::g]/",
        ):
            self.assertProblem(f'[gateway]\npublic_url = "{url}"\n', "gateway.public_url", url)
        self.assertEqual(
            load_config(self.write('[gateway]\npublic_url = "wss://relay.example:8443/base"\n')).public_url,
            "wss://relay.example:8443/base",
        )
        for url in (
            "http://[::1]:9080",
            "http://10.0.0.1",
            "https://relay_1.internal/",
            "HTTPS://relay.example",
        ):
            self.assertEqual(load_config(self.write(f'[gateway]\npublic_url = "{url}"\n')).public_url, url)
