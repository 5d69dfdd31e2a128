"""Tests for the C{relay} command."""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from relay import auth
from relay.auth import Grant, Rights, SharedAccessRule, validate_token
from relay.cli import main
from relay.connstr import parse_connection_string
from relay.state import development_key, read_endpoint, write_endpoint


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

    def test_token_sub_second_ttl(self) -> None:
        """C{relay token --ttl 0.5} prints a token that is valid when printed, not one already expired."""
        now = 1_700_000_000.2
        self.patch(auth.time, "time", lambda: now)
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        key = "k" * 20
        status = main(["token", "--uri", "http://h/x", "--key-name", "root", "--key", key, "--ttl", "0.5"])
        self.assertEqual(status, 0)
        decision = validate_token(
            out.getvalue().strip(),
            rules=(SharedAccessRule("root", key, Rights.SEND),),
            namespace_hosts=("h",),
            entity_path="x",
            needed=Rights.SEND,
            now=now,
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
        """A command line without what the command needs (a key, a name) is a usage error: exit 2, stderr."""
        missing = relay("token", "--uri", "http://h/x")
        self.assertEqual(missing.returncode, 2)
        self.assertEqual(missing.stdout, "")
        self.assertIn("a key is needed", missing.stderr)
        self.assertIn("usage: relay token", missing.stderr)
        string = "Endpoint=sb://127.0.0.1:9/;SharedAccessKeyName=a;SharedAccessKey=b"
        for command in (
            ("expose", "http://127.0.0.1:9", "--connection-string", string),
            ("soap-bridge", "--url", "http://127.0.0.1:9/", "--connection-string", string),
        ):
            nameless = relay(*command)
            self.assertEqual(nameless.returncode, 2, nameless.stderr)
            self.assertIn("give --name, or EntityPath in the connection string", nameless.stderr)
        self.assertEqual(relay("expose", "http://127.0.0.1:9").returncode, 2)  # no connection string
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

    def test_development_key_that_is_not_a_key(self) -> None:
        """A key file that is not ASCII, empty or unusable is one line on stderr (exit 1), not a traceback."""
        for content in (b"\xff\xfekey\n", b"", b"abcdefgh;ijklmnop\n"):
            state = Path(self.mktemp())
            state.mkdir()
            (state / "development-key").write_bytes(content)
            result = relay("connection-string", "--state-dir", str(state))
            self.assertEqual(result.returncode, 1)
            self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
            self.assertIn("not a key", result.stderr)

    def test_development_key_made_once(self) -> None:
        """Another process that makes the key first (between our look and our write) wins: one key on disk."""
        import relay.state

        state = Path(self.mktemp())
        state.mkdir()

        theirs = "theirs-" + "k" * 37

        def another_process_first() -> str:
            (state / "development-key").write_text(theirs + "\n")
            return "ours-" + "k" * 39

        self.patch(relay.state, "generate_key", another_process_first)
        self.assertEqual(development_key(state), theirs)
        self.assertEqual((state / "development-key").read_text(), theirs + "\n")
        self.assertEqual([p.name for p in state.iterdir()], ["development-key"])

    def test_development_key_is_the_one_on_disk(self) -> None:
        """A key file another process left empty is an error, not a key of ours that no file holds."""
        import relay.state

        state = Path(self.mktemp())
        state.mkdir()

        def another_process_first() -> str:
            (state / "development-key").write_text("")
            return "ours-" + "k" * 39

        self.patch(relay.state, "generate_key", another_process_first)
        self.assertRaises(OSError, development_key, state)
        self.assertEqual([p.name for p in state.iterdir()], ["development-key"])

    def test_endpoint_recorded_by_two_gateways_at_once(self) -> None:
        """Two gateways on one state directory recording their endpoints at once both succeed, whole."""
        state = Path(self.mktemp())
        state.mkdir()
        real_replace = os.replace
        others = ["sb://other:9081/"]

        def other_gateway_in_between(source: str, target: str) -> None:
            if others:
                write_endpoint(state, others.pop(), True)
            real_replace(source, target)

        self.patch(os, "replace", other_gateway_in_between)
        write_endpoint(state, "sb://mine:9080/", False)
        self.assertEqual(read_endpoint(state), ("sb://mine:9080/", False))
        self.assertEqual([p.name for p in state.iterdir()], ["gateway.json"])

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

    def test_cert_command_line_is_accepted(self) -> None:
        """The lines C{relay cert} prints work as printed: twistd takes its endpoint and a dialable public URL."""
        from relay.tap import Options

        cases = [
            (["::1"], "https://[::1]"),
            (["127.0.0.1", "relay.example"], "https://relay.example"),
            (["*.example.org", "10.0.0.1"], "https://10.0.0.1"),
        ]
        for hosts, public_url in cases:
            with self.subTest(hosts=hosts):
                directory = Path(self.mktemp()).absolute() / "it's here"
                result = relay("cert", *(a for h in hosts for a in ("--host", h)), "--dir", str(directory))
                self.assertEqual(result.returncode, 0, result.stderr)
                [line] = [line for line in result.stdout.splitlines() if "twistd -n relay" in line]
                [export] = [line for line in result.stdout.splitlines() if "export " in line]
                self.assertEqual(shlex.split(export)[1], f"NODE_EXTRA_CA_CERTS={directory / 'ca.pem'}")
                argv = shlex.split(line)
                self.assertEqual(argv[:3], ["twistd", "-n", "relay"])
                options = Options()
                options.parseOptions([*argv[3:], "--state-dir", self.mktemp()])
                self.assertEqual(options["settings"].public_url, public_url)

    def test_cert_warns_about_an_exposed_ca_key(self) -> None:
        """A CA key other users can read is named on stderr; the certificate is still issued (status 0)."""
        directory = self.mktemp()
        self.assertEqual(relay("cert", "--host", "localhost", "--dir", directory).stderr, "")
        os.chmod(Path(directory) / "ca-key.pem", 0o640)
        result = relay("cert", "--host", "localhost", "--dir", directory)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("relay cert: warning: the development CA key", result.stderr)
        self.assertIn("(mode 0640)", result.stderr)
        self.assertIn("server certificate:", result.stdout)


CONNECTION_STRING = "Endpoint=sb://127.0.0.1:1/;SharedAccessKeyName=a;SharedAccessKey=bbbbbbbbbbbbbbbbbbbbb"


class OptionValueTests(SynchronousTestCase):
    """Every option value is checked: a usage error (2) or a failure (1), one message, never a traceback."""

    def assertRefused(self, result: subprocess.CompletedProcess[str], status: int, text: str) -> None:
        self.assertEqual(result.returncode, status, result.stderr)
        self.assertEqual(result.stdout, "")
        self.assertNotIn("Traceback", result.stderr)
        self.assertIn(text, result.stderr)

    def test_token_ttl(self) -> None:
        """C{--ttl} takes more than zero and at most 100 years of seconds; NaN and infinity are refused."""
        for bad in ("nan", "inf", "-5", "0", "1e300", "soon"):
            result = relay("token", "--uri", "http://h/x", "--key-name", "a", "--key", "b", "--ttl", bad)
            self.assertRefused(result, 2, "argument --ttl")

    def test_token_uri(self) -> None:
        """C{--uri} must name a host; an empty or spaced resource would sign a token nobody accepts."""
        for bad in ("", "not a uri", "http:///x"):
            result = relay("token", "--uri", bad, "--key-name", "a", "--key", "b")
            self.assertRefused(result, 2, "argument --uri")
        self.assertEqual(
            relay("token", "--uri", "relay.example/x", "--key-name", "a", "--key", "b").returncode, 0
        )

    def test_connection_string_state_dir_unusable(self) -> None:
        """A state directory that is a file, or a key that is a directory, is one line and status 1."""
        file = Path(self.mktemp())
        file.write_text("x")
        self.assertRefused(relay("connection-string", "--state-dir", str(file)), 1, str(file))
        state = Path(self.mktemp())
        (state / "development-key").mkdir(parents=True)
        self.assertRefused(relay("connection-string", "--state-dir", str(state)), 1, "development key")
        state = Path(self.mktemp())
        development_key(state)
        (state / "gateway.json").mkdir()  # the recorded endpoint cannot be read
        refused = relay("connection-string", "--state-dir", str(state))
        self.assertRefused(refused, 1, str(state / "gateway.json"))
        self.assertIn("--endpoint", refused.stderr)
        self.assertEqual(
            relay("connection-string", "--state-dir", str(state), "--endpoint", "sb://h/").returncode, 0
        )
        (state / "gateway.json").rmdir()  # none recorded (the gateway could not write it, or never listened)
        refused = relay("connection-string", "--state-dir", str(state))
        self.assertRefused(refused, 1, f"no endpoint recorded in {state / 'gateway.json'}")
        self.assertIn("--endpoint", refused.stderr)

    def test_connection_string_values(self) -> None:
        """
        An endpoint or entity that would break the printed string, or a lone --tls, is a usage error.

        A connection string given as the endpoint is refused without showing its key.
        """
        state = Path(self.mktemp())
        development_key(state)
        write_endpoint(state, "sb://127.0.0.1:9999/", True)
        base = ("connection-string", "--state-dir", str(state))
        self.assertRefused(relay(*base, "--endpoint", "garbage"), 2, "argument --endpoint")
        pasted = relay(*base, "--endpoint", "sb://h/;SharedAccessKey=s3cretKey")  # a whole connection string
        self.assertRefused(pasted, 2, "argument --endpoint")
        self.assertNotIn("s3cretKey", pasted.stderr)
        self.assertRefused(relay(*base, "--entity", "a;b"), 2, "argument --entity")
        self.assertRefused(relay(*base, "--tls"), 2, "--tls needs --endpoint")
        good = relay(*base, "--endpoint", "sb://relay.example/", "--tls", "--entity", "team/app")
        cs = parse_connection_string(good.stdout.strip())
        self.assertEqual((cs.endpoint, cs.plain, cs.entity_path), ("sb://relay.example/", False, "team/app"))

    def test_expose_ca_not_pem(self) -> None:
        """C{relay expose --ca} with a file that holds no PEM certificate says so (status 1)."""
        ca = Path(self.mktemp())
        ca.write_text("not a certificate\n")
        result = relay(
            "expose",
            "http://127.0.0.1:9",
            "--name",
            "x",
            "--connection-string",
            CONNECTION_STRING,
            "--ca",
            str(ca),
        )
        self.assertRefused(result, 1, f"cannot use --ca {ca}: no PEM certificate in it")

    def test_soap_bridge_values(self) -> None:
        """C{relay soap-bridge}: the request timeout is more than zero seconds, the URLs are http(s)."""
        base = ("soap-bridge", "--connection-string", CONNECTION_STRING, "--name", "x")
        for bad in ("-3", "0", "nan", "never"):
            result = relay(*base, "--url", "http://127.0.0.1:9/", "--request-timeout", bad)
            self.assertRefused(result, 2, "argument --request-timeout")
        self.assertRefused(relay(*base, "--url", "notaurl"), 2, "argument --url")
        for option in ("--url", "--wsdl-url"):  # the password was echoed in an "invalid hostname" error
            result = relay(*base, "--url", "http://127.0.0.1:9/", option, "http://me:s3cret-pw@127.0.0.1:9/")
            self.assertRefused(result, 2, f"argument {option}: must not carry a user name or password")
            self.assertNotIn("s3cret-pw", result.stderr)
        self.assertRefused(
            relay(*base, "--url", "http://127.0.0.1:9/", "--wsdl-url", "ftp://x/"), 2, "argument --wsdl-url"
        )
        ca = Path(self.mktemp())
        ca.write_text("not a certificate\n")
        for option in ("--ca", "--backend-ca"):
            result = relay(*base, "--url", "https://127.0.0.1:9/", option, str(ca))
            self.assertRefused(result, 1, f"cannot use {option} {ca}: no PEM certificate in it")

    def test_soap_bridge_max_message_bytes(self) -> None:
        """
        C{--max-message-bytes}: the largest answer the bridge takes from the service, for names allowed more.

        The bridge took at most 4 MiB (the default limit) from the service whatever the name allowed (up
        to 64 MiB), with no way to raise it.
        """
        import bindings.bridge

        bridges: list[bindings.bridge.SoapBridge] = []
        self.patch(bindings.bridge, "run_bridge", bridges.append)
        base = ["soap-bridge", "--url", "http://127.0.0.1:9/", "--connection-string", CONNECTION_STRING]
        self.assertEqual(main([*base, "--name", "x"]), 0)
        self.assertEqual(main([*base, "--name", "x", "--max-message-bytes", "16777216"]), 0)
        self.assertEqual([b.max_message_bytes for b in bridges], [4 * 1024 * 1024, 16 * 1024 * 1024])
        for bad in ("0", "67108865", "lots"):
            result = relay(*base, "--name", "x", "--max-message-bytes", bad)
            self.assertRefused(result, 2, "argument --max-message-bytes")

    def test_soap_bridge_connection_string_from_the_environment(self) -> None:
        """
        The key may stay out of the command line (where C{ps} shows it to every user): C{RELAY_CONNECTION_STRING}.

        C{--connection-string} was required, unlike expose's.
        """
        import bindings.bridge

        bridges: list[bindings.bridge.SoapBridge] = []
        self.patch(bindings.bridge, "run_bridge", bridges.append)
        self.patch(os, "environ", {**os.environ, "RELAY_CONNECTION_STRING": CONNECTION_STRING})
        self.assertEqual(main(["soap-bridge", "--url", "http://127.0.0.1:9/", "--name", "x"]), 0)
        self.assertEqual(bridges[0].address.path, "x")
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != "RELAY_CONNECTION_STRING"})
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit) as exited:
            main(["soap-bridge", "--url", "http://127.0.0.1:9/", "--name", "x"])
        self.assertEqual(exited.exception.code, 2)
        self.assertIn("--connection-string or RELAY_CONNECTION_STRING", err.getvalue())

    def test_soap_bridge_stdout_stays_empty(self) -> None:
        """Nothing was asked of soap-bridge's stdout: stopping does not print there."""
        import bindings.bridge

        self.patch(bindings.bridge, "run_bridge", lambda bridge: None)
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        status = main(
            [
                "soap-bridge",
                "--url",
                "http://127.0.0.1:9/",
                "--connection-string",
                CONNECTION_STRING,
                "--name",
                "x",
            ]
        )
        self.assertEqual((status, out.getvalue()), (0, ""))
