"""
The layer rules of the style guide, checked for the bindings package until import-linter covers it.

Codecs must not import Twisted; routers must not import lxml (not even indirectly), so the transport step
can stay a thin translation layer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CODECS = (
    "safexml",
    "soap",
    "faultcodes",
    "faults",
    "addressing",
    "contracts",
    "xsdtypes",
    "wsdl",
    "registry",
    "settings",
    "control",
    "inbound",
    "credentials",
)
ROUTERS = ("outlet", "oneway", "multicast", "requestreply", "names")

PROBE = """
import importlib, json, sys
name = sys.argv[1]
importlib.import_module("bindings." + name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def top_level_imports(module: str) -> set[str]:
    output = subprocess.run(
        [sys.executable, "-c", PROBE, module], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(output))


class LayerTests(SynchronousTestCase):
    """Import boundaries."""

    def test_codecs_free_of_twisted(self) -> None:
        """No codec module loads Twisted or Autobahn."""
        for module in CODECS:
            loaded = top_level_imports(module)
            self.assertFalse(loaded & {"twisted", "autobahn"}, module)

    def test_routers_free_of_lxml(self) -> None:
        """No router module loads lxml or Autobahn."""
        for module in ROUTERS:
            loaded = top_level_imports(module)
            self.assertFalse(loaded & {"lxml", "autobahn"}, module)
            self.assertIn("twisted", loaded, module)
