"""
A real gateway on loopback for end-to-end tests: started in the test's reactor on port 0, stopped after.

Use from a trial C{TestCase} (async tests)::

    gateway = await start_gateway(self, config=CONFIG_TOML)
    url = gateway.ws_url            # ws://127.0.0.1:PORT
"""

from __future__ import annotations

import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from relay.auth import make_token
from relay.config import default_limits, parse_config
from relay.listeners import IListenerChooser
from relay.service import GatewayService, GatewaySettings

# The test namespace and its three rules; each suite appends its entities.
NAMESPACE_CONFIG = """
[[namespaces]]
name = "test"
hosts = ["127.0.0.1", "localhost"]
auto_create = true

  [[namespaces.rules]]
  name = "root"
  key = "e2e-root-key-0123456789abcdefghij"
  rights = ["Listen", "Send", "Manage"]

  [[namespaces.rules]]
  name = "send-only"
  key = "e2e-send-key-0123456789abcdefghij"
  rights = ["Send"]

  [[namespaces.rules]]
  name = "listen-only"
  key = "e2e-listen-key-0123456789abcdefgh"
  rights = ["Listen"]

"""

DEFAULT_CONFIG = (
    NAMESPACE_CONFIG
    + """  [[namespaces.hybrid_connections]]
  name = "hyco"

  [[namespaces.hybrid_connections]]
  name = "open"
  requires_client_authorization = false
"""
)

ROOT_KEY = "e2e-root-key-0123456789abcdefghij"
SEND_KEY = "e2e-send-key-0123456789abcdefghij"
LISTEN_KEY = "e2e-listen-key-0123456789abcdefgh"


@dataclass
class RunningGateway:
    """
    A started gateway.

    @ivar service: the service tree (store, registry, routers, factories).
    @ivar port: the TCP port it listens on.
    @ivar host: C{127.0.0.1}.
    @ivar tls: whether it serves TLS.
    """

    service: GatewayService
    port: int
    host: str = "127.0.0.1"
    tls: bool = False
    admin_port: int | None = None

    @property
    def netloc(self) -> str:
        """C{host:port}."""
        return f"{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """C{ws://host:port} (or C{wss://})."""
        return f"{'wss' if self.tls else 'ws'}://{self.netloc}"

    @property
    def http_url(self) -> str:
        """C{http://host:port} (or C{https://})."""
        return f"{'https' if self.tls else 'http'}://{self.netloc}"

    @property
    def admin_url(self) -> str:
        """C{http://127.0.0.1:PORT} of the admin endpoint (started with C{admin=True})."""
        assert self.admin_port is not None, "start_gateway(..., admin=True)"
        return f"http://{self.host}:{self.admin_port}"

    @property
    def connection_string(self) -> str:
        """A connection string with the root key, for clients that take one."""
        plain = "" if self.tls else ";UseDevelopmentEmulator=true"
        return f"Endpoint=sb://{self.netloc}/;SharedAccessKeyName=root;SharedAccessKey={ROOT_KEY}{plain}"

    def token(self, path: str, key_name: str = "root", key: str = ROOT_KEY, ttl: float = 3600.0) -> str:
        """A token for C{http://host/path} signed with one of the test rules."""
        return make_token(f"http://{self.host}/{path}", key_name, key, ttl=ttl)


async def start_gateway(
    case: TestCase,
    config: str = DEFAULT_CONFIG,
    *,
    limits: dict[str, float] | None = None,
    listen: str = "tcp:0:interface=127.0.0.1",
    public_url: str | None = None,
    chooser: IListenerChooser | None = None,
    extra_sections: tuple[Any, ...] = (),
    extensions: tuple[Any, ...] = (),
    admin: bool = False,
) -> RunningGateway:
    """
    Start a gateway for one test; it is stopped (and its connections drained) at cleanup.

    @param admin: also serve the admin endpoint (C{/metrics}, C{/healthz}) on a loopback port of its own.
    """
    parsed = parse_config(tomllib.loads(textwrap.dedent(config)), "<test>", extra_sections)
    merged = {**default_limits(), "listener_failure_delay": 0.0, **(limits or {})}
    settings = GatewaySettings(
        listen=(listen,),
        public_url=public_url,
        admin="tcp:0:interface=127.0.0.1" if admin else None,
        state_dir=Path(case.mktemp()),
        config=parsed.__class__(
            listen=(), public_url=None, state_dir=None, namespaces=parsed.namespaces, limits=merged
        ),
    )
    service = GatewayService(settings, reactor=reactor, chooser=chooser, extensions=extensions)
    service.startService()
    await service.ready
    case.addCleanup(service.stopService)
    port = service.ports[0].getHost().port
    tls = listen.startswith(("ssl:", "tls:"))
    admin_port = service.admin_port.getHost().port if service.admin_port is not None else None
    return RunningGateway(service=service, port=port, tls=tls, admin_port=admin_port)
