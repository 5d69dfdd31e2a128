"""
C{twistd relay}: command-line options and the service they build.

With no options the gateway is the embedded default: in-memory state, plain WebSocket/HTTP on
127.0.0.1:9080, and a development namespace whose key is generated once in the state directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.python import usage
from typing_extensions import override

from bindings.gateway import install as install_bindings
from bindings.settings import ENTITY_SECTIONS
from relay.config import ConfigError, GatewayConfig, load_config
from relay.hybrid.addressing import AddressError, websocket_base
from relay.logtext import twistd_observer
from relay.service import DEFAULT_LISTEN, GatewayService, GatewaySettings
from relay.state import default_state_dir


class Options(usage.Options):
    """Options of C{twistd relay}."""

    synopsis = (
        "[--listen ENDPOINT]... [--config FILE] [--public-url URL] [--state-dir DIR] [--admin ENDPOINT]"
    )
    longdesc = (
        "Run the relay gateway. Without options it serves a development namespace on "
        f"{DEFAULT_LISTEN} and prints a connection string."
    )
    optParameters = [
        ["config", "c", None, "Configuration file (TOML): namespaces, rules, entities, limits."],
        [
            "public-url",
            None,
            None,
            "Base URL that rendezvous addresses use (e.g. https://relay.example.org).",
        ],
        [
            "state-dir",
            None,
            None,
            "Directory for the development key and state [default: $XDG_STATE_HOME/relay].",
        ],
        [
            "admin",
            None,
            None,
            "Serve GET /metrics (Prometheus) and /healthz on this endpoint, e.g. "
            "tcp:9090:interface=127.0.0.1 [default: off].",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Serve on a Twisted endpoint, e.g. tcp:9080:interface=127.0.0.1 or ssl:443:privateKey=k.pem:certKey=c.pem (repeatable)."""
        self["listen"].append(endpoint)

    opt_l = opt_listen

    @override
    def postOptions(self) -> None:
        """Load and check the configuration file; merge it with the command line."""
        config = GatewayConfig()
        if self["config"]:
            try:
                config = load_config(self["config"], ENTITY_SECTIONS)
            except ConfigError as e:
                raise usage.UsageError(str(e)) from None
        self["listen"] = tuple(self["listen"]) or config.listen or (DEFAULT_LISTEN,)
        public_url = self["public-url"] or config.public_url
        if public_url is not None:
            try:
                websocket_base(public_url)
            except AddressError as e:
                raise usage.UsageError(f"--public-url: {e}") from None
        state_dir = self["state-dir"] or config.state_dir
        admin = self["admin"] or config.admin
        self["settings"] = GatewaySettings(
            listen=self["listen"],
            public_url=public_url,
            state_dir=Path(state_dir) if state_dir else default_state_dir(),
            config=config,
            admin=admin,
        )


def makeService(options: Options, reactor: Any = None) -> GatewayService:
    """Build the gateway service tree from parsed options, with twistd's log observer when twistd runs it."""
    return GatewayService(
        options["settings"],
        reactor=reactor,
        extensions=(install_bindings,),
        log_observer=twistd_observer(getattr(options, "parent", None)),
    )
