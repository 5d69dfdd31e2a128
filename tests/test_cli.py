"""Tests for the C{relay} command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from relay.auth import Grant, Rights, SharedAccessRule, validate_token
from relay.cli import main
from relay.connstr import parse_connection_string
from relay.state import development_key, write_endpoint


def relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args], capture_output=True, text=True, timeout=60
    )


class CommandTests(SynchronousTestCase):
    """Results on stdout, errors on stderr, exit status 0/1/2."""

    def test_token(self) -> None:
        """C{relay token} prints a token the gateway accepts."""
        result = relay(
            "token",
            "--uri",
            "http://relay.example/hyco",
            "--key-name",
            "root",
            "--key",
            "k" * 20,
            "--ttl",
            "60",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        token = result.stdout.strip()
        decision = validate_token(
            token,
            rules=(SharedAccessRule("root", "k" * 20, Rights.SEND),),
            namespace_hosts=("relay.example",),
            entity_path="hyco",
            needed=Rights.SEND,
            now=__import__("time").time(),
        )
        self.assertIsInstance(decision, Grant)

    def test_token_from_connection_string(self) -> None:
        """Key name and key can come from a connection string."""
        result = relay(
            "token",
            "--uri",
            "http://h/x",
            "--connection-string",
            "Endpoint=sb://h/;SharedAccessKeyName=a;SharedAccessKey=b",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("skn=a", result.stdout)

    def test_errors(self) -> None:
        """Missing keys exit 1 with a message on stderr; usage errors exit 2."""
        missing = relay("token", "--uri", "http://h/x")
        self.assertEqual(missing.returncode, 1)
        self.assertEqual(missing.stdout, "")
        self.assertIn("a key is needed", missing.stderr)
        self.assertEqual(relay("token").returncode, 2)
        self.assertEqual(relay("frobnicate").returncode, 2)
        self.assertEqual(relay("--help").returncode, 0)

    def test_expose_timeout_is_seconds(self) -> None:
        """C{relay expose --timeout} takes zero or more seconds; anything else is a usage error."""
        for bad in ("-1", "soon", "nan", "inf"):
            refused = relay("expose", "http://127.0.0.1:9", "--name", "x", "--timeout", bad)
            self.assertEqual(refused.returncode, 2, bad)
            self.assertIn("--timeout", refused.stderr)
        self.assertIn("--timeout SECONDS", relay("expose", "--help").stdout)

    def test_connection_string(self) -> None:
        """C{relay connection-string} prints the development key with the last endpoint the gateway wrote."""
        state = Path(self.mktemp())
        missing = relay("connection-string", "--state-dir", str(state))
        self.assertEqual(missing.returncode, 1)
        self.assertIn("twistd -n relay", missing.stderr)
        key = development_key(state)
        write_endpoint(state, "sb://127.0.0.1:9999/", True)
        result = relay("connection-string", "--state-dir", str(state), "--entity", "hyco")
        cs = parse_connection_string(result.stdout.strip())
        self.assertEqual(
            (cs.endpoint, cs.key, cs.plain, cs.entity_path), ("sb://127.0.0.1:9999/", key, True, "hyco")
        )

    def test_key(self) -> None:
        """C{relay key} prints 256 random bits in base64, different each time."""
        first, second = relay("key").stdout.strip(), relay("key").stdout.strip()
        self.assertEqual(len(first), 44)
        self.assertNotEqual(first, second)

    def test_cert(self) -> None:
        """C{relay cert} writes a CA and a certificate and says how to use them."""
        directory = self.mktemp()
        self.assertEqual(main(["cert", "--host", "localhost", "--dir", directory]), 0)
        self.assertTrue((Path(directory) / "ca.pem").exists())
        self.assertEqual(main(["cert", "--host", "bad host!", "--dir", directory]), 1)
