"""
The native splice extension for tests: the module, or a skip where it was not built.

CI sets C{RELAY_REQUIRE_NATIVE=1}: there a missing extension fails the tests instead of skipping them, so
that a build that silently left it out cannot pass.
"""

from __future__ import annotations

import os
from types import ModuleType
from unittest import SkipTest


def native_module() -> ModuleType:
    """C{relay._splice}, or L{SkipTest} (an C{ImportError} under C{RELAY_REQUIRE_NATIVE=1})."""
    try:
        from relay import _splice  # type: ignore[attr-defined]
    except ImportError as e:
        if os.environ.get("RELAY_REQUIRE_NATIVE") == "1":
            raise
        raise SkipTest(f"relay._splice is not built here ({e})") from e
    module: ModuleType = _splice
    return module
