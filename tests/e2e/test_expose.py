"""
End-to-end tests of C{relay expose} in front of a local twisted.web server.

The real command runs in a subprocess; curl, requests, treq and Node are the senders.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.server import Site

from .gateway import RunningGateway, start_gateway
from .localapp import local_app
from .nodeharness import ensure_node_modules, require_node, spawn_script
from .senders import SENDERS, Bulk, Curl, Node, Requests, Treq, dumps, sha
from .test_http_node import CONFIG

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024
BIG = 200 * MB
LARGE_MESSAGE_TIMEOUT = 100.0
"""Seconds to wait for each event of the 60 MiB message (see its test; the class allows 240 s in all)."""


def _peak_rss(pid: int) -> int:
    """A process's peak resident memory in bytes (C{VmHWM})."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


class ExposeProcess(ProcessProtocol):
    """A running C{relay expose}: its access log lines (stdout), its notes (stderr), its end."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.stderr = ""
        self.exit_code: int | None = None
        self._buffer = b""
        self._watchers: list[tuple[str, str, Deferred[None]]] = []
        self._ended: list[Deferred[int]] = []

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        self.lines.extend(line.decode() for line in lines)
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.stderr += data.decode("utf-8", "replace")
        self._check()

    def _check(self) -> None:
        for watcher in list(self._watchers):
            where, text, waiting = watcher
            haystack = self.stderr if where == "stderr" else "\n".join(self.lines)
            if text in haystack:
                self._watchers.remove(watcher)
                waiting.callback(None)

    async def wait_for(self, text: str, where: str = "stderr", timeout: float = 30.0) -> None:
        """Wait until C{text} appears on stderr (or in the access log)."""
        waiting: Deferred[None] = Deferred()
        self._watchers.append((where, text, waiting))
        self._check()
        waiting.addTimeout(timeout, reactor)
        try:
            await waiting
        except Exception:
            raise AssertionError(f"no {text!r} on {where}; stderr: {self.stderr[-2000:]}") from None

    def processEnded(self, reason: Failure) -> None:
        self.exit_code = (
            0 if reason.check(ProcessDone) else int(getattr(reason.value, "exitCode", None) or -1)
        )
        for waiter in self._ended:
            waiter.callback(self.exit_code)
        self._ended = []

    def ended(self) -> Deferred[int]:
        waiter: Deferred[int] = Deferred()
        if self.exit_code is not None:
            waiter.callback(self.exit_code)
        else:
            self._ended.append(waiter)
        return waiter

    def signal(self, name: str) -> None:
        if self.exit_code is None and self.transport is not None:
            self.transport.signalProcess(name)


class TrackingSite(Site):
    """A site that knows its open connections, so a test can wait until they are gone."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open: set[Any] = set()

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        site = self
        original = protocol.connectionLost

        def lost(reason: Any = None) -> None:
            site.open.discard(protocol)
            original(reason)

        protocol.connectionLost = lost
        self.open.add(protocol)
        return protocol


class ExposeTests(TestCase):
    """C{relay expose http://127.0.0.1:PORT --name NAME --connection-string ...}."""

    timeout = 240

    def setUp(self) -> None:
        require_node()
        ensure_node_modules()

    async def local_server(self, on_bulk: Any = None) -> str:
        site = TrackingSite(local_app(on_bulk))
        port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]

        async def stop() -> None:
            await port.stopListening()
            for _ in range(100):
                if not site.open:
                    return
                await deferLater(reactor, 0.05)
            for protocol in list(site.open):
                transport = getattr(protocol, "transport", None)
                if transport is not None:  # upgraded WebSocket connections belong to Autobahn now
                    transport.abortConnection()

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        return f"http://127.0.0.1:{port.getHost().port}"

    async def expose(
        self, gateway: RunningGateway | str, local: str, name: str = "hyco", *options: str
    ) -> ExposeProcess:
        connection_string = gateway if isinstance(gateway, str) else gateway.connection_string
        process = ExposeProcess()
        args = [sys.executable, "-m", "relay.cli", "expose", local, "--name", name, *options]
        env = {**os.environ, "RELAY_CONNECTION_STRING": connection_string, "PYTHONPATH": str(ROOT)}
        reactor.spawnProcess(process, sys.executable, args, env=env, path=str(ROOT))  # type: ignore[attr-defined]

        async def stop() -> None:
            process.signal("TERM")
            killer = reactor.callLater(10, process.signal, "KILL")  # type: ignore[attr-defined]
            await process.ended()
            if killer.active():
                killer.cancel()

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        return process

    async def exposed(self, name: str = "hyco") -> tuple[RunningGateway, ExposeProcess, str]:
        gateway = await start_gateway(self, CONFIG)
        local = await self.local_server()
        process = await self.expose(gateway, local, name)
        await process.wait_for("online")
        return gateway, process, local

    def auth(self, gateway: RunningGateway, path: str = "hyco") -> dict[str, str]:
        return {"ServiceBusAuthorization": gateway.token(path)}

    async def test_methods_with_every_sender_and_access_log(self) -> None:
        """Every method from every sender reaches the local server below the name; one log line each."""
        gateway, process, _ = await self.exposed()
        count = 0
        for sender_class in SENDERS:
            sender = sender_class(self)
            for method in ("GET", "POST", "PUT", "DELETE", "HEAD"):
                body = f"{sender.name} {method}".encode() if method in ("POST", "PUT") else None
                url = f"{gateway.http_url}/hyco/echo/{sender.name}?m={method}"
                outcome = await sender.send(
                    url, method, {**self.auth(gateway), "Content-Type": "text/plain"}, body
                )
                count += 1
                self.assertEqual(outcome.status, 200, dumps(outcome))
                self.assertEqual(outcome.sha256, sha(body), dumps(outcome))
                self.assertEqual(outcome.header("x-seen-method"), method)
                self.assertEqual(outcome.header("x-seen-uri"), f"/echo/{sender.name}?m={method}")
                self.assertEqual(outcome.header("x-seen-x-forwarded-for"), "127.0.0.1")
                self.assertEqual(outcome.header("x-seen-x-forwarded-host"), gateway.netloc)
                self.assertEqual(outcome.header("x-seen-via"), "1.1 127.0.0.1")
                self.assertEqual(outcome.header("via"), "1.1 127.0.0.1")
                await process.wait_for(f'"{method} /echo/{sender.name}?m={method}" 200', where="stdout")
        self.assertEqual(len(process.lines), count)

    async def test_200kb_post(self) -> None:
        """200 kB bodies arrive whole at the local server, from each sender."""
        gateway, _, _ = await self.exposed()
        body = Bulk(200 * 1024)
        for sender_class in SENDERS:
            outcome = await sender_class(self).send(
                f"{gateway.http_url}/hyco/sink", "POST", self.auth(gateway), body
            )
            self.assertEqual(outcome.head.decode(), f"{body.length} {body.sha256()}", dumps(outcome))

    async def test_200mb_upload_and_download(self) -> None:
        """200 MB up (curl, Node) and down (treq, requests) through expose; checksums match."""
        gateway, _, _ = await self.exposed()
        expected = Bulk(BIG).sha256()
        for sender in (Curl(self), Node(self)):
            outcome = await sender.send(
                f"{gateway.http_url}/hyco/sink", "POST", self.auth(gateway), Bulk(BIG)
            )
            self.assertEqual(outcome.head.decode(), f"{BIG} {expected}", dumps(outcome))
        for sender in (Treq(self), Requests(self)):
            outcome = await sender.send(f"{gateway.http_url}/hyco/bulk/{BIG}", headers=self.auth(gateway))
            self.assertEqual(
                (outcome.status, outcome.length, outcome.sha256), (200, BIG, expected), dumps(outcome)
            )
            self.assertEqual(outcome.header("content-length"), str(BIG))

    async def test_100_concurrent_requests(self) -> None:
        """100 requests at once through expose, all answered."""
        gateway, _, _ = await self.exposed()
        node = spawn_script(
            self,
            "http-sender.js",
            ["--url", f"{gateway.http_url}/hyco/echo", "--count", "100", "--parallel", "--token", gateway.token("hyco"),
             "--body-text", "pong"],
        )  # fmt: skip
        self.assertEqual(await node.exited(timeout=120), 0, node.describe())
        self.assertEqual({(r["status"], r["text"]) for r in node.named("response")}, {(200, "pong")})
        self.assertEqual(len(node.named("response")), 100)

    async def test_anonymous_and_token_senders(self) -> None:
        """An anonymous name needs no token; a protected one answers 401 without, 200 with a query token."""
        gateway = await start_gateway(self, CONFIG)
        local = await self.local_server()
        for name in ("open", "hyco"):
            await (await self.expose(gateway, local, name)).wait_for("online")
        curl = Curl(self)
        self.assertEqual((await curl.send(f"{gateway.http_url}/open/echo")).status, 200)
        self.assertEqual((await curl.send(f"{gateway.http_url}/hyco/echo")).status, 401)
        token = quote(gateway.token("hyco"))
        self.assertEqual((await curl.send(f"{gateway.http_url}/hyco/echo?sb-hc-token={token}")).status, 200)

    async def test_errors(self) -> None:
        """
        Timeouts and failures on the local side, and no listener at all.

        A local server that never answers: 504 from the relay. A failing one: its 500 passes through.
        A local server that is down: 502 from expose. Expose stopped: 502 from the relay (no listener).
        """
        gateway = await start_gateway(self, CONFIG)
        local = await self.local_server()
        slow = await self.expose(gateway, local, "slow")
        await slow.wait_for("online")
        outcome = await Treq(self).send(f"{gateway.http_url}/slow/never", headers=self.auth(gateway, "slow"))
        self.assertEqual(outcome.status, 504)
        failing = await Curl(self).send(f"{gateway.http_url}/slow/fail", headers=self.auth(gateway, "slow"))
        self.assertEqual(failing.status, 500)
        self.assertEqual(failing.header("via"), "1.1 127.0.0.1")
        down = await self.expose(gateway, "http://127.0.0.1:9", "hyco")
        await down.wait_for("online")
        outcome = await Requests(self).send(f"{gateway.http_url}/hyco/echo", headers=self.auth(gateway))
        self.assertEqual(outcome.status, 502)
        self.assertIn(b"did not answer", outcome.head)
        self.assertIn(b"TrackingId:", outcome.head)
        down.signal("TERM")
        self.assertEqual(await down.ended(), 0)
        outcome = await Node(self).send(f"{gateway.http_url}/hyco/echo", headers=self.auth(gateway))
        self.assertEqual(outcome.status, 502)
        self.assertIsNone(outcome.header("via"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_local_timeout(self) -> None:
        """A local server that does not answer within --timeout gets the sender a 504 from expose."""
        gateway = await start_gateway(self, CONFIG)
        local = await self.local_server()
        process = await self.expose(gateway, local, "hyco", "--timeout", "1")
        await process.wait_for("online")
        late = await Curl(self).send(f"{gateway.http_url}/hyco/never", headers=self.auth(gateway))
        self.assertEqual(late.status, 504, dumps(late))
        self.assertIn(b"did not answer within 1s", late.head)
        self.assertEqual(late.header("via"), "1.1 127.0.0.1")
        fine = await Curl(self).send(f"{gateway.http_url}/hyco/echo", headers=self.auth(gateway))
        self.assertEqual(fine.status, 200)

    async def test_listener_killed_mid_body(self) -> None:
        """Killing expose in the middle of a 100 MB download leaves every sender with a failed transfer."""
        gateway = await start_gateway(self, CONFIG)
        victims: list[ExposeProcess] = []

        def kill_soon() -> None:
            reactor.callLater(0.2, victims[-1].signal, "KILL")  # type: ignore[attr-defined]

        local = await self.local_server(on_bulk=kill_soon)
        for sender_class in SENDERS:
            process = await self.expose(gateway, local)
            victims.append(process)
            await process.wait_for("online")
            sender = sender_class(self)
            outcome = await sender.send(
                f"{gateway.http_url}/hyco/bulk/{100 * MB}", headers=self.auth(gateway)
            )
            self.assertIsNotNone(outcome.error, f"{sender.name}: {dumps(outcome)}")
            self.assertLess(outcome.length, 100 * MB)
            await process.ended()

    async def test_websocket_senders_are_forwarded(self) -> None:
        """A WebSocket sender reaches the local WebSocket: subprotocol, text and 1 MB binary, close code."""
        gateway, process, _ = await self.exposed()
        sender = spawn_script(
            self,
            "ws-sender.js",
            ["--uri", f"{gateway.ws_url}/$hc/hyco/ws?room=1&sb-hc-action=connect", "--token", gateway.token("hyco"),
             "--protocol", "chat", "--message", "literal:hello", "--message", "binary:1048576"],
        )  # fmt: skip
        opened = await sender.event("open")
        self.assertEqual(opened["protocol"], "chat")
        sent = [await sender.event("sent", index=i) for i in range(2)]
        echoed = [await sender.event("message", index=i) for i in range(2)]
        self.assertEqual([(e["type"], e["sha256"]) for e in echoed], [(s["type"], s["sha256"]) for s in sent])
        closed = await sender.event("close")
        self.assertEqual(closed["code"], 1000)
        await process.wait_for('"WEBSOCKET /ws?room=1" 101', where="stdout")

    async def test_a_large_websocket_message_is_relayed_as_it_comes(self) -> None:
        """
        A 60 MiB message crosses expose both ways (sender, local echo, sender) without expose's memory growing.

        Before, expose assembled it whole on each side: its peak RSS rose by about 300 MB.
        """
        status = Path("/proc/self/status")
        if not status.exists():
            raise SkipTest("needs /proc to read expose's peak memory")
        gateway, process, _ = await self.exposed()
        assert process.transport is not None
        pid = process.transport.pid
        sender = spawn_script(
            self,
            "ws-sender.js",
            ["--uri", f"{gateway.ws_url}/$hc/hyco/ws?sb-hc-action=connect", "--token", gateway.token("hyco"),
             "--message", "binary:1024", "--message", f"bulk:{60 * MB}", "--send-delay-ms", "500"],
        )  # fmt: skip
        await sender.event("open")
        await sender.event("message", index=0)
        before = _peak_rss(pid)
        # About 9 s on a slow 2-core machine, and several times that with the cores busy (the gateway and the
        # Autobahn echo server run in this process): the harness's 30 s per event is for quick answers. The
        # test is of memory and content, not speed.
        sent = await sender.event("sent", index=1, timeout=LARGE_MESSAGE_TIMEOUT)
        echoed = await sender.event("message", index=1, timeout=LARGE_MESSAGE_TIMEOUT)
        self.assertEqual((echoed["type"], echoed["sha256"]), (sent["type"], sent["sha256"]))
        grown = _peak_rss(pid) - before
        self.assertLess(grown, 40 * MB, f"expose's peak memory grew by {grown // MB} MB for a 60 MiB message")
        closed = await sender.event("close")
        self.assertEqual(closed["code"], 1000)

    async def test_reconnects_on_its_own(self) -> None:
        """When the relay drops its control channel, expose comes back and serves again."""
        gateway, process, _ = await self.exposed()
        service = gateway.service
        for namespace in service.store.namespaces():
            for entity in service.store.entities(namespace):
                for channel in service.registry.listeners(namespace, entity):
                    channel.close(1011, "test drops the listener")  # type: ignore[attr-defined]
        await process.wait_for("reconnecting")
        await process.wait_for("online: ", timeout=30)
        for _ in range(100):
            if service.registry.total():
                break
            await deferLater(reactor, 0.05)
        outcome = await Curl(self).send(f"{gateway.http_url}/hyco/echo", "POST", self.auth(gateway), b"back")
        self.assertEqual((outcome.status, outcome.head), (200, b"back"))

    async def test_usage_errors(self) -> None:
        """Unix habits: a bad URL or refused credentials exit 1 with one line on stderr; no string, usage error."""
        gateway = await start_gateway(self, CONFIG)
        for url in (
            "ftp://nowhere",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:abc",
            "http://[::1",
            "http://:80",
        ):
            bad_url = await self.expose(gateway, url)
            self.assertEqual(await bad_url.ended(), 1, url)
            self.assertEqual(bad_url.stderr.count("the local URL must be"), 1, bad_url.stderr)
            self.assertNotIn("Traceback", bad_url.stderr)
        wrong_key = gateway.connection_string.replace("SharedAccessKey=", "SharedAccessKey=x")
        refused = await self.expose(wrong_key, "http://127.0.0.1:9")
        self.assertEqual(await refused.ended(), 1)
        self.assertIn("refused the listener: 401", refused.stderr)
        self.assertNotIn("relay expose: stopped", refused.stderr)  # the refusal is the one line that says why
        self.assertEqual(signal.SIGTERM, 15)
