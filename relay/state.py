"""
The state directory: the development namespace's key, kept across restarts, and the last public endpoint.

The key is generated once with 256 random bits and written with mode 0600, so C{relay connection-string}
and a restarted gateway agree on it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from relay.auth import generate_key
from relay.config import MIN_KEY_LENGTH, credential_problem

DEVELOPMENT_KEY_NAME = "RootManageSharedAccessKey"
DEVELOPMENT_KEY_FILE = "development-key"
"""The development key's file in the state directory."""
_KEY_FILE = DEVELOPMENT_KEY_FILE
ENDPOINT_FILE = "gateway.json"
"""The last public endpoint's file in the state directory."""
_ENDPOINT_FILE = ENDPOINT_FILE


def default_state_dir() -> Path:
    """C{$XDG_STATE_HOME/relay}, or C{~/.local/state/relay}."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "relay"


def development_key(state_dir: Path) -> str:
    """
    Read the development namespace's key, creating it (and the directory) on first use.

    The key returned is always the one read back from the file, so that C{relay connection-string} and
    the next start agree with this one.
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = read_development_key(state_dir)
    if key is None:
        _link_new_key(state_dir)
        key = read_development_key(state_dir)
    if key is None:
        raise OSError(
            errno.ENOENT, "the development key was removed as it was made", str(state_dir / _KEY_FILE)
        )
    return key


def _link_new_key(state_dir: Path) -> None:
    """
    Write a new key under another name, on disk, and link it into place unless a key file exists.

    Linking fails if another process got there first: gateways starting together all end up with the
    one key on disk. The data reaches the disk before the link, so a power loss cannot leave the name
    holding an empty file.
    """
    with _written(state_dir, _KEY_FILE, generate_key() + "\n") as name:
        with contextlib.suppress(FileExistsError):
            os.link(name, state_dir / _KEY_FILE)


@contextlib.contextmanager
def _written(state_dir: Path, prefix: str, text: str) -> Iterator[str]:
    """
    The name of a new file (mode 0600) in the state directory, holding C{text} on disk.

    No other process uses the name; the file is removed afterwards, once linked or renamed into place.
    """
    fd, name = tempfile.mkstemp(dir=state_dir, prefix=prefix + ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        yield name
    finally:
        with contextlib.suppress(FileNotFoundError):
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
    """
    The development key if the gateway has made one, else C{None}.

    @raise OSError: C{EINVAL} when the file holds no key a connection string can carry (empty, too
        short, a C{;}, ...): making a new one would replace the key clients hold, serving it would give
        them a connection string that does not parse.
    """
    path = state_dir / _KEY_FILE
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise _not_a_key(path, "the file holds bytes other than ASCII") from None
    key = text.strip()
    problem = _key_problem(key)
    if problem is not None:
        raise _not_a_key(path, problem)
    return key


def _key_problem(key: str) -> str | None:
    """What makes the (stripped) content of a key file unusable as a key, or C{None}."""
    if not key:
        return "the file is empty or blank"
    if len(key) < MIN_KEY_LENGTH:
        return f"it is shorter than {MIN_KEY_LENGTH} characters"
    problem = credential_problem(key)
    return None if problem is None else f"it {problem}"


def _not_a_key(path: Path, problem: str) -> OSError:
    """The error for a key file that holds no usable key, with the way out (a new key, made at start)."""
    message = f"not a key: {problem}; remove it and the gateway makes a new one"
    return OSError(errno.EINVAL, message, str(path))


def write_endpoint(state_dir: Path, endpoint: str, plain: bool) -> None:
    """
    Remember where the gateway was last reachable, for C{relay connection-string}.

    Each writer renames a whole file of its own into place: gateways sharing the state directory used one
    temporary name, and renamed away each other's file, or a half-written one.
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    record = json.dumps({"endpoint": endpoint, "plain": plain}) + "\n"
    with _written(state_dir, _ENDPOINT_FILE, record) as name:
        os.replace(name, state_dir / _ENDPOINT_FILE)


def read_endpoint(state_dir: Path) -> tuple[str, bool] | None:
    """The endpoint and plain-text flag the gateway last wrote, or C{None}."""
    try:
        data = json.loads((state_dir / _ENDPOINT_FILE).read_text(encoding="utf-8"))
        return str(data["endpoint"]), bool(data["plain"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
