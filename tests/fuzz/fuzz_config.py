"""The TOML configuration (relay.config.load_config with the bindings' sections): every bad file is a ConfigError."""

from __future__ import annotations

import os
import tempfile

from bindings.settings import ENTITY_SECTIONS
from relay.config import GATEWAY_LIMITS, ConfigError, load_config

_PATH = os.path.join(tempfile.mkdtemp(prefix="fuzz-config-"), "relay.toml")


def check(data: bytes) -> None:
    with open(_PATH, "wb") as f:
        f.write(data)
    try:
        config = load_config(_PATH, ENTITY_SECTIONS)
    except ConfigError as error:
        assert str(error)
        return
    for name, (_, low, high) in GATEWAY_LIMITS.items():
        assert low <= config.limits[name] <= high, (name, config.limits[name])
    hosts = [host for ns in config.namespaces for host in ns.namespace.hosts]
    assert len(hosts) == len(set(hosts)), hosts
