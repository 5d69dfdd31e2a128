"""The TOML configuration (relay.config.load_config with the bindings' sections): every bad file is a ConfigError."""

from __future__ import annotations

import os
import tempfile
import tomllib._parser
from types import FunctionType

from bindings.settings import ENTITY_SECTIONS
from relay.config import GATEWAY_LIMITS, ConfigError, load_config

_PATH = os.path.join(tempfile.mkdtemp(prefix="fuzz-config-"), "relay.toml")
# atheris 2.3's instrumentation of tomllib's parser (Python 3.11) breaks it: "'str' object does not support
# the context manager protocol" on any array. The parser's own code is put back at the first call (the
# runner instruments after importing this module), so the fuzzer sees coverage of relay.config only.
_TOML_CODE = {f: f.__code__ for f in vars(tomllib._parser).values() if isinstance(f, FunctionType)}


def check(data: bytes) -> None:
    for function, code in _TOML_CODE.items():
        function.__code__ = code
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
