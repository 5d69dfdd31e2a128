"""Tests for the twistd plugin, its options and the service tree it builds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from relay.service import GatewayService
from relay.state import read_development_key
from relay.tap import Options, makeService

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
