"""
The state directory: the development namespace's key, kept across restarts, and the last public endpoint.

The key is generated once with 256 random bits and written with mode 0600, so C{relay connection-string}
and a restarted gateway agree on it.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

from relay.auth import generate_key

DEVELOPMENT_KEY_NAME = "RootManageSharedAccessKey"
DEVELOPMENT_KEY_FILE = "development-key"
"""The development key's file in the state directory."""
_KEY_FILE = DEVELOPMENT_KEY_FILE
_ENDPOINT_FILE = "gateway.json"


def default_state_dir() -> Path:
    """C{$XDG_STATE_HOME/relay}, or C{~/.local/state/relay}."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "relay"


def development_key(state_dir: Path) -> str:
    """Read the development namespace's key, creating it (and the directory) on first use."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / _KEY_FILE
    key = read_development_key(state_dir)
    if key is not None:
        return key
    # Made under another name and linked into place, which fails if another process got there first:
    # gateways starting together all end up with the one key on disk.
    key = generate_key()
    fd, name = tempfile.mkstemp(dir=state_dir, prefix=_KEY_FILE + ".")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key + "\n")
        try:
            os.link(name, path)
        except FileExistsError:
            return read_development_key(state_dir) or key
        return key
    finally:
        os.unlink(name)


def readable_by_others(path: Path) -> str | None:
    """
    Why a secret file is exposed (C{"mode 0644"}: group or other users may read or write it), or C{None}.

    The gateway and C{relay cert} create their secrets with mode C{0600}; a looser one was changed since,
    or copied in, and anyone who can read it holds the key. C{None} off POSIX or for a missing file.
    """
    if os.name != "posix":
        return None
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return None
    return f"mode {mode:04o}" if mode & 0o077 else None


def read_development_key(state_dir: Path) -> str | None:
    """The development key if the gateway has made one, else C{None}."""
    path = state_dir / _KEY_FILE
    try:
        return path.read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise OSError(errno.EINVAL, "not a key (the file holds bytes other than ASCII)", str(path)) from None


def write_endpoint(state_dir: Path, endpoint: str, plain: bool) -> None:
    """Remember where the gateway was last reachable, for C{relay connection-string}."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = state_dir / (_ENDPOINT_FILE + ".tmp")
    tmp.write_text(json.dumps({"endpoint": endpoint, "plain": plain}) + "\n", encoding="utf-8")
    tmp.replace(state_dir / _ENDPOINT_FILE)


def read_endpoint(state_dir: Path) -> tuple[str, bool] | None:
    """The endpoint and plain-text flag the gateway last wrote, or C{None}."""
    try:
        data = json.loads((state_dir / _ENDPOINT_FILE).read_text(encoding="utf-8"))
        return str(data["endpoint"]), bool(data["plain"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
