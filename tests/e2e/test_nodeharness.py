"""
Tests for the Node interop harness: the scripts in C{tests/e2e/node} and C{tests/e2e/nodeharness.py}.

The gateway is not involved. To check that the scripts really speak the Hybrid Connections protocol
with the official clients, the listener and sender scripts run against L{RelayDouble}, a protocol
double written with Autobahn: it plays the relay's side of single exchanges (take a control channel,
send an C{accept} or C{request}, answer a rendezvous or sender upgrade) exactly as the spec words
them, and records what the clients send. It pairs nobody and forwards nothing: it is not a gateway.
The HTTP sender script runs against a plain C{twisted.web} echo resource.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any
from unittest import SkipTest

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from typing_extensions import override

from relay.auth import Grant, Rights, SharedAccessRule, make_token, validate_token
from relay.certs import issue_server_certificate

from ..recording import RecordingProducer
from .nodeharness import (
    SCRIPTS,
    NodeHarnessError,
    NodeScript,
    NodeScriptExited,
    bulk_chunks,
    ensure_node_modules,
    payload,
    require_node,
    sha256_hex,
    spawn_script,
)

KEY_NAME = "harness-rule"
KEY = "harness-secret-key"
WAIT = 20.0


def reactor_() -> Any:
    """The global reactor (imported late, as the style guide asks)."""
    from twisted.internet import reactor

    return reactor


async def within(d: defer.Deferred[Any], seconds: float = WAIT) -> Any:
    """Await C{d}, failing with a timeout after C{seconds}."""
    d.addTimeout(seconds, reactor_())
    return await d


def scratch(testcase: SynchronousTestCase) -> Path:
    """
    A fresh path that does not exist yet, inside a temporary directory removed at cleanup.

    Unlike C{TestCase.mktemp}, which is relative to the working directory (the repository root
    under pytest), this never leaves files behind in the checkout.
    """
    base = Path(tempfile.mkdtemp(prefix="relay-test-"))
    testcase.addCleanup(shutil.rmtree, base, True)
    return base / "scratch"


async def sleep(seconds: float) -> None:
    """Let the reactor run for C{seconds}."""
    await task.deferLater(reactor_(), seconds, lambda: None)


class Connections:
    """
    The open server-side connections of one listening port, so cleanup can end them all.

    Protocols report themselves with L{add} and L{discard} (from C{connectionMade} and
    C{connectionLost}); wrapping the factory instead would hide the TLS transport from Autobahn.
    """

    def __init__(self) -> None:
        self.open: set[Any] = set()
        self._idle: list[defer.Deferred[None]] = []

    def add(self, protocol: Any) -> None:
        """A connection was made."""
        self.open.add(protocol)

    def discard(self, protocol: Any) -> None:
        """A connection was lost."""
        self.open.discard(protocol)
        if not self.open:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    async def close_all(self) -> None:
        """Abort every open connection and wait until each has gone."""
        if not self.open:
            return
        idle: defer.Deferred[None] = defer.Deferred()
        self._idle.append(idle)
        for protocol in list(self.open):
            protocol.transport.abortConnection()
        await within(idle, 10)


async def serve(
    testcase: TestCase,
    factory: Factory,
    connections: Connections,
    description: str = "tcp:0:interface=127.0.0.1",
) -> int:
    """Listen with C{factory} on a free loopback port; stop listening and drop connections at cleanup."""
    port = await serverFromString(reactor_(), description).listen(factory)

    async def stop() -> None:
        await port.stopListening()
        await connections.close_all()

    testcase.addCleanup(lambda: defer.Deferred.fromCoroutine(stop()))
    return int(port.getHost().port)


# ------------------------------------------------------------------------------------------------
# The relay protocol double
# ------------------------------------------------------------------------------------------------


class DoubleConnection(WebSocketServerProtocol):
    """
    One WebSocket accepted by L{RelayDouble}: records its upgrade request and every message.

    @ivar action: the C{sb-hc-action} of the upgrade (C{listen}, C{accept}, C{request}, C{connect}).
    @ivar messages: received messages as C{(payload, is_binary)}.
    @ivar closed: fires with C{(code, reason)} when the connection ends.
    @ivar pongs: how many pong frames arrived (unsolicited ones are keep-alives).
    """

    factory: RelayDoubleFactory

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.request: ConnectionRequest | None = None
        self.messages: defer.DeferredQueue[tuple[bytes, bool]] = defer.DeferredQueue()
        self.closed: defer.Deferred[tuple[int | None, str | None]] = defer.Deferred()
        self.pongs = 0

    @override
    def connectionMade(self) -> None:
        self.factory.relay.connections.add(self)
        super().connectionMade()

    @override
    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.factory.relay.connections.discard(self)

    @override
    def onConnect(self, request: ConnectionRequest) -> str | None:
        self.request = request
        self.action = request.params.get("sb-hc-action", [""])[0]
        relay = self.factory.relay
        relay.upgrades.append(request)
        params = {name.lower(): values for name, values in request.params.items()}
        if self.action == "accept" and ("sb-hc-statuscode" in params or "statuscode" in params):
            relay.rejects.put(request)
            raise ConnectionDeny(410, "Gone")
        if self.action in relay.deny:
            raise ConnectionDeny(*relay.deny[self.action])
        return request.protocols[0] if request.protocols else None

    @override
    def onOpen(self) -> None:
        self.factory.relay.opened[self.action].put(self)

    @override
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        relay = self.factory.relay
        self.messages.put((payload, isBinary))
        if self.action == "connect" and relay.echo:
            self.sendMessage(payload, isBinary)
        if self.action == "connect" and relay.close_after is not None:
            relay.close_after[2] -= 1
            if relay.close_after[2] == 0:
                self.sendClose(relay.close_after[0], relay.close_after[1])

    @override
    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.closed.called:
            self.closed.callback((code, reason))

    @override
    def onPong(self, payload: bytes) -> None:
        self.pongs += 1

    @override
    def dropConnection(self, abort: bool = False) -> None:
        # Autobahn servers abort (RST) the TCP connection once a closing handshake they started is
        # complete. ws 1.1.5 turns the resulting ECONNRESET into close code 1006, hiding the code it
        # received; the double closes gracefully unless told to behave like stock Autobahn.
        super().dropConnection(abort=abort and self.factory.relay.abort_after_close)

    def send_json(self, message: dict[str, Any]) -> None:
        """Send one JSON text message, as the relay does on control and rendezvous channels."""
        self.sendMessage(json.dumps(message).encode("utf-8"), isBinary=False)

    async def next_message(self) -> tuple[bytes, bool]:
        """The next received message."""
        result: tuple[bytes, bool] = await within(self.messages.get())
        return result


class RelayDoubleFactory(WebSocketServerFactory):
    """Autobahn factory for L{DoubleConnection}, pointing back at its L{RelayDouble}."""

    protocol = DoubleConnection

    def __init__(self, relay: RelayDouble) -> None:
        super().__init__()
        self.relay = relay


class RelayDouble:
    """
    The relay's side of single Hybrid Connections exchanges, for testing clients (not a gateway).

    Every upgrade is accepted (with the first offered subprotocol) unless C{deny} names its action;
    upgrades to an accept address carrying reject parameters get C{410} and are queued in
    C{rejects}. Opened connections are queued by action in C{opened}. Sender (C{connect})
    connections are echoed when C{echo} is set, and closed by the double after
    C{close_after = [code, reason, n]} messages. After a closing handshake the double closes TCP
    gracefully; C{abort_after_close} restores Autobahn's default (abort).

    @ivar base: C{ws://127.0.0.1:PORT} or C{wss://localhost:PORT} once listening.
    """

    def __init__(self) -> None:
        self.deny: dict[str, tuple[int, str]] = {}
        self.echo = False
        self.abort_after_close = False
        self.close_after: list[Any] | None = None
        self.upgrades: list[ConnectionRequest] = []
        self.rejects: defer.DeferredQueue[ConnectionRequest] = defer.DeferredQueue()
        self.opened: defaultdict[str, defer.DeferredQueue[DoubleConnection]] = defaultdict(
            defer.DeferredQueue
        )
        self.connections = Connections()
        self.base = ""

    async def start(self, testcase: TestCase, tls: Any = None) -> None:
        """Listen on loopback, over TLS when C{tls} (a L{relay.certs.ServerCertificate}) is given."""
        factory = RelayDoubleFactory(self)
        if tls is None:
            port = await serve(testcase, factory, self.connections)
            self.base = f"ws://127.0.0.1:{port}"
        else:
            port = await serve(
                testcase, factory, self.connections, tls.endpoint_description(0, interface="127.0.0.1")
            )
            self.base = f"wss://localhost:{port}"

    def uri(self, path: str, query: str) -> str:
        """An address on this double: C{base + "/$hc/" + path + "?" + query}."""
        return f"{self.base}/$hc/{path}?{query}"

    async def connection(self, action: str) -> DoubleConnection:
        """The next opened connection with this C{sb-hc-action}."""
        result: DoubleConnection = await within(self.opened[action].get())
        return result


def sas_token(resource: str, ttl: float = 3600) -> str:
    """A token signed with the test rule, as relay.auth makes them."""
    return make_token(resource, KEY_NAME, KEY, ttl=ttl)


def check_token(testcase: SynchronousTestCase, token: str, entity: str = "hyco") -> None:
    """Assert that the relay's own validator grants C{token} the Listen right on C{entity}."""
    decision = validate_token(
        token,
        rules=[SharedAccessRule(KEY_NAME, KEY, Rights.LISTEN | Rights.SEND)],
        namespace_hosts=["127.0.0.1", "localhost"],
        entity_path=entity,
        needed=Rights.LISTEN,
        now=time.time(),
    )
    testcase.assertIsInstance(decision, Grant, decision)


def header(request: ConnectionRequest, name: str) -> str | None:
    """A request header by (case-insensitive) name, or None."""
    value = request.headers.get(name.lower())
    return None if value is None else str(value)


class NodeTestCase(TestCase):
    """Base class: skip loudly without node; install the npm clients once per process."""

    def setUp(self) -> None:
        require_node()
        ensure_node_modules()

    def spawn(self, script: str, *args: str, **kwargs: Any) -> NodeScript:
        """Start a script whose cleanup is registered on this test."""
        return spawn_script(self, script, list(args), **kwargs)


# ------------------------------------------------------------------------------------------------
# Harness basics
# ------------------------------------------------------------------------------------------------


class PayloadTests(SynchronousTestCase):
    """L{payload} is the documented SHA-256 block stream."""

    def test_binary_blocks(self) -> None:
        """Binary payloads concatenate SHA-256 digests of C{seed:index:k}."""
        import hashlib

        expected = b"".join(hashlib.sha256(f"s:3:{k}".encode()).digest() for k in range(3))[:70]
        self.assertEqual(payload("binary", 70, "s", 3), expected)

    def test_text_blocks(self) -> None:
        """Text payloads concatenate the hex digests (ASCII)."""
        import hashlib

        expected = "".join(hashlib.sha256(f"relay:0:{k}".encode()).hexdigest() for k in range(2))[:100]
        self.assertEqual(payload("text", 100), expected.encode("ascii"))

    def test_lengths(self) -> None:
        """Lengths are exact, including zero."""
        for length in (0, 1, 31, 32, 33, 65537):
            self.assertEqual(len(payload("binary", length)), length)
            self.assertEqual(len(payload("text", length)), length)

    def test_bad_kind(self) -> None:
        """Only text and binary exist."""
        with self.assertRaises(ValueError):
            payload("json", 3)  # type: ignore[arg-type]


class RequireNodeTests(SynchronousTestCase):
    """L{require_node} skips only when node is missing, and says so loudly."""

    def test_missing_node_skips_loudly(self) -> None:
        """Without node on PATH the test is skipped with a reason that cannot be missed."""
        empty = scratch(self)
        empty.mkdir()
        self.patch(os, "environ", {"PATH": str(empty)})
        with self.assertRaises(SkipTest) as caught:
            require_node()
        self.assertIn("NODE INTEROP TESTS NOT RUN", str(caught.exception))
        self.assertIn("RELAY_REQUIRE_NODE=1", str(caught.exception))

    def test_missing_node_fails_when_required(self) -> None:
        """With RELAY_REQUIRE_NODE=1 (CI) a missing node is an error, not a skip."""
        empty = scratch(self)
        empty.mkdir()
        self.patch(os, "environ", {"PATH": str(empty), "RELAY_REQUIRE_NODE": "1"})
        with self.assertRaises(NodeHarnessError):
            require_node()

    def test_unknown_script(self) -> None:
        """Only the harness scripts can be started."""
        with self.assertRaises(ValueError):
            spawn_script(None, "rm.js", node="/bin/false")


FAKE_NPM = """#!/bin/sh
# A stand-in for npm: records its arguments and working directory, then installs package "a"
# in the version given by FAKE_NPM_VERSION (or fails with FAKE_NPM_STATUS).
echo "$PWD $*" >> "$FAKE_NPM_LOG"
if [ -n "$FAKE_NPM_STATUS" ]; then
    echo "npm error code ETARGET: no matching version for http@latest" >&2
    exit "$FAKE_NPM_STATUS"
fi
rm -rf node_modules
mkdir -p node_modules/a node_modules/http
printf '{"name": "a", "version": "%s"}' "$FAKE_NPM_VERSION" > node_modules/a/package.json
"""


class EnsureNodeModulesTests(SynchronousTestCase):
    """L{ensure_node_modules} runs C{npm ci} exactly when the install does not match the lock."""

    def setUp(self) -> None:
        self.project = scratch(self)
        self.project.mkdir()
        lock = {
            "name": "p",
            "lockfileVersion": 3,
            "packages": {
                "": {"name": "p"},
                "empty-http": {"name": "http", "version": "0.0.0-empty"},
                "node_modules/a": {"version": "1.0.0"},
                "node_modules/http": {"resolved": "empty-http", "link": True},
            },
        }
        (self.project / "package-lock.json").write_text(json.dumps(lock))
        self.log = self.project.parent / "npm.log"
        self.npm = self.project.parent / "npm"
        self.npm.write_text(FAKE_NPM)
        self.npm.chmod(0o755)
        self.setenv("FAKE_NPM_LOG", str(self.log))
        self.setenv("FAKE_NPM_VERSION", "1.0.0")

    def setenv(self, name: str, value: str) -> None:
        """Set a real environment variable (inherited by npm) until the end of the test."""
        previous = os.environ.get(name)
        os.environ[name] = value
        if previous is None:
            self.addCleanup(os.environ.pop, name, None)
        else:
            self.addCleanup(os.environ.__setitem__, name, previous)

    def calls(self) -> list[str]:
        """The fake npm's recorded invocations."""
        return self.log.read_text().splitlines() if self.log.exists() else []

    def install(self, version: str) -> None:
        """Pretend an earlier install put package "a" in C{version}."""
        (self.project / "node_modules" / "a").mkdir(parents=True)
        (self.project / "node_modules" / "http").mkdir()
        (self.project / "node_modules" / "a" / "package.json").write_text(json.dumps({"version": version}))

    def test_missing_install_runs_npm_ci(self) -> None:
        """Without node_modules, C{npm ci} runs once in the project directory."""
        modules = ensure_node_modules(self.project, npm=str(self.npm))
        self.assertEqual(modules, self.project.resolve() / "node_modules")
        self.assertEqual(self.calls(), [f"{self.project.resolve()} ci --no-audit --no-fund"])

    def test_fresh_install_is_reused(self) -> None:
        """An install that matches the lock file (e.g. made by CI) is used as it is."""
        self.install("1.0.0")
        ensure_node_modules(self.project, npm=str(self.npm))
        self.assertEqual(self.calls(), [])

    def test_stale_install_is_replaced(self) -> None:
        """A package in another version than the lock file says triggers C{npm ci}."""
        self.install("0.9.0")
        ensure_node_modules(self.project, npm=str(self.npm))
        self.assertEqual(len(self.calls()), 1)

    def test_npm_failure(self) -> None:
        """A failing C{npm ci} raises an error carrying npm's exit status and output."""
        self.setenv("FAKE_NPM_STATUS", "1")
        with self.assertRaises(NodeHarnessError) as caught:
            ensure_node_modules(self.project, npm=str(self.npm))
        self.assertIn("exit status 1", str(caught.exception))
        self.assertIn("ETARGET", str(caught.exception))

    def test_install_still_wrong(self) -> None:
        """If C{npm ci} succeeds but the lock is still not satisfied, that is an error too."""
        self.setenv("FAKE_NPM_VERSION", "2.0.0")
        with self.assertRaises(NodeHarnessError) as caught:
            ensure_node_modules(self.project, npm=str(self.npm))
        self.assertIn("node_modules/a is 2.0.0", str(caught.exception))

    def test_missing_npm(self) -> None:
        """Without npm the error says so."""
        with self.assertRaises(NodeHarnessError) as caught:
            ensure_node_modules(self.project, npm=str(self.project / "no-such-npm"))
        self.assertIn("could not run", str(caught.exception))


class ScriptCommandLineTests(NodeTestCase):
    """Every script loads its npm client, documents itself, and refuses bad arguments."""

    async def test_help(self) -> None:
        """C{--help} prints usage on stdout and exits 0 (which also proves the npm clients load)."""
        for script in sorted(SCRIPTS):
            process = self.spawn(script, "--help")
            self.assertEqual(await process.exited(), 0, process.describe())
            self.assertEqual(process.events, [])

    async def test_bad_arguments(self) -> None:
        """Argument errors exit 2 with a message on stderr and nothing on stdout."""
        cases = [
            ("ws-listener.js", ["--unknown"], "Unknown option"),
            ("ws-listener.js", ["--token", "t"], "give either --uri"),
            ("ws-listener.js", ["--uri", "ws://x/$hc/h?sb-hc-action=listen"], "needs a token"),
            ("ws-listener.js", ["--uri", "ws://x/", "--token", "t", "--behaviour", "dance"], "--behaviour"),
            ("ws-listener.js", ["--uri", "ws://x/", "--token", "t", "--renew-interval-ms", "5"], "function"),
            ("ws-sender.js", ["--uri", "ws://x/", "--message", "blob:3"], "--message"),
            ("ws-sender.js", ["--uri", "ws://x/", "--expect", "-1"], "--expect"),
            ("ws-sender.js", ["--uri", "ws://x/", "--namespace", "ns", "--path", "p"], "give either"),
            ("https-listener.js", ["--uri", "ws://x/", "--token", "t", "--respond", "maybe"], "--respond"),
            (
                "https-listener.js",
                ["--uri", "ws://x/", "--token", "t", "--body-size", "3"],
                "--respond fixed",
            ),
            ("http-sender.js", ["--url", "ftp://x/"], "http://"),
            ("http-sender.js", ["--url", "http://x/", "--chunked"], "--chunked"),
            ("http-sender.js", ["--url", "http://x/", "--key", "k"], "--key-name and --key"),
        ]
        for script, args, message in cases:
            process = self.spawn(script, *args)
            self.assertEqual(await process.exited(), 2, process.describe())
            self.assertIn(message, process.stderr.decode(), process.describe())
            self.assertEqual(process.events, [])

    async def test_event_timeout_names_the_event(self) -> None:
        """Waiting for an event that never comes fails with the event's name and the script's output."""
        relay = RelayDouble()
        await relay.start(self)
        listener = self.spawn(
            "ws-listener.js", "--uri", relay.uri("hyco", "sb-hc-action=listen"), "--token", "t"
        )
        await listener.event("online")
        with self.assertRaises(NodeHarnessError) as caught:
            await listener.event("message", timeout=0.2)
        self.assertIn("'message'", str(caught.exception))
        self.assertIn('"online"', str(caught.exception))

    async def test_exit_fails_waiters(self) -> None:
        """A script that ends while a test waits makes the wait fail at once with its exit status."""
        process = self.spawn("http-sender.js", "--url", "http://127.0.0.1:9/", "--timeout-ms", "5000")
        with self.assertRaises(NodeScriptExited) as caught:
            await process.event("response")
        self.assertIn("exited with 1", str(caught.exception))
        self.assertEqual(process.named("error")[0]["code"], "ECONNREFUSED")


# ------------------------------------------------------------------------------------------------
# hyco-ws listener
# ------------------------------------------------------------------------------------------------


class WebSocketListenerTests(NodeTestCase):
    """C{ws-listener.js} registers with hyco-ws, follows accepts, and serves the sender's socket."""

    async def start_listener(self, relay: RelayDouble, *args: str, **kwargs: Any) -> tuple[NodeScript, str]:
        """Start a listener on HC C{hyco} of the double; return it and the token it presents."""
        token = sas_token("http://127.0.0.1/hyco")
        listener = self.spawn(
            "ws-listener.js",
            "--uri",
            relay.uri("hyco", "sb-hc-action=listen"),
            "--token",
            token,
            *args,
            **kwargs,
        )
        await listener.event("online")
        return listener, token

    def accept(self, relay: RelayDouble, control: DoubleConnection, **headers: str) -> dict[str, Any]:
        """Send an accept for a pretend sender to C{control}; return its body."""
        connection_id = str(uuid.uuid4())
        accept = {
            "address": relay.uri("hyco/suffix", f"x=1&sb-hc-action=accept&sb-hc-id={connection_id}"),
            "id": connection_id,
            "connectHeaders": {
                "Host": "relay.example",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
                **headers,
            },
            "remoteEndpoint": {"address": "203.0.113.7", "port": 51234},
        }
        control.send_json({"accept": accept})
        return accept

    async def test_echo(self) -> None:
        """The listener upgrades to the accept address verbatim, without a token, and echoes by type."""
        relay = RelayDouble()
        await relay.start(self)
        listener, token = await self.start_listener(relay)
        control = await relay.connection("listen")
        assert control.request is not None
        self.assertEqual(header(control.request, "ServiceBusAuthorization"), token)

        accept = self.accept(relay, control, **{"Sec-WebSocket-Protocol": "chat, superchat", "X-App": "v"})
        rendezvous = await relay.connection("accept")
        assert rendezvous.request is not None
        self.assertEqual(rendezvous.request.path, "/$hc/hyco/suffix")
        self.assertEqual(rendezvous.request.params["sb-hc-id"], [accept["id"]])
        self.assertEqual(rendezvous.request.params["x"], ["1"])
        self.assertIsNone(header(rendezvous.request, "ServiceBusAuthorization"))
        self.assertEqual(rendezvous.request.protocols, ["chat"])

        reported = await listener.event("accept")
        self.assertEqual(reported["id"], accept["id"])
        self.assertEqual(reported["connect_headers"]["X-App"], "v")
        self.assertEqual(reported["remote_endpoint"], {"address": "203.0.113.7", "port": 51234})
        opened = await listener.event("open", id=accept["id"])
        self.assertEqual(opened["protocol"], "chat")
        self.assertEqual(opened["url"], accept["address"])

        big = payload("binary", 300_000, "echo", 1)
        rendezvous.sendMessage(b"hello", isBinary=False)
        rendezvous.sendMessage(big, isBinary=True)
        self.assertEqual(await rendezvous.next_message(), (b"hello", False))
        self.assertEqual(await rendezvous.next_message(), (big, True))
        first = await listener.event("message", index=0)
        self.assertEqual((first["type"], first["text"], first["conn"]), ("text", "hello", 1))
        second = await listener.event("message", index=1)
        self.assertEqual(
            (second["type"], second["length"], second["sha256"]), ("binary", 300_000, sha256_hex(big))
        )

        rendezvous.sendClose(1000, "done")
        closed = await listener.event("close", id=accept["id"])
        self.assertEqual((closed["code"], closed["reason"]), (1000, "done"))

    async def test_aborted_close_reads_as_1006(self) -> None:
        """
        ws 1.1.5 reports 1006 when the server aborts TCP right after the closing handshake.

        Stock Autobahn servers do that after a close they initiated, so a relay built on Autobahn
        must drop such connections gracefully or hyco-ws applications never see the close code.
        """
        relay = RelayDouble()
        relay.abort_after_close = True
        await relay.start(self)
        listener, _ = await self.start_listener(relay)
        control = await relay.connection("listen")
        self.accept(relay, control)
        rendezvous = await relay.connection("accept")
        await listener.event("open")
        rendezvous.sendClose(4002, "going")
        closed = await listener.event("close")
        self.assertEqual((closed["code"], closed["reason"]), (1006, "going"))

    async def test_close_command(self) -> None:
        """The C{close} stdin command closes the control channel through the library and exits 0."""
        relay = RelayDouble()
        await relay.start(self)
        listener, _ = await self.start_listener(relay)
        control = await relay.connection("listen")
        listener.command("close")
        await listener.event("closed")
        self.assertEqual(await listener.exited(), 0)
        code, _ = await within(control.closed)
        self.assertIn(code, (1000, 1005))

    async def test_close_after(self) -> None:
        """With C{--close-after 2} the listener closes with the given code and reason after two messages."""
        relay = RelayDouble()
        await relay.start(self)
        listener, _ = await self.start_listener(
            relay, "--close-after", "2", "--close-code", "4000", "--close-reason", "enough"
        )
        control = await relay.connection("listen")
        self.accept(relay, control)
        rendezvous = await relay.connection("accept")
        rendezvous.sendMessage(b"one", isBinary=False)
        rendezvous.sendMessage(b"two", isBinary=True)
        self.assertEqual(await rendezvous.next_message(), (b"one", False))
        self.assertEqual(await rendezvous.next_message(), (b"two", True))
        self.assertEqual(await within(rendezvous.closed), (4000, "enough"))
        await listener.event("closing", code=4000, reason="enough")
        self.assertEqual(len(listener.named("message")), 2)

    async def test_reject(self) -> None:
        """C{--behaviour reject} upgrades to the accept address with sb-hc-statusCode/-Description."""
        relay = RelayDouble()
        await relay.start(self)
        listener, _ = await self.start_listener(
            relay, "--behaviour", "reject", "--reject-status", "403", "--reject-description", "Not today"
        )
        control = await relay.connection("listen")
        accept = self.accept(relay, control)
        rejected = await within(relay.rejects.get())
        self.assertEqual(rejected.params["sb-hc-statusCode"], ["403"])
        self.assertEqual(rejected.params["sb-hc-statusDescription"], ["Not today"])
        self.assertEqual(rejected.params["sb-hc-id"], [accept["id"]])
        reported = await listener.event("rejected")
        self.assertEqual((reported["id"], reported["relay_status"]), (accept["id"], 410))
        self.assertEqual(listener.named("open"), [])

    async def test_reject_plain_style(self) -> None:
        """C{--reject-style plain} uses the unprefixed names the library's dead code would have used."""
        relay = RelayDouble()
        await relay.start(self)
        listener, _ = await self.start_listener(relay, "--behaviour", "reject", "--reject-style", "plain")
        control = await relay.connection("listen")
        self.accept(relay, control)
        rejected = await within(relay.rejects.get())
        self.assertEqual(rejected.params["statusCode"], ["401"])
        self.assertEqual(rejected.params["statusDescription"], ["Rejected by listener"])
        await listener.event("rejected", relay_status=410)

    async def test_slow_reader(self) -> None:
        """
        With C{--pause-on-open} the listener stops reading until the C{resume} command.

        Meanwhile the relay's writes back up: its producer is paused and stays paused. After the
        command the producer resumes and the whole message arrives intact.
        """
        relay = RelayDouble()
        await relay.start(self)
        listener, _ = await self.start_listener(relay, "--pause-on-open", "--behaviour", "sink")
        control = await relay.connection("listen")
        self.accept(relay, control)
        rendezvous = await relay.connection("accept")
        await listener.event("paused", why="open")

        producer = RecordingProducer()
        rendezvous.transport.registerProducer(producer, True)
        self.addCleanup(rendezvous.transport.unregisterProducer)
        data = payload("binary", 32 * 1024 * 1024, "slow", 0)
        rendezvous.sendMessage(data, isBinary=True)
        self.assertEqual(producer.calls, ["pause"])
        await sleep(0.5)
        self.assertEqual(producer.calls, ["pause"])
        self.assertEqual(listener.named("message"), [])

        listener.command("resume")
        await listener.event("resumed")
        received = await listener.event("message", timeout=60)
        self.assertEqual((received["length"], received["sha256"]), (len(data), sha256_hex(data)))
        self.assertEqual(producer.calls, ["pause", "resume"])

    async def test_token_function_renews(self) -> None:
        """
        With a token function and a short renewal interval the library sends renewToken messages.

        The tokens the library generates, at connect and on renewal, are valid for the relay's own
        validator.
        """
        relay = RelayDouble()
        await relay.start(self)
        listener = self.spawn(
            "ws-listener.js",
            "--uri",
            relay.uri("hyco", "sb-hc-action=listen"),
            "--key-name",
            KEY_NAME,
            "--token-mode",
            "function",
            "--renew-interval-ms",
            "300",
            "--token-ttl",
            "60",
            env={"HC_KEY": KEY},
        )
        await listener.event("online")
        control = await relay.connection("listen")
        assert control.request is not None
        first = header(control.request, "ServiceBusAuthorization")
        assert first is not None
        check_token(self, first)
        self.assertIn("sr=http%3A%2F%2F127.0.0.1%3A", first)
        payload_bytes, is_binary = await control.next_message()
        self.assertFalse(is_binary)
        renewed = json.loads(payload_bytes)["renewToken"]["token"]
        check_token(self, renewed)
        await listener.event("token", purpose="connect", mode="function")
        renewal = await listener.event("token", purpose="renew")
        self.assertGreater(renewal["expires"], time.time() + 30)

    async def test_uri_helper(self) -> None:
        """With C{--namespace}/C{--path} the listener uses createRelayListenUri, which forces port 443."""
        listener = self.spawn(
            "ws-listener.js", "--namespace", "relay.invalid", "--path", "hyco", "--token", "t"
        )
        started = await listener.event("starting")
        self.assertEqual(started["uri"], "wss://relay.invalid:443/$hc/hyco?sb-hc-action=listen")

    async def test_wss_with_development_ca(self) -> None:
        """
        Over TLS the listener trusts a relay.certs CA given through NODE_EXTRA_CA_CERTS.

        The library has no TLS options; the variable covers the control channel and the rendezvous.
        """
        cert = issue_server_certificate(scratch(self), ["localhost", "127.0.0.1"])
        relay = RelayDouble()
        await relay.start(self, tls=cert)
        listener, _ = await self.start_listener(relay, ca_file=cert.ca_path)
        control = await relay.connection("listen")
        self.accept(relay, control)
        rendezvous = await relay.connection("accept")
        rendezvous.sendMessage(b"secure", isBinary=False)
        self.assertEqual(await rendezvous.next_message(), (b"secure", False))
        await listener.event("message", text="secure")

    async def test_wss_without_ca_fails(self) -> None:
        """Without the CA, the same TLS listener cannot connect (so the CA is what makes it work)."""
        cert = issue_server_certificate(scratch(self), ["localhost"])
        relay = RelayDouble()
        await relay.start(self, tls=cert)
        listener = self.spawn(
            "ws-listener.js",
            "--uri",
            relay.uri("hyco", "sb-hc-action=listen"),
            "--token",
            "t",
            env={"NODE_EXTRA_CA_CERTS": ""},
        )
        failed = await listener.event("error", where="control")
        self.assertIn("certificate", failed["message"])
        self.assertEqual(listener.named("online"), [])


# ------------------------------------------------------------------------------------------------
# hyco-ws sender
# ------------------------------------------------------------------------------------------------


class WebSocketSenderTests(NodeTestCase):
    """C{ws-sender.js} connects like hyco-ws users do and reports what comes back."""

    async def test_messages_round_trip(self) -> None:
        """
        The sender sends deterministic messages and reports their echoes with their types.

        A C{bulk:} message is the bulk payload (L{bulk_chunks}), sent as binary. It offers the subprotocols,
        headers, id and token given, and closes normally at the end.
        """
        relay = RelayDouble()
        relay.echo = True
        await relay.start(self)
        token = sas_token("http://127.0.0.1/hyco")
        specs = ["literal:hello", "binary:100000", "text:70000", "binary:0", "bulk:200000"]
        sender = self.spawn(
            "ws-sender.js",
            "--uri",
            relay.uri("hyco/sfx", "a=1&sb-hc-action=connect"),
            "--id",
            "my-trace-id",
            "--token",
            token,
            "--protocol",
            "chat",
            "--protocol",
            "superchat",
            "--header",
            "X-App: yes",
            *[arg for spec in specs for arg in ("--message", spec)],
        )
        connection = await relay.connection("connect")
        assert connection.request is not None
        self.assertEqual(connection.request.path, "/$hc/hyco/sfx")
        self.assertEqual(connection.request.params["sb-hc-id"], ["my-trace-id"])
        self.assertEqual(connection.request.params["a"], ["1"])
        self.assertNotIn("sb-hc-token", connection.request.params)
        self.assertEqual(header(connection.request, "ServiceBusAuthorization"), token)
        self.assertEqual(header(connection.request, "X-App"), "yes")
        self.assertEqual(connection.request.protocols, ["chat", "superchat"])

        opened = await sender.event("open")
        self.assertEqual(opened["protocol"], "chat")
        expected = [
            (b"hello", "text"),
            (payload("binary", 100000, index=1), "binary"),
            (payload("text", 70000, index=2), "text"),
            (b"", "binary"),
            (b"".join(bulk_chunks(200000, index=4)), "binary"),
        ]
        for index, (data, kind) in enumerate(expected):
            self.assertEqual(await connection.next_message(), (data, kind == "binary"))
            sent = await sender.event("sent", index=index)
            echoed = await sender.event("message", index=index)
            for event in (sent, echoed):
                self.assertEqual(
                    (event["type"], event["length"], event["sha256"]), (kind, len(data), sha256_hex(data))
                )
        closed = await sender.event("close")
        self.assertEqual((closed["code"], closed["received"]), (1000, 5))
        self.assertEqual(await within(connection.closed), (1000, None))
        self.assertEqual(await sender.exited(), 0)

    async def test_token_in_query(self) -> None:
        """C{--token-in query} puts the token in sb-hc-token and not in a header."""
        relay = RelayDouble()
        relay.echo = True
        await relay.start(self)
        token = sas_token("http://127.0.0.1/hyco")
        sender = self.spawn(
            "ws-sender.js",
            "--uri",
            relay.uri("hyco", "sb-hc-action=connect"),
            "--token",
            token,
            "--token-in",
            "query",
        )
        connection = await relay.connection("connect")
        assert connection.request is not None
        self.assertEqual(connection.request.params["sb-hc-token"], [token])
        self.assertIsNone(header(connection.request, "ServiceBusAuthorization"))
        self.assertEqual(await sender.exited(), 0)

    async def test_upgrade_failure(self) -> None:
        """A refused upgrade is reported with its HTTP status and reason, and exits 0."""
        relay = RelayDouble()
        relay.deny["connect"] = (404, "No listener")
        await relay.start(self)
        sender = self.spawn(
            "ws-sender.js", "--uri", relay.uri("hyco", "sb-hc-action=connect"), "--message", "text:5"
        )
        failed = await sender.event("upgrade-failed")
        self.assertEqual((failed["status"], failed["status_message"]), (404, "No listener"))
        self.assertEqual(await sender.exited(), 0)
        self.assertEqual(sender.named("open"), [])

    async def test_peer_close(self) -> None:
        """With C{--wait-for-close} the sender reports the code and reason its peer closed with."""
        relay = RelayDouble()
        relay.close_after = [4001, "bye", 1]
        await relay.start(self)
        sender = self.spawn(
            "ws-sender.js",
            "--uri",
            relay.uri("hyco", "sb-hc-action=connect"),
            "--message",
            "literal:x",
            "--wait-for-close",
        )
        closed = await sender.event("close")
        self.assertEqual((closed["code"], closed["reason"]), (4001, "bye"))
        self.assertEqual(await sender.exited(), 0)

    async def test_uri_helper(self) -> None:
        """With C{--namespace} the sender builds createRelaySendUri(ns, path, token, id) (port 443)."""
        sender = self.spawn(
            "ws-sender.js",
            "--namespace",
            "relay.invalid",
            "--path",
            "hyco",
            "--id",
            "abc",
            "--token",
            "t k",
            "--token-in",
            "query",
        )
        connecting = await sender.event("connecting")
        self.assertEqual(
            connecting["uri"],
            "wss://relay.invalid:443/$hc/hyco?sb-hc-action=connect&sb-hc-token=t%20k&sb-hc-id=abc",
        )


# ------------------------------------------------------------------------------------------------
# hyco-https listener
# ------------------------------------------------------------------------------------------------


class HttpsListenerTests(NodeTestCase):
    """C{https-listener.js} answers the relay's request messages as hyco-https does."""

    async def start_listener(self, relay: RelayDouble, *args: str) -> tuple[NodeScript, DoubleConnection]:
        """Start a listener on the double's HC C{hyco}; return it and its control channel."""
        listener = self.spawn(
            "https-listener.js",
            "--uri",
            relay.uri("hyco", "sb-hc-action=listen"),
            "--token",
            sas_token("http://127.0.0.1/hyco"),
            *args,
        )
        await listener.event("online")
        return listener, await relay.connection("listen")

    def request(self, relay: RelayDouble, **fields: Any) -> dict[str, Any]:
        """A request body with a fresh id and rendezvous address."""
        request_id = str(uuid.uuid4())
        return {
            "address": relay.uri("hyco", f"sb-hc-action=request&sb-hc-id={request_id}"),
            "id": request_id,
            **fields,
        }

    async def test_small_request_echo(self) -> None:
        """A request with its body on the control channel is answered there: JSON, then one binary body."""
        relay = RelayDouble()
        await relay.start(self)
        listener, control = await self.start_listener(relay)
        request = self.request(
            relay,
            requestTarget="/hyco/api?x=1",
            method="POST",
            requestHeaders={"Content-Type": "application/json", "X-Test": "1"},
            remoteEndpoint={"address": "203.0.113.7", "port": 1},
            body=True,
        )
        control.send_json({"request": request})
        control.sendMessage(b'{"a": 1}', isBinary=True)
        text, is_binary = await control.next_message()
        self.assertFalse(is_binary)
        response = json.loads(text)["response"]
        self.assertEqual(response["requestId"], request["id"])
        self.assertEqual(
            (response["statusCode"], response["statusDescription"], response["body"]), (200, "OK", True)
        )
        self.assertEqual(response["responseHeaders"], {"content-type": "application/json"})
        self.assertEqual(await control.next_message(), (b'{"a": 1}', True))
        seen = await listener.event("request")
        self.assertEqual((seen["method"], seen["url"], seen["channel"]), ("POST", "/hyco/api?x=1", "control"))
        self.assertEqual(seen["headers"]["x-test"], "1")
        self.assertEqual(seen["sha256"], sha256_hex(b'{"a": 1}'))
        responded = await listener.event("responded")
        self.assertEqual((responded["channel"], responded["id"]), ("control", request["id"]))

    async def test_fixed_response(self) -> None:
        """C{--respond fixed} sends the given status line, headers and text body."""
        relay = RelayDouble()
        await relay.start(self)
        _, control = await self.start_listener(
            relay,
            "--respond",
            "fixed",
            "--status",
            "201",
            "--status-text",
            "Made It",
            "--header",
            "X-Reply: yes",
            "--body-text",
            "created",
        )
        control.send_json(
            {
                "request": self.request(
                    relay, requestTarget="/hyco", method="GET", requestHeaders={}, body=False
                )
            }
        )
        response = json.loads((await control.next_message())[0])["response"]
        self.assertEqual((response["statusCode"], response["statusDescription"]), (201, "Made It"))
        self.assertEqual(response["responseHeaders"], {"x-reply": "yes"})
        self.assertEqual(await control.next_message(), (b"created", True))

    async def test_large_response_uses_rendezvous(self) -> None:
        """A response over 64 kB written in chunks goes over a rendezvous to the request's address."""
        relay = RelayDouble()
        await relay.start(self)
        listener, control = await self.start_listener(
            relay, "--respond", "fixed", "--body-size", "100000", "--chunk-size", "10240"
        )
        request = self.request(relay, requestTarget="/hyco/big", method="GET", requestHeaders={}, body=False)
        control.send_json({"request": request})
        rendezvous = await relay.connection("request")
        assert rendezvous.request is not None
        self.assertEqual(rendezvous.request.params["sb-hc-id"], [request["id"]])
        response = json.loads((await rendezvous.next_message())[0])["response"]
        self.assertEqual((response["requestId"], response["body"]), (request["id"], True))
        self.assertEqual(await rendezvous.next_message(), (payload("binary", 100000), True))
        responded = await listener.event("responded")
        self.assertEqual(
            (responded["channel"], responded["writes"], responded["length"]), ("rendezvous", 10, 100000)
        )

    async def test_rendezvous_request(self) -> None:
        """
        A rendezvous-only request (address and id only) makes the listener dial the address.

        The full request and body sent over that socket are answered on it.
        """
        relay = RelayDouble()
        await relay.start(self)
        listener, control = await self.start_listener(relay)
        announced = self.request(relay)
        control.send_json({"request": announced})
        rendezvous = await relay.connection("request")
        await listener.event("rendezvous")
        body = payload("binary", 200_000, "upload", 0)
        full = dict(
            announced,
            requestTarget="/hyco/upload",
            method="PUT",
            requestHeaders={"Content-Type": "x/y"},
            body=True,
        )
        rendezvous.send_json({"request": full})
        rendezvous.sendMessage(body, isBinary=True)
        response = json.loads((await rendezvous.next_message())[0])["response"]
        self.assertEqual((response["requestId"], response["statusCode"]), (announced["id"], 200))
        self.assertEqual(await rendezvous.next_message(), (body, True))
        seen = await listener.event("request")
        self.assertEqual((seen["method"], seen["channel"], seen["length"]), ("PUT", "rendezvous", 200_000))

    async def test_keep_alive_pongs(self) -> None:
        """C{--keep-alive-ms} makes the library send unsolicited pong frames on the control channel."""
        relay = RelayDouble()
        await relay.start(self)
        _, control = await self.start_listener(relay, "--keep-alive-ms", "100")
        await sleep(0.65)
        self.assertGreaterEqual(control.pongs, 3)

    async def test_never_responds(self) -> None:
        """C{--respond never} reports the request and sends nothing back."""
        relay = RelayDouble()
        await relay.start(self)
        listener, control = await self.start_listener(relay, "--respond", "never")
        control.send_json(
            {
                "request": self.request(
                    relay, requestTarget="/hyco", method="GET", requestHeaders={}, body=False
                )
            }
        )
        await listener.event("request")
        await sleep(0.3)
        self.assertEqual(control.messages.pending, [])
        self.assertEqual(listener.named("responded"), [])

    async def test_accept_crashes_the_library(self) -> None:
        """
        hyco-https 1.4.5 dies on an accept message ("Extensions is not defined").

        The script reports that as a fatal event and exit status 70, so e2e tests can assert that the
        relay survives it.
        """
        relay = RelayDouble()
        await relay.start(self)
        listener, control = await self.start_listener(relay)
        control.send_json(
            {
                "accept": {
                    "address": relay.uri("hyco", "sb-hc-action=accept&sb-hc-id=1"),
                    "id": "1",
                    "connectHeaders": {
                        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                        "Sec-WebSocket-Version": "13",
                    },
                }
            }
        )
        fatal = await listener.event("fatal")
        self.assertIn("Extensions is not defined", fatal["message"])
        self.assertEqual(await listener.exited(), 70)


# ------------------------------------------------------------------------------------------------
# HTTP sender
# ------------------------------------------------------------------------------------------------


class TrackedChannel(HTTPChannel):
    """An HTTP connection that reports itself to its site's L{Connections}."""

    @override
    def connectionMade(self) -> None:
        self.site.connections.add(self)
        super().connectionMade()

    @override
    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.site.connections.discard(self)


async def serve_http(
    testcase: TestCase, resource: Resource, description: str = "tcp:0:interface=127.0.0.1"
) -> int:
    """Serve C{resource} over HTTP(S) on a free loopback port until cleanup."""
    site = Site(resource)
    site.protocol = TrackedChannel
    site.connections = Connections()  # type: ignore[attr-defined]
    return await serve(testcase, site, site.connections, description)  # type: ignore[attr-defined]


class EchoResource(Resource):
    """Answer every request with its own body, recording what arrived."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, Any]] = []

    @override
    def render(self, request: Request) -> bytes:
        body = request.content.read() if request.content is not None else b""
        self.seen.append(
            {
                "method": request.method,
                "uri": request.uri,
                "headers": {
                    k.decode().lower(): [v.decode() for v in vs]
                    for k, vs in request.requestHeaders.getAllRawHeaders()
                },
                "body": body,
                "port": request.getClientAddress().port,  # type: ignore[attr-defined]
            }
        )
        request.setResponseCode(202, b"Taken")
        request.setHeader(b"x-echo", request.method)
        return body


class HttpSenderTests(NodeTestCase):
    """C{http-sender.js} sends plain HTTP(S) requests and reports the responses."""

    async def test_keep_alive_sequence(self) -> None:
        """
        Requests go out in order over one keep-alive connection.

        They carry the token header, extra headers and deterministic bodies; each response is
        reported with status, headers and body digest.
        """
        resource = EchoResource()
        port = await serve_http(self, resource)
        token = sas_token("http://127.0.0.1/hyco")
        sender = self.spawn(
            "http-sender.js",
            "--url",
            f"http://127.0.0.1:{port}/hyco/a?x=1",
            "--url",
            f"http://127.0.0.1:{port}/hyco/b",
            "--body-size",
            "70000",
            "--token",
            token,
            "--header",
            "X-A: 1",
        )
        self.assertEqual(await sender.exited(), 0, sender.describe())
        self.assertEqual([s["uri"] for s in resource.seen], [b"/hyco/a?x=1", b"/hyco/b"])
        self.assertEqual(resource.seen[0]["port"], resource.seen[1]["port"])
        for index, seen in enumerate(resource.seen):
            self.assertEqual(seen["method"], b"POST")
            self.assertEqual(seen["body"], payload("binary", 70000, index=index))
            self.assertEqual(seen["headers"]["servicebusauthorization"], [token])
            self.assertEqual(seen["headers"]["x-a"], ["1"])
        responses = sender.named("response")
        self.assertEqual([r["index"] for r in responses], [0, 1])
        self.assertEqual(responses[0]["local_port"], responses[1]["local_port"])
        self.assertEqual(responses[0]["local_port"], resource.seen[0]["port"])
        for index, response in enumerate(responses):
            self.assertEqual((response["status"], response["status_message"]), (202, "Taken"))
            self.assertEqual(response["headers"]["x-echo"], "POST")
            self.assertEqual(response["sha256"], sha256_hex(payload("binary", 70000, index=index)))

    async def test_new_connections_and_count(self) -> None:
        """C{--count} repeats the list; C{--new-connection} opens a connection per request."""
        resource = EchoResource()
        port = await serve_http(self, resource)
        sender = self.spawn(
            "http-sender.js",
            "--url",
            f"http://127.0.0.1:{port}/hyco",
            "--count",
            "3",
            "--new-connection",
            "--method",
            "DELETE",
            "--token",
            "tok",
            "--token-in",
            "authorization",
        )
        self.assertEqual(await sender.exited(), 0, sender.describe())
        self.assertEqual([seen["method"] for seen in resource.seen], [b"DELETE"] * 3)
        self.assertEqual(len({seen["port"] for seen in resource.seen}), 3)
        self.assertEqual(resource.seen[0]["headers"]["authorization"], ["tok"])
        self.assertEqual([r["index"] for r in sender.named("response")], [0, 1, 2])

    async def test_chunked_upload_and_query_token(self) -> None:
        """C{--chunked} streams the body without Content-Length; C{--token-in query} uses sb-hc-token."""
        resource = EchoResource()
        port = await serve_http(self, resource)
        sender = self.spawn(
            "http-sender.js",
            "--url",
            f"http://127.0.0.1:{port}/hyco",
            "--body-text",
            "abcdefghij",
            "--chunked",
            "--chunk-size",
            "3",
            "--chunk-delay-ms",
            "20",
            "--token",
            "tok en",
            "--token-in",
            "query",
        )
        self.assertEqual(await sender.exited(), 0, sender.describe())
        (seen,) = resource.seen
        self.assertEqual(seen["body"], b"abcdefghij")
        self.assertEqual(seen["uri"], b"/hyco?sb-hc-token=tok+en")
        self.assertEqual(seen["headers"]["transfer-encoding"], ["chunked"])
        self.assertNotIn("content-length", seen["headers"])
        self.assertNotIn("servicebusauthorization", seen["headers"])
        self.assertEqual((await sender.event("response"))["text"], "abcdefghij")

    async def test_https_with_development_ca(self) -> None:
        """Over HTTPS the sender trusts a relay.certs CA through NODE_EXTRA_CA_CERTS."""
        cert = issue_server_certificate(scratch(self), ["localhost"])
        resource = EchoResource()
        port = await serve_http(self, resource, cert.endpoint_description(0, interface="127.0.0.1"))
        sender = self.spawn("http-sender.js", "--url", f"https://localhost:{port}/hyco", ca_file=cert.ca_path)
        self.assertEqual(await sender.exited(), 0, sender.describe())
        self.assertEqual((await sender.event("response"))["status"], 202)

    async def test_https_with_ca_option(self) -> None:
        """C{--ca} trusts a CA file without the environment variable."""
        cert = issue_server_certificate(scratch(self), ["localhost"])
        port = await serve_http(self, EchoResource(), cert.endpoint_description(0, interface="127.0.0.1"))
        sender = self.spawn(
            "http-sender.js",
            "--url",
            f"https://localhost:{port}/hyco",
            "--ca",
            str(cert.ca_path),
            env={"NODE_EXTRA_CA_CERTS": ""},
        )
        self.assertEqual(await sender.exited(), 0, sender.describe())

    async def test_https_untrusted(self) -> None:
        """Without the CA the HTTPS request fails certificate verification and the sender exits 1."""
        cert = issue_server_certificate(scratch(self), ["localhost"])
        port = await serve_http(self, EchoResource(), cert.endpoint_description(0, interface="127.0.0.1"))
        sender = self.spawn(
            "http-sender.js", "--url", f"https://localhost:{port}/hyco", env={"NODE_EXTRA_CA_CERTS": ""}
        )
        self.assertEqual(await sender.exited(), 1)
        failed = await sender.event("error")
        self.assertIn("certificate", failed["message"])


class ProtocolDoubleTests(SynchronousTestCase):
    """The double itself: what it answers without any client involved."""

    def test_reject_parameters_are_case_insensitive(self) -> None:
        """Upgrades to an accept address with either reject spelling get 410, others are accepted."""
        relay = RelayDouble()
        factory = RelayDoubleFactory(relay)
        for params, denied in (
            ({"sb-hc-action": ["accept"], "sb-hc-statusCode": ["401"]}, True),
            ({"sb-hc-action": ["accept"], "statusCode": ["401"]}, True),
            ({"sb-hc-action": ["accept"]}, False),
        ):
            protocol = factory.buildProtocol(None)
            request = ConnectionRequest(
                peer="tcp:127.0.0.1:1",
                headers={},
                host="localhost",
                path="/$hc/hyco",
                params=params,
                version=13,
                origin=None,
                protocols=[],
                extensions=[],
            )
            if denied:
                with self.assertRaises(ConnectionDeny) as caught:
                    protocol.onConnect(request)
                self.assertEqual(caught.exception.code, 410)
            else:
                self.assertIsNone(protocol.onConnect(request))
