"""The bindings wired into C{twistd relay} and the C{relay soap-bridge} command line."""

from __future__ import annotations

import textwrap

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from bindings.gateway import BindingsGateway
from relay.cli import build_parser
from relay.tap import Options, makeService

CONFIG = """
[gateway]
listen = ["tcp:0:interface=127.0.0.1"]

[[namespaces]]
hosts = ["relay.example"]

  [[namespaces.rules]]
  name = "root"
  key = "assembly-key-0123456789abcdef"
  rights = ["Listen", "Send"]

  [[namespaces.oneway]]
  name = "orders"
  max_message_bytes = 32768

  [[namespaces.multicast]]
  name = "prices"
  discovery = "public"

  [[namespaces.requestreply]]
  name = "calc"
  client_auth = "anonymous"
  request_timeout = 10
"""


class TapTests(SynchronousTestCase):
    """makeService builds a gateway with the bindings installed and their entity sections read."""

    def test_service(self) -> None:
        """The three entity kinds load from the file; $wcf, the kinds and the registry are registered."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(textwrap.dedent(CONFIG))
        options = Options()
        options.parseOptions(["--config", path])
        service = makeService(options, reactor=MemoryReactorClock())
        gateway = service.getServiceNamed("bindings").gateway
        self.assertIsInstance(gateway, BindingsGateway)
        namespace = service.store.namespaces()[0]
        kinds = {e.name: (e.kind, e.settings.message_limit) for e in service.store.entities(namespace)}
        self.assertEqual(
            kinds,
            {"orders": ("oneway", 32768), "prices": ("multicast", 65536), "calc": ("requestreply", 4194304)},
        )
        self.assertIs(service.root._prefixes["$wcf"], gateway.websocket_resource)
        self.assertEqual(
            set(service.root._kinds), {"oneway", "multicast", "requestreply", "hybrid_connection"}
        )

    def test_bad_section(self) -> None:
        """A bad binding setting stops start-up with the key named."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                textwrap.dedent(CONFIG).replace("max_message_bytes = 32768", "max_message_bytes = 99999999")
            )
        from twisted.python.usage import UsageError

        error = self.assertRaises(UsageError, Options().parseOptions, ["--config", path])
        self.assertIn("namespaces[0].oneway[0].max_message_bytes", str(error))


class CommandLineTests(SynchronousTestCase):
    """relay soap-bridge parses its options."""

    def test_arguments(self) -> None:
        """URL, name, connection string and policy options."""
        args = build_parser().parse_args(
            [
                "soap-bridge",
                "--url",
                "http://127.0.0.1:8000/",
                "--name",
                "legacy",
                "--connection-string",
                "Endpoint=sb://h/;SharedAccessKeyName=a;SharedAccessKey=b",
                "--discovery",
                "public",
                "--soap-version",
                "1.2",
            ]
        )
        self.assertEqual(
            (args.url, args.name, args.discovery, args.soap_version, args.client_auth),
            ("http://127.0.0.1:8000/", "legacy", "public", "1.2", "token"),
        )
