"""Tests for the twistd plugin, its options and the service tree it builds."""

from __future__ import annotations

import datetime
import errno
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from relay.certs import ServerCertificate, issue_server_certificate
from relay.endpointcheck import split_endpoint
from relay.service import GatewayService
from relay.state import read_development_key
from relay.tap import FileProblem, Options, _exit_with, makeService

CONFIG = """
[gateway]
listen = ["tcp:7001:interface=127.0.0.1"]

[[namespaces]]
hosts = ["relay.example"]
  [[namespaces.rules]]
  name = "root"
  key = "0123456789abcdef0123"
  rights = ["Manage"]
"""


class PluginTests(SynchronousTestCase):
    """C{twistd relay} is discoverable and builds the gateway."""

    def test_discoverable(self) -> None:
        """The plugin is found by Twisted's plugin system under the name C{relay}."""
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("relay", makers)
        self.assertEqual(makers["relay"].module, "relay.tap")

    def options(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(["--state-dir", self.mktemp(), *argv])
        return options

    def test_default_tree(self) -> None:
        """With no options: one loopback TCP endpoint on 9080 and the development namespace."""
        reactor = MemoryReactorClock()
        service = makeService(self.options(), reactor=reactor)
        self.assertIsInstance(service, GatewayService)
        endpoints = [s for s in service if isinstance(s, StreamServerEndpointService)]
        self.assertEqual(len(endpoints), 1)
        service.startService()
        self.addCleanup(service.stopService)
        ((port, _, _, interface),) = reactor.tcpServers
        self.assertEqual((port, interface), (9080, "127.0.0.1"))
        (namespace,) = service.store.namespaces()
        self.assertEqual((namespace.hosts, namespace.auto_create), (("*",), True))
        self.assertEqual(namespace.rules[0].name, "RootManageSharedAccessKey")

    def test_repeatable_listen_and_config(self) -> None:
        """Each --listen adds an endpoint and replaces the file's list; the file's namespaces are used."""
        path = self.mktemp()
        Path(path).write_text(CONFIG)
        options = self.options("--config", path)
        self.assertEqual(options["listen"], ("tcp:7001:interface=127.0.0.1",))
        options = self.options("--config", path, "--listen", "tcp:7002", "-l", "tcp:7003")
        self.assertEqual(options["listen"], ("tcp:7002", "tcp:7003"))
        service = makeService(options, reactor=MemoryReactorClock())
        self.assertEqual(len([s for s in service if isinstance(s, StreamServerEndpointService)]), 2)
        (namespace,) = service.store.namespaces()
        self.assertEqual(namespace.hosts, ("relay.example",))
        self.assertIsNone(service.connection_string())

    def test_bad_config_is_a_usage_error(self) -> None:
        """A bad file stops start-up with the file, the key and the problem."""
        path = self.mktemp()
        Path(path).write_text("[gateway]\nrendezvous_timeout = -1\n")
        with self.assertRaises(UsageError) as ctx:
            self.options("--config", path)
        self.assertIn(f"{path}: gateway.rendezvous_timeout: must be between", str(ctx.exception))

    def test_bad_public_url(self) -> None:
        """A public URL that is not absolute http(s) or ws(s) is refused."""
        with self.assertRaises(UsageError):
            self.options("--public-url", "relay.example.org")

    def test_development_key_is_kept(self) -> None:
        """The development key is generated once (mode 0600) and reused by the next start."""
        state = self.mktemp()
        first = makeService(self.options("--state-dir", state), reactor=MemoryReactorClock())
        second = makeService(self.options("--state-dir", state), reactor=MemoryReactorClock())
        self.assertEqual(first.development_key, second.development_key)
        self.assertEqual(read_development_key(Path(state)), first.development_key)
        self.assertEqual(os.stat(Path(state) / "development-key").st_mode & 0o777, 0o600)

    def test_development_key_file_that_is_not_a_key(self) -> None:
        """A key file that is empty, blank, too short or holds a ';' stops the build and is left as it is."""
        for content in ("", " \n", "short\n", "abcdefgh;ijklmnop\n"):
            state = Path(self.mktemp())
            state.mkdir()
            (state / "development-key").write_text(content)
            with self.assertRaises(OSError) as ctx:
                makeService(self.options("--state-dir", str(state)), reactor=MemoryReactorClock())
            self.assertEqual(ctx.exception.errno, errno.EINVAL)
            self.assertIn("not a key", ctx.exception.strerror)
            self.assertEqual(ctx.exception.filename, str(state.absolute() / "development-key"))
            self.assertEqual((state / "development-key").read_text(), content)

    def test_exposed_development_key_is_warned_about(self) -> None:
        """A development key other users can read is logged as a warning when the gateway is built."""
        state = Path(self.mktemp())
        makeService(self.options("--state-dir", str(state)), reactor=MemoryReactorClock())
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        makeService(self.options("--state-dir", str(state)), reactor=MemoryReactorClock())
        self.assertEqual([e for e in events if "other users" in e.get("log_format", "")], [])
        os.chmod(state / "development-key", 0o604)
        makeService(self.options("--state-dir", str(state)), reactor=MemoryReactorClock())
        [warning] = [e for e in events if "other users" in e.get("log_format", "")]
        self.assertEqual((warning["log_level"], warning["exposed"]), (LogLevel.warn, "mode 0604"))

    def test_public_url_from_the_first_port(self) -> None:
        """Without --public-url, rendezvous addresses come from the first tcp, tcp6 or ssl endpoint."""
        socket_path = os.path.abspath(self.mktemp()) + ".sock"
        options = self.options("--listen", f"unix:{socket_path}", "--listen", "tcp:7004:interface=127.0.0.1")
        service = makeService(options, reactor=MemoryReactorClock())
        service.startService()
        self.addCleanup(service.stopService)
        self.successResultOf(service.ready)
        self.assertEqual(
            (service.public_url, service.hybrid.websocket_base),
            ("http://localhost:7004", "ws://localhost:7004"),
        )

    def test_start_failure_is_one_log_line(self) -> None:
        """A start that fails once the ports are bound is one error line in the log, and fails L{ready}."""
        state = Path(self.mktemp())
        service = makeService(self.options("--state-dir", str(state)), reactor=MemoryReactorClock())

        def broken() -> None:
            raise RuntimeError("a bug after the ports were bound")

        service._record_endpoint = broken  # type: ignore[method-assign]
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service.startService()
        self.addCleanup(service.stopService)
        self.failureResultOf(service.ready, RuntimeError)
        [line] = [formatEvent(e) for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(
            line, "the gateway did not finish starting: RuntimeError: a bug after the ports were bound"
        )

    def test_daemon_told_after_its_pid_file_is_gone(self) -> None:
        """
        A daemon that cannot start removes its pid file before it tells twistd's waiting parent.

        The parent ends as soon as it reads the status pipe; whoever started it may look for the pid file
        at once, and found it when the daemon told first (seen in CI).
        """
        pidfile = Path(self.mktemp())
        pidfile.write_text(str(os.getpid()))
        read_end, write_end = os.pipe()
        self.addCleanup(os.close, read_end)
        seen_at_tell: list[bool] = []
        real_write = os.write

        def write(fd: int, data: bytes) -> int:
            if fd == write_end:
                seen_at_tell.append(pidfile.exists())
            return real_write(fd, data)

        self.patch(os, "write", write)
        self.patch(sys, "stderr", sys.__stderr__)
        with self.assertRaises(SystemExit) as raised:
            _exit_with("cannot listen on tcp:1: taken", {"pidfile": str(pidfile), "statusPipe": write_end})
        self.assertEqual(str(raised.exception), "twistd relay: cannot listen on tcp:1: taken")
        self.assertEqual(seen_at_tell, [False])
        self.assertEqual(os.read(read_end, 200), b"1 cannot listen on tcp:1: taken")


class TwistdTests(SynchronousTestCase):
    """The installed C{twistd} command (CI installs the project in editable compat mode)."""

    def run_twistd(self, *args: str) -> subprocess.CompletedProcess[str]:
        twistd = [sys.executable, "-m", "twisted"]
        return subprocess.run(
            [*twistd, *args], capture_output=True, text=True, timeout=60, cwd=self.mktemp_dir()
        )

    def mktemp_dir(self) -> str:
        path = self.mktemp()
        os.makedirs(path)
        return path

    def test_help_lists_relay(self) -> None:
        """C{twistd --help} lists the relay plugin."""
        result = subprocess.run(
            ["twistd", "--help"], capture_output=True, text=True, timeout=60, cwd=self.mktemp_dir()
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("relay", result.stdout.split("Commands:")[1])

    def twistd_relay(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["twistd", "-n", "relay", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.mktemp_dir(),
        )

    def assertOneLine(self, result: subprocess.CompletedProcess[str], status: int, text: str) -> None:
        """Exit status, nothing on stdout, and one line on stderr that says what is wrong."""
        self.assertEqual((result.returncode, result.stdout), (status, ""), result.stdout + result.stderr)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertTrue(result.stderr.startswith("twistd relay: "), result.stderr)
        self.assertIn(text, result.stderr)

    def test_mistakes_are_one_line_on_stderr(self) -> None:
        """
        A usage error is one line on stderr and status 2; a file that cannot be used, status 1.

        twistd itself prints its whole usage text and the message on stdout, with status 1 for both.
        """
        self.assertOneLine(self.twistd_relay("--bogus"), 2, "--bogus")
        self.assertOneLine(self.twistd_relay("--listen", "garbage"), 2, "--listen garbage: cannot be used")
        self.assertOneLine(self.twistd_relay("--listen", "tcp:99999"), 2, "port '99999'")
        self.assertOneLine(self.twistd_relay("--public-url", "relay.example.org"), 2, "--public-url:")
        bad = os.path.abspath(self.mktemp())
        Path(bad).write_text("[gateway\n")
        self.assertOneLine(self.twistd_relay("--config", bad), 1, f"{bad}: not valid TOML: ")
        self.assertIn("line 1", self.twistd_relay("--config", bad).stderr)
        missing = os.path.abspath(self.mktemp())
        self.assertOneLine(
            self.twistd_relay("--listen", f"ssl:0:privateKey={missing}"),
            1,
            f"privateKey {missing}: cannot read",
        )

    def test_port_taken(self) -> None:
        """
        A port that cannot be bound (taken here): one line naming the endpoint, status 1, no pid file left.

        It is found only when twistd binds the ports, after it began logging: the line also goes to the
        log (stdout with C{-n}). Before, twistd logged a traceback.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        state = os.path.abspath(self.mktemp())
        for option in ("--listen", "--admin"):
            with self.subTest(option=option):
                args = [option, f"tcp:{port}:interface=127.0.0.1", "--state-dir", state]
                if option == "--admin":
                    args += ["--listen", "tcp:0:interface=127.0.0.1"]
                cwd = self.mktemp_dir()
                result = subprocess.run(
                    ["twistd", "-n", "relay", *args], capture_output=True, text=True, timeout=60, cwd=cwd
                )
                self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
                self.assertEqual(
                    result.stderr.splitlines(),
                    [
                        f"twistd relay: cannot listen on tcp:{port}:interface=127.0.0.1"
                        + (" (admin)" if option == "--admin" else "")
                        + ": Address already in use"
                    ],
                )
                self.assertNotIn("Traceback", result.stdout)
                self.assertFalse(os.path.exists(os.path.join(cwd, "twistd.pid")))

    def test_port_taken_as_a_daemon(self) -> None:
        """
        Started as a daemon (no C{-n}), a port that cannot be bound ends twistd too, with status 1.

        The daemon tells twistd's waiting parent through its status pipe, which the parent prints; the
        daemon's exit alone does not end the parent, which keeps the pipe's write end open itself: it
        waited for ever.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cwd = os.path.abspath(self.mktemp_dir())
        args = ["--listen", f"tcp:{port}:interface=127.0.0.1", "--state-dir", os.path.join(cwd, "state")]
        try:
            result = subprocess.run(
                ["twistd", "--logfile", "relay.log", "relay", *args],
                capture_output=True,
                text=True,
                timeout=20,
                cwd=cwd,
            )
        except subprocess.TimeoutExpired:
            self.fail("twistd did not end")
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn(
            f"cannot listen on tcp:{port}:interface=127.0.0.1: Address already in use", result.stderr
        )
        self.assertFalse(os.path.exists(os.path.join(cwd, "twistd.pid")))

    def test_unix_socket_in_a_missing_directory(self) -> None:
        """A UNIX socket whose directory does not exist: one line on stderr, status 1 (not a traceback)."""
        socket_path = os.path.join(os.path.abspath(self.mktemp()), "missing", "relay.sock")
        state = os.path.abspath(self.mktemp())
        public = ("--public-url", "http://relay.example")  # a UNIX socket has no address to derive it from
        result = subprocess.run(
            ["twistd", "-n", "relay", "--listen", f"unix:{socket_path}", *public, "--state-dir", state],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.mktemp_dir(),
        )
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertEqual(
            result.stderr.splitlines(),
            [f"twistd relay: cannot listen on unix:{socket_path}: No such file or directory"],
        )
        self.assertNotIn("Traceback", result.stdout)

    def test_unusable_state_dir(self) -> None:
        """A state directory that is a file, or a key that is a directory or empty: one line, status 1."""
        file = os.path.abspath(self.mktemp())
        Path(file).write_text("x")
        self.assertOneLine(
            self.twistd_relay("--state-dir", file), 1, f"state directory {file}: not a directory"
        )
        state = Path(os.path.abspath(self.mktemp()))
        (state / "development-key").mkdir(parents=True)
        self.assertOneLine(
            self.twistd_relay("--state-dir", str(state)),
            1,
            f"cannot use {state / 'development-key'}: Is a dir",
        )
        empty = Path(os.path.abspath(self.mktemp()))
        empty.mkdir()
        (empty / "development-key").write_text("")
        self.assertOneLine(
            self.twistd_relay("--state-dir", str(empty)),
            1,
            f"cannot use {empty / 'development-key'}: not a key",
        )

    def test_bad_config_exits_non_zero(self) -> None:
        """C{twistd relay --config bad.toml} exits with a non-zero status and names file and key."""
        bad = os.path.abspath(self.mktemp())
        Path(bad).write_text(
            '[[namespaces]]\nhosts = ["h"]\n[[namespaces.hybrid_connections]]\nname = "a b"\n'
        )
        result = subprocess.run(
            ["twistd", "-n", "relay", "--config", bad],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.mktemp_dir(),
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"{bad}: namespaces[0].hybrid_connections[0].name", result.stdout + result.stderr)


def ssl_endpoint(cert: ServerCertificate, *, key: Path | None = None, chain: Path | None = None) -> str:
    """An C{ssl:} endpoint string on a free port for a certificate (or another key, or another chain)."""
    endpoint = f"ssl:0:privateKey={key or cert.key_path}:certKey={cert.cert_path}"
    return endpoint + (f":extraCertChain={chain}" if chain else "")


class EndpointCheckTests(SynchronousTestCase):
    """Every endpoint is checked before anything starts: syntax, port, and the files of ssl: endpoints."""

    def options(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(["--state-dir", self.mktemp(), *argv])
        return options

    def assertUsage(self, argv: tuple[str, ...], text: str, *, files: bool) -> None:
        with self.assertRaises(UsageError) as ctx:
            self.options(*argv)
        self.assertIn(text, str(ctx.exception))
        self.assertEqual(isinstance(ctx.exception, FileProblem), files, str(ctx.exception))

    def test_split_endpoint(self) -> None:
        """Endpoint strings split as Twisted splits them: ':' fields, the first '=' names, a backslash escapes."""
        self.assertEqual(
            split_endpoint("ssl:443:privateKey=C\\:/k\\\\.pem:certKey=a=b"),
            (["ssl", "443"], {"privateKey": "C:/k\\.pem", "certKey": "a=b"}),
        )

    def test_endpoint_syntax(self) -> None:
        """An unknown type, a port that is not 0-65535 or an unknown argument is a usage error, not a traceback."""
        self.assertUsage(
            ("--listen", "garbage"), "--listen garbage: cannot be used: Unknown endpoint type", files=False
        )
        for port in ("notaport", "-5", "99999"):
            self.assertUsage(
                ("--listen", f"tcp:{port}"), f"port {port!r} is not a number from 0", files=False
            )
        self.assertUsage(("--listen", "tcp:80:colour=blue"), "colour", files=False)
        for typeless in ("", "port=80", ":80"):
            self.assertUsage(("--listen", typeless), "has no endpoint type", files=False)
        self.assertUsage(("--admin", "tcp:65536"), "--admin tcp:65536: port", files=False)
        for ipv6 in ("tcp:80:interface=::1", "tcp6:80:interface=fe80::1%eth0"):  # Twisted needs \:
            self.assertUsage(("--listen", ipv6), "escape each ':' of an IPv6 address", files=False)
        self.assertEqual(
            self.options("--listen", "tcp6:0:interface=\\:\\:1")["listen"], ("tcp6:0:interface=\\:\\:1",)
        )
        self.assertEqual(
            self.options("--listen", "tcp:0", "--admin", "unix:/tmp/x.sock")["listen"], ("tcp:0",)
        )

    def test_file_endpoints_name_file_and_key(self) -> None:
        """Endpoints from the file are checked too, and reported with the file and the key (status 1)."""
        path = self.mktemp()
        Path(path).write_text('[gateway]\nlisten = ["tcp:9080", "tcp:99999"]\nadmin = "tcp:1"\n')
        self.assertUsage(("--config", path), f"{path}: gateway.listen[1]: tcp:99999: port", files=True)
        Path(path).write_text('[gateway]\nadmin = "nonsense:1"\n')
        self.assertUsage(("--config", path), f"{path}: gateway.admin: nonsense:1:", files=True)
        # --listen replaces the file's list, so its entries are not the ones served
        self.assertEqual(self.options("--config", path, "--admin", "tcp:9")["admin"], "tcp:9")

    def test_tls_files(self) -> None:
        """Missing, unreadable, non-PEM, encrypted, mismatched, expired and future certificates and keys."""
        cert = issue_server_certificate(self.mktemp(), ["localhost"])
        other = issue_server_certificate(self.mktemp(), ["localhost"])
        self.assertEqual(
            self.options("--listen", ssl_endpoint(cert, chain=cert.ca_path))["listen"][0][:5], "ssl:0"
        )
        self.options("--listen", f"ssl:0:privateKey={cert.combined_path}")
        junk = Path(self.mktemp())
        junk.write_text("not PEM\n")
        der = Path(self.mktemp())
        der.write_bytes(
            serialization.load_pem_private_key(cert.key_path.read_bytes(), None).private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        encrypted = Path(self.mktemp())
        encrypted.write_bytes(
            serialization.load_pem_private_key(cert.key_path.read_bytes(), None).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
        directory = Path(self.mktemp())
        directory.mkdir()
        missing = Path(self.mktemp())
        cases = [
            (ssl_endpoint(cert, key=missing), f"privateKey {missing}: cannot read it: No such file"),
            (ssl_endpoint(cert, key=directory), f"privateKey {directory}: cannot read it: Is a directory"),
            (ssl_endpoint(cert, key=junk), f"privateKey {junk}: no PEM private key in it"),
            (ssl_endpoint(cert, key=der), f"privateKey {der}: no PEM private key in it"),
            (ssl_endpoint(cert, key=encrypted), "the key is encrypted"),
            (ssl_endpoint(cert, key=other.key_path), "do not belong together"),
            (f"ssl:0:privateKey={cert.key_path}:certKey={junk}", f"certKey {junk}: no PEM certificate in it"),
            (ssl_endpoint(cert, chain=junk), f"extraCertChain {junk}: no readable PEM certificate"),
            ("ssl:0:privateKey=" + str(missing), f"privateKey {missing}: cannot read it"),
        ]
        for endpoint, text in cases:
            self.assertUsage(("--listen", endpoint), text, files=True)
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
        expired = issue_server_certificate(self.mktemp(), ["localhost"], days=1, now=past)
        self.assertUsage(("--listen", ssl_endpoint(expired)), "the certificate expired on", files=True)
        future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
        early = issue_server_certificate(self.mktemp(), ["localhost"], now=future)
        self.assertUsage(("--admin", ssl_endpoint(early)), "the certificate is not valid before", files=True)

    def test_chain_file_twisted_cannot_read(self) -> None:
        """An C{extraCertChain} file with CRLF line ends or non-ASCII text is a file problem naming it."""
        cert = issue_server_certificate(self.mktemp(), ["localhost"])
        lf = cert.ca_path.read_bytes()
        crlf = lf.replace(b"\n", b"\r\n")
        cases = [
            (crlf, "has CRLF line ends, which Twisted cannot read; convert it to LF"),
            (lf + crlf, "has CRLF line ends"),  # Twisted dropped the second without a word
            ("# Issuer: Főtanúsítvány\n".encode() + lf, "holds characters that are not ASCII"),
        ]
        for content, text in cases:
            chain = Path(self.mktemp())
            chain.write_bytes(content)
            self.assertUsage(
                ("--listen", ssl_endpoint(cert, chain=chain)), f"extraCertChain {chain}: {text}", files=True
            )

    def test_dh_parameters_that_openssl_refuses(self) -> None:
        """A C{dhParameters} file OpenSSL cannot use stops the start (status 1), naming the file."""
        cert = issue_server_certificate(self.mktemp(), ["localhost"])
        junk = Path(self.mktemp())
        junk.write_text("not PEM\n")
        self.assertUsage(
            ("--listen", f"{ssl_endpoint(cert)}:dhParameters={junk}"),
            f"dhParameters {junk}: OpenSSL cannot use it: no start line",
            files=True,
        )

    def test_public_url_needed_without_a_port(self) -> None:
        """Only UNIX sockets: --public-url (or gateway.public_url) is needed, as no address can be derived."""
        unix = ("--listen", f"unix:{os.path.abspath(self.mktemp())}")
        self.assertUsage(unix, "--public-url: needed, as no endpoint is tcp, tcp6 or ssl", files=False)
        self.assertEqual(
            self.options(*unix, "--public-url", "http://relay.example")["settings"].public_url,
            "http://relay.example",
        )
        path = self.mktemp()
        Path(path).write_text('[gateway]\npublic_url = "http://relay.example"\n')
        self.assertEqual(self.options(*unix, "--config", path)["settings"].public_url, "http://relay.example")

    def test_public_url(self) -> None:
        """--public-url needs a scheme, a host and a valid port; no query, fragment or user name."""
        for bad in ("https://", "https://x:99999", "https://x/?q=1", "https://u@x/", "ftp://x/"):
            self.assertUsage(("--public-url", bad), "--public-url:", files=False)
        self.assertEqual(
            self.options("--public-url", "https://relay.example.org:8443/base")["settings"].public_url,
            "https://relay.example.org:8443/base",
        )
