"""
The compiled connection-establishment peers (C{benchmarks/connload}, Rust with the standard library only).

The asyncio peers of L{benchmarks.lean} need 0.7-1 ms of CPU per established pair, half of what the gateway
needs, so on a two-core machine they hide the gateway's own limit. C{connload} does the same work
(senders that connect, get their 101 and close; a listener answering every C{accept} with a rendezvous
upgrade) for a small fraction of that. It is built with C{cargo build --release --offline} on first use
(and again when its source is newer than the binary).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CRATE = Path(__file__).resolve().parent / "connload"
BINARY = CRATE / "target" / "release" / "connload"


def ensure_connload() -> tuple[str | None, str]:
    """
    Build C{connload} if needed.

    @return: the binary (or C{None}) and a sentence for the report saying what happened.
    """
    sources = [CRATE / "Cargo.toml", *(CRATE / "src").glob("*.rs")]
    newest = max(p.stat().st_mtime for p in sources)
    if BINARY.exists() and BINARY.stat().st_mtime >= newest:
        return str(BINARY), f"connload found ({BINARY.relative_to(CRATE.parent.parent)})"
    cargo = shutil.which("cargo")
    if cargo is None:
        return None, "cargo not found: the compiled connection peers are skipped"
    done = subprocess.run(
        [cargo, "build", "--release", "--offline", "--quiet"],
        cwd=CRATE,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not BINARY.exists():
        return None, f"connload did not build: {done.stderr.strip()[-300:]}"
    version = subprocess.run([cargo, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return str(BINARY), f"connload built by this run ({version}, standard library only)"
