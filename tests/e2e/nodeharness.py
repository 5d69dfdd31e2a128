"""
Run the Node interop scripts in C{tests/e2e/node} from trial tests and wait for what they report.

The scripts drive the official, unmodified npm clients C{hyco-ws} and C{hyco-https} and print one
JSON object per line on stdout (C{{"event": "online"}}, C{{"event": "message", ...}}). A test starts
one with L{spawn_script}, awaits the events it cares about with L{NodeScript.event}, and leaves the
rest to the cleanup that L{spawn_script} registers (terminate, then kill, and wait)::

    class EchoTests(TestCase):
        def setUp(self) -> None:
            require_node()
            ensure_node_modules()

        async def test_echo(self) -> None:
            listener = spawn_script(self, "ws-listener.js", ["--uri", listen_uri, "--token", token],
                                    ca_file=cert.ca_path)
            await listener.event("online")
            sender = spawn_script(self, "ws-sender.js", ["--uri", send_uri, "--token", token,
                                                         "--message", "binary:1048576"])
            echoed = await sender.event("message")
            self.assertEqual(echoed["sha256"], sha256_hex(payload("binary", 1048576, index=0)))
            self.assertEqual(await sender.exited(), 0)

Node missing is the only reason to skip, and the skip says so loudly; with C{RELAY_REQUIRE_NODE=1}
(set it in CI) it is an error instead. L{ensure_node_modules} runs C{npm ci} when C{node_modules} is
missing or does not match C{package-lock.json}.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from unittest import SkipTest

from twisted.internet import defer, error
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from typing_extensions import override

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
    from twisted.trial.unittest import TestCase

__all__ = [
    "NODE_DIR",
    "SCRIPTS",
    "NodeHarnessError",
    "NodeScript",
    "NodeScriptExited",
    "bulk_chunks",
    "bulk_sha256",
    "ensure_node_modules",
    "payload",
    "require_node",
    "sha256_hex",
    "spawn_script",
]

NODE_DIR = Path(__file__).resolve().parent / "node"
"""The npm project holding the scripts, C{package.json} and the committed C{package-lock.json}."""

SCRIPTS = frozenset({"ws-listener.js", "ws-sender.js", "https-listener.js", "http-sender.js"})

DEFAULT_EVENT_TIMEOUT = 30.0
STOP_GRACE = 5.0
NPM_CI_TIMEOUT = 600.0
_ready: set[Path] = set()


class NodeHarnessError(Exception):
    """Node or npm could not do what a test needs; the message carries their output."""


class NodeScriptExited(NodeHarnessError):
    """A script ended while a test was still waiting for one of its events."""


def require_node() -> str:
    """
    Find the C{node} executable, or skip the calling test with a loud reason.

    @return: the path of C{node}.
    @raise SkipTest: when C{node} is not on C{PATH} (unless C{RELAY_REQUIRE_NODE=1}).
    @raise NodeHarnessError: when C{node} is missing and C{RELAY_REQUIRE_NODE=1} is set.
    """
    node = shutil.which("node")
    if node is not None:
        return node
    message = (
        "NODE INTEROP TESTS NOT RUN: no 'node' on PATH. The official hyco-ws/hyco-https clients "
        "cannot be exercised without Node.js 20; install it (CI must) and run `npm ci` in "
        f"{NODE_DIR}. Set RELAY_REQUIRE_NODE=1 to turn this skip into an error."
    )
    if os.environ.get("RELAY_REQUIRE_NODE") == "1":
        raise NodeHarnessError(message)
    raise SkipTest(message)


def ensure_node_modules(node_dir: Path = NODE_DIR, npm: str | None = None) -> Path:
    """
    Make sure C{node_dir/node_modules} holds what the committed lock file pins, running C{npm ci} if not.

    Fresh means: every package the lock lists under C{node_modules/} is installed in the locked
    version (links, like the empty C{http} stand-in, exist). So an install made by CI's own
    C{npm ci} is reused, and a lock file changed by a pull makes the next test run reinstall.
    Concurrent test processes are serialised with a lock file. Blocking, but it runs once per
    process and directory, in test setup only.

    @param node_dir: the npm project directory.
    @param npm: the C{npm} executable; by default the one on C{PATH}.
    @return: the C{node_modules} directory.
    @raise NodeHarnessError: if npm is missing, C{npm ci} fails (with npm's output), or the install
        still does not match the lock file afterwards.
    """
    node_dir = node_dir.resolve()
    modules = node_dir / "node_modules"
    if node_dir in _ready:
        return modules
    with _lock(node_dir):
        if _stale(node_dir) is not None:
            _npm_ci(node_dir, npm)
            problem = _stale(node_dir)
            if problem is not None:
                raise NodeHarnessError(f"`npm ci` in {node_dir} succeeded but {problem}")
    _ready.add(node_dir)
    return modules


def payload(kind: Literal["text", "binary"], length: int, seed: str = "relay", index: int = 0) -> bytes:
    """
    The deterministic content the scripts send, as bytes (text payloads are ASCII).

    Same definition as C{payload()} in C{node/lib/harness.js}: block I{k} is SHA-256 of the UTF-8
    string C{"<seed>:<index>:<k>"}; binary content is the blocks concatenated, text content their hex
    digests concatenated, both cut to C{length}.

    @param kind: C{"text"} or C{"binary"}.
    @param length: bytes (characters for text).
    @param seed: the scripts' C{--seed} (default C{"relay"}).
    @param index: the message index (C{ws-sender.js}) or request index (C{http-sender.js}); C{0} for
        C{https-listener.js --body-size}.
    """
    if kind not in ("text", "binary"):
        raise ValueError(f"payload kind must be 'text' or 'binary', not {kind!r}")
    per_block = 64 if kind == "text" else 32
    blocks = []
    for k in range(-(-length // per_block)):
        digest = hashlib.sha256(f"{seed}:{index}:{k}".encode()).digest()
        blocks.append(digest.hex().encode("ascii") if kind == "text" else digest)
    return b"".join(blocks)[:length]


def bulk_chunks(length: int, seed: str = "relay", index: int = 0, chunk_size: int = 65536) -> Iterator[bytes]:
    """
    The bulk payload of the scripts (C{--body-kind bulk}), piece by piece.

    Same definition as C{bulkChunks()} in C{node/lib/harness.js}: the AES-128-CTR keystream with key
    C{SHA-256("bulk:<seed>")[:16]} and counter block C{SHA-256("bulk:<seed>:<index>")[:16]}, cut to
    C{length} bytes. Fast enough for hundreds of megabytes, and never held whole.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = hashlib.sha256(f"bulk:{seed}".encode()).digest()[:16]
    iv = hashlib.sha256(f"bulk:{seed}:{index}".encode()).digest()[:16]
    keystream = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    zeros = bytes(chunk_size)
    for offset in range(0, length, chunk_size):
        size = min(chunk_size, length - offset)
        yield keystream.update(zeros if size == chunk_size else zeros[:size])


def bulk_sha256(length: int, seed: str = "relay", index: int = 0) -> str:
    """The hex SHA-256 of a bulk payload."""
    digest = hashlib.sha256()
    for chunk in bulk_chunks(length, seed, index):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_hex(data: bytes) -> str:
    """The hex SHA-256 the scripts report for C{data}."""
    return hashlib.sha256(data).hexdigest()


def spawn_script(
    testcase: TestCase | None,
    script: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    reactor: IReactorProcess | None = None,
    node: str | None = None,
) -> NodeScript:
    """
    Start one of the interop scripts and return its L{NodeScript}.

    The script runs in L{NODE_DIR} with the test process's environment plus C{env}, with
    C{RELAY_HARNESS_STDIN=1} (so it accepts commands and exits when this process goes away) and, if
    given, C{NODE_EXTRA_CA_CERTS=ca_file}. If C{testcase} is given, a cleanup stops the script.

    @param script: one of L{SCRIPTS}.
    @param args: command-line arguments (see C{node <script> --help}).
    @raise ValueError: for an unknown script name.
    """
    if script not in SCRIPTS:
        raise ValueError(f"unknown script {script!r}; expected one of {sorted(SCRIPTS)}")
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    assert reactor is not None
    executable = node if node is not None else require_node()
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["RELAY_HARNESS_STDIN"] = "1"
    if ca_file is not None:
        child_env["NODE_EXTRA_CA_CERTS"] = os.path.abspath(ca_file)
    process = NodeScript(script, reactor)  # type: ignore[arg-type]
    reactor.spawnProcess(
        process, executable, [executable, script, *args], env=child_env, path=os.fspath(NODE_DIR)
    )
    if testcase is not None:
        testcase.addCleanup(process.stop)
    return process


class NodeScript(ProcessProtocol):
    """
    A running interop script: its events so far, its stderr, and ways to wait for more.

    Each event is handed out once: L{event} returns the oldest not-yet-returned event with that name
    (and matching fields), waiting for it if needed. L{events} lists everything received, returned or
    not, for assertions about what did I{not} happen.

    @ivar name: the script file name, for messages.
    @ivar events: every JSON object received on stdout, in order.
    @ivar stderr: everything the script wrote to stderr.
    @ivar exit_code: the exit status once it has ended (a negative number for a signal), else L{None}.
    """

    def __init__(self, name: str, reactor: IReactorTime) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.stderr = bytearray()
        self.exit_code: int | None = None
        self._reactor = reactor
        self._buffer = b""
        self._taken: set[int] = set()
        self._waiters: list[_Waiter] = []
        self._end_watchers: list[defer.Deferred[None]] = []
        self._problems: list[str] = []

    async def event(
        self,
        name: str,
        *,
        timeout: float = DEFAULT_EVENT_TIMEOUT,
        match: Callable[[dict[str, Any]], bool] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """
        Wait for the next event called C{name} whose fields equal C{fields} (and satisfy C{match}).

        @param timeout: seconds to wait before failing.
        @return: the event object.
        @raise NodeScriptExited: if the script ends first.
        @raise NodeHarnessError: on timeout, or if the script wrote something that is not a JSON line.
        """
        waiter = _Waiter(name, fields, match)
        for index, event in enumerate(self.events):
            if index not in self._taken and waiter.matches(event):
                self._taken.add(index)
                return event
        if self._problems:
            raise NodeHarnessError(self._describe(f"protocol violation: {self._problems[0]}"))
        if self.exit_code is not None:
            raise NodeScriptExited(self._describe(f"exited with {self.exit_code} before {waiter}"))
        result: defer.Deferred[dict[str, Any]] = defer.Deferred()
        waiter.deferred = result
        waiter.timer = self._reactor.callLater(timeout, self._time_out, waiter, timeout)
        self._waiters.append(waiter)
        return await result

    def named(self, name: str) -> list[dict[str, Any]]:
        """Every event called C{name} received so far (returned by L{event} or not)."""
        return [event for event in self.events if event.get("event") == name]

    def command(self, command: str, **fields: Any) -> None:
        """Send a stdin command (C{pause}, C{resume}, C{close}, C{exit}); see the script's C{--help}."""
        line = json.dumps({"command": command, **fields}) + "\n"
        if self.transport is not None and self.exit_code is None:
            self.transport.write(line.encode("utf-8"))

    async def exited(self, timeout: float = DEFAULT_EVENT_TIMEOUT) -> int:
        """
        Wait until the script ends by itself and return its exit status.

        @raise NodeHarnessError: if it is still running after C{timeout} seconds.
        """
        ended = self._when_ended()
        ended.addTimeout(timeout, self._reactor)
        try:
            await ended
        except defer.TimeoutError:
            raise NodeHarnessError(self._describe(f"still running after {timeout} s")) from None
        assert self.exit_code is not None
        return self.exit_code

    def stop(self, grace: float = STOP_GRACE) -> defer.Deferred[None]:
        """
        Terminate the script (SIGTERM, then SIGKILL after C{grace} seconds) and wait until it is gone.

        Safe to call more than once and after the script has ended by itself; suitable for
        C{addCleanup}.
        """
        ended = self._when_ended()
        if self.exit_code is None:
            self._signal("TERM")
            killer = self._reactor.callLater(grace, self._signal, "KILL")

            def spare(result: None) -> None:
                if killer.active():
                    killer.cancel()

            ended.addCallback(spare)
        return ended

    def describe(self) -> str:
        """A summary for failure messages: exit status, the last events, the end of stderr."""
        return self._describe("state")

    @override
    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            if raw.strip():
                self._line(raw)

    @override
    def errReceived(self, data: bytes) -> None:
        self.stderr.extend(data)

    @override
    def processEnded(self, reason: Failure) -> None:
        if isinstance(reason.value, error.ProcessDone):
            self.exit_code = 0
        else:
            code = getattr(reason.value, "exitCode", None)
            signal = getattr(reason.value, "signal", None)
            self.exit_code = code if code is not None else -(signal or 1)
        if self._buffer.strip():
            self._line(self._buffer)
            self._buffer = b""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.fail(NodeScriptExited(self._describe(f"exited with {self.exit_code} before {waiter}")))
        watchers, self._end_watchers = self._end_watchers, []
        for watcher in watchers:
            if not watcher.called:
                watcher.callback(None)

    def _when_ended(self) -> defer.Deferred[None]:
        """A new Deferred that fires once the process has ended (at once if it has)."""
        if self.exit_code is not None:
            return defer.succeed(None)
        watcher: defer.Deferred[None] = defer.Deferred()
        self._end_watchers.append(watcher)
        return watcher

    def _line(self, raw: bytes) -> None:
        try:
            event = json.loads(raw)
            if not isinstance(event, dict) or not isinstance(event.get("event"), str):
                raise ValueError("not an object with an 'event' string")
        except ValueError as e:
            problem = f"stdout line is not a protocol event ({e}): {raw[:200]!r}"
            self._problems.append(problem)
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.fail(NodeHarnessError(self._describe(f"protocol violation: {problem}")))
            return
        index = len(self.events)
        self.events.append(event)
        for waiter in list(self._waiters):
            try:
                matched = waiter.matches(event)
            except Exception as e:  # a test's match= predicate failed: fail that wait, not the pipe
                self._waiters.remove(waiter)
                waiter.fail(e)
                continue
            if matched:
                self._waiters.remove(waiter)
                self._taken.add(index)
                waiter.succeed(event)
                return

    def _time_out(self, waiter: _Waiter, timeout: float) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            waiter.fail(NodeHarnessError(self._describe(f"no {waiter} within {timeout} s")))

    def _signal(self, name: str) -> None:
        if self.transport is not None and self.exit_code is None:
            try:
                self.transport.signalProcess(name)
            except error.ProcessExitedAlready:
                pass

    def _describe(self, what: str) -> str:
        recent = "\n".join(json.dumps(e)[:300] for e in self.events[-15:]) or "(none)"
        stderr = bytes(self.stderr[-3000:]).decode("utf-8", "replace") or "(empty)"
        return f"{self.name}: {what}\n--- last events ---\n{recent}\n--- stderr ---\n{stderr}"


class _Waiter:
    """One pending L{NodeScript.event} call."""

    def __init__(
        self, name: str, fields: dict[str, Any], match: Callable[[dict[str, Any]], bool] | None
    ) -> None:
        self.name = name
        self.fields = fields
        self.match = match
        self.deferred: defer.Deferred[dict[str, Any]] | None = None
        self.timer: IDelayedCall | None = None

    def matches(self, event: dict[str, Any]) -> bool:
        if event.get("event") != self.name:
            return False
        if any(event.get(key) != value for key, value in self.fields.items()):
            return False
        return self.match is None or bool(self.match(event))

    def succeed(self, event: dict[str, Any]) -> None:
        self._cancel_timer()
        if self.deferred is not None and not self.deferred.called:
            self.deferred.callback(event)

    def fail(self, exception: Exception) -> None:
        self._cancel_timer()
        if self.deferred is not None and not self.deferred.called:
            self.deferred.errback(exception)

    def _cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()

    def __str__(self) -> str:
        details = ", ".join(f"{k}={v!r}" for k, v in self.fields.items())
        extra = " (with a match= predicate)" if self.match is not None else ""
        return f"event {self.name!r}" + (f" with {details}" if details else "") + extra


def _stale(node_dir: Path) -> str | None:
    """Say what in C{node_modules} differs from C{package-lock.json}, or L{None} if nothing does."""
    try:
        lock = json.loads((node_dir / "package-lock.json").read_text())
        packages = lock["packages"]
    except (OSError, ValueError, KeyError) as e:
        raise NodeHarnessError(f"cannot read {node_dir / 'package-lock.json'}: {e}") from e
    for key, entry in packages.items():
        if not key.startswith("node_modules/"):
            continue  # the root project and local link targets
        installed = node_dir / key
        if entry.get("link"):
            if not installed.exists():
                return f"{key} (a link) is missing"
            continue
        try:
            version = json.loads((installed / "package.json").read_text()).get("version")
        except (OSError, ValueError):
            return f"{key} is not installed"
        if version != entry.get("version"):
            return f"{key} is {version}, the lock file says {entry.get('version')}"
    return None


def _npm_ci(node_dir: Path, npm: str | None) -> None:
    """Run C{npm ci} in C{node_dir}, turning every failure into a L{NodeHarnessError} with npm's output."""
    executable = npm if npm is not None else shutil.which("npm")
    if executable is None:
        raise NodeHarnessError(f"npm is not on PATH; cannot install the Node interop clients in {node_dir}")
    command = [executable, "ci", "--no-audit", "--no-fund"]
    try:
        result = subprocess.run(
            command, cwd=node_dir, capture_output=True, text=True, timeout=NPM_CI_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NodeHarnessError(f"`{' '.join(command)}` in {node_dir} could not run: {e}") from e
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise NodeHarnessError(
            f"`{' '.join(command)}` in {node_dir} failed with exit status {result.returncode}:\n{output}"
        )


@contextmanager
def _lock(node_dir: Path) -> Iterator[None]:
    """Serialise installs into one directory across test processes (pytest-xdist workers)."""
    name = hashlib.sha256(os.fsencode(node_dir)).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"relay-npm-ci-{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
