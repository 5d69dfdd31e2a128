"""
End to end on loopback with the official, unmodified npm client C{hyco-ws} (1.0.5).

The Node scripts in C{tests/e2e/node} drive the library; see C{nodeharness}. Covered: hyco-ws as listener
and as sender (against each other and against our Python client), text and binary echo up to 1 MB, the
library's URI helpers unchanged over TLS on port 443, rejection, refusals and the reconnect loop a refused
hyco-ws listener falls into, token renewal, and a listener process killed mid-stream.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from relay.client import ConnectError, HybridConnectionClient, HybridConnectionListener

from .gateway import ROOT_KEY, RunningGateway, start_gateway
from .nodeharness import NodeScript, ensure_node_modules, payload, require_node, sha256_hex, spawn_script


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


def listen_uri(gateway: RunningGateway, path: str = "hyco") -> str:
    return f"{gateway.ws_url}/$hc/{path}?sb-hc-action=listen"


def send_uri(gateway: RunningGateway, path: str = "hyco", query: str = "") -> str:
    return f"{gateway.ws_url}/$hc/{path}?{query}{'&' if query else ''}sb-hc-action=connect"


PLAIN_403_REJECT = (
    *("--behaviour", "reject", "--reject-status", "403"),
    *("--reject-description", "Go away", "--reject-style", "plain"),
)
"""ws-listener.js options: reject every sender with 403 "Go away" in the plain (unprefixed) style."""


def renewing_listener(test: TestCase, gateway: RunningGateway, *, ttl: int, renew_ms: int) -> NodeScript:
    """A hyco-ws listener with a token function: tokens of C{ttl} seconds, renewed every C{renew_ms}."""
    token_options = ["--key-name", "root", "--key", ROOT_KEY, "--token-uri", f"http://{gateway.host}/hyco"]
    timing = ["--token-mode", "function", "--token-ttl", str(ttl), "--renew-interval-ms", str(renew_ms)]
    return spawn_script(test, "ws-listener.js", ["--uri", listen_uri(gateway), *token_options, *timing])


class HycoWsTests(TestCase):
    """hyco-ws against the gateway."""

    timeout = 120

    def setUp(self) -> None:
        require_node()
        ensure_node_modules()

    async def node_listener(self, gateway: RunningGateway, *args: str, path: str = "hyco") -> NodeScript:
        listener = spawn_script(
            self,
            "ws-listener.js",
            ["--uri", listen_uri(gateway, path), "--token", gateway.token(path), *args],
        )
        await listener.event("online")
        return listener

    async def test_hyco_ws_to_hyco_ws(self) -> None:
        """A hyco-ws sender's text and 1 MB binary messages come back from a hyco-ws echo listener intact."""
        gateway = await start_gateway(self)
        await self.node_listener(gateway)
        sender = spawn_script(
            self,
            "ws-sender.js",
            [
                "--uri",
                send_uri(gateway, "hyco/room", "x=1"),
                "--token",
                gateway.token("hyco"),
                "--message",
                "literal:hello",
                "--message",
                "binary:1048576",
                "--message",
                "text:70000",
            ],
        )
        replies = [await sender.event("message", index=i) for i in range(3)]
        self.assertEqual(
            [(r["type"], r["length"]) for r in replies], [("text", 5), ("binary", 1048576), ("text", 70000)]
        )
        self.assertEqual(replies[0]["text"], "hello")
        self.assertEqual(replies[1]["sha256"], sha256_hex(payload("binary", 1048576, index=1)))
        self.assertEqual(replies[2]["sha256"], sha256_hex(payload("text", 70000, index=2)))
        close = await sender.event("close")
        self.assertEqual(close["code"], 1000)
        self.assertEqual(await sender.exited(), 0)

    async def test_accept_carries_suffix_query_id_and_headers(self) -> None:
        """The listener sees the sender's path suffix, query, tracking id and headers, not its token."""
        gateway = await start_gateway(self)
        listener = await self.node_listener(gateway)
        sender = spawn_script(
            self,
            "ws-sender.js",
            [
                "--uri",
                send_uri(gateway, "hyco/suffix", "x=1"),
                "--token",
                gateway.token("hyco"),
                "--token-in",
                "both",
                "--id",
                "my-trace-id",
                "--header",
                "X-App: yes",
                "--message",
                "literal:hi",
            ],
        )
        accept = await listener.event("accept")
        self.assertEqual(accept["id"], "my-trace-id")
        self.assertIn("/$hc/hyco/suffix?x=1&sb-hc-action=accept&sb-hc-id=my-trace-id", accept["address"])
        self.assertNotIn("token", accept["address"].lower())
        headers = {k.lower(): v for k, v in accept["connect_headers"].items()}
        self.assertEqual(headers["x-app"], "yes")
        self.assertIn("sec-websocket-key", headers)
        self.assertNotIn("servicebusauthorization", headers)
        await sender.event("message")

    async def test_sender_uri_without_an_action(self) -> None:
        """
        A plain WebSocket dialing C{/$hc/hyco?sb-hc-token=..}, with no C{sb-hc-action}, reaches the listener.

        Azure takes such an upgrade for a sender's (the .NET client's tests dial raw WebSockets so); the
        gateway answered 400.
        """
        gateway = await start_gateway(self)
        await self.node_listener(gateway)
        sender = spawn_script(
            self,
            "ws-sender.js",
            [
                "--uri",
                f"{gateway.ws_url}/$hc/hyco",
                "--token",
                gateway.token("hyco"),
                "--token-in",
                "query",
                "--message",
                "literal:plain",
            ],
        )
        self.assertEqual((await sender.event("message"))["text"], "plain")

    async def test_python_sender_to_hyco_ws_listener(self) -> None:
        """Our Python sender talks to a hyco-ws listener: subprotocol, text, binary and close code."""
        gateway = await start_gateway(self)
        listener = await self.node_listener(
            gateway, "--close-after", "2", "--close-code", "4001", "--close-reason", "bye"
        )
        client = HybridConnectionClient(gateway.connection_string, "hyco", reactor=reactor)
        connection = await client.connect(subprotocols=["chat", "superchat"])
        self.assertEqual(connection.subprotocol, "chat")
        data = os.urandom(1024 * 1024)
        await connection.send("héllo")
        await connection.send(data)
        self.assertEqual(await connection.receive(), "héllo")
        self.assertEqual(await connection.receive(), data)
        await connection.when_closed()
        self.assertEqual((connection.close_code, connection.close_reason), (4001, "bye"))
        opened = await listener.event("open")
        self.assertEqual(opened["protocol"], "chat")

    async def test_hyco_ws_sender_to_python_listener(self) -> None:
        """A hyco-ws sender talks to our Python listener."""
        gateway = await start_gateway(self)
        listener = HybridConnectionListener(gateway.connection_string, "hyco", reactor=reactor)
        await listener.open()
        self.addCleanup(listener.close)

        async def echo() -> None:
            connection = await listener.accept_connection()
            async for message in connection:
                await connection.send(message)
            await connection.close()

        Deferred.fromCoroutine(echo())
        sender = spawn_script(
            self,
            "ws-sender.js",
            [
                "--uri",
                send_uri(gateway),
                "--token",
                gateway.token("hyco"),
                "--message",
                "binary:300000",
                "--message",
                "literal:ok",
            ],
        )
        first = await sender.event("message", index=0)
        self.assertEqual(first["sha256"], sha256_hex(payload("binary", 300000, index=0)))
        self.assertEqual((await sender.event("message", index=1))["text"], "ok")
        self.assertEqual(await sender.exited(), 0)

    async def test_reject_and_no_listener(self) -> None:
        """Without a listener the sender's upgrade fails with 404; a rejecting listener's status reaches it."""
        gateway = await start_gateway(self)
        nobody = spawn_script(
            self,
            "ws-sender.js",
            ["--uri", send_uri(gateway), "--token", gateway.token("hyco"), "--message", "literal:x"],
        )
        self.assertEqual((await nobody.event("upgrade-failed"))["status"], 404)
        listener = await self.node_listener(gateway, *PLAIN_403_REJECT)
        sender = spawn_script(
            self,
            "ws-sender.js",
            ["--uri", send_uri(gateway), "--token", gateway.token("hyco"), "--message", "literal:x"],
        )
        self.assertEqual((await sender.event("upgrade-failed"))["status"], 403)
        self.assertEqual((await listener.event("rejected"))["relay_status"], 410)

    async def test_plain_reject_of_a_query_its_listener_escapes(self) -> None:
        """
        A hyco-ws listener's plain C{statusCode} reject holds for a sender whose query had a raw C{'}.

        The listener's ws 1.x escapes it when it dials the accept address (C{%27}); the gateway took the
        changed address for an accept with nothing appended, and joined the refused sender.
        """
        gateway = await start_gateway(self)
        listener = await self.node_listener(gateway, *PLAIN_403_REJECT)
        client = HybridConnectionClient(gateway.connection_string, "hyco", reactor=reactor)
        with self.assertRaises(ConnectError) as ctx:
            await client.connect(query="name=O'Brien")
        self.assertEqual(ctx.exception.status_code, 403)
        self.assertIn("Go away", str(ctx.exception))
        self.assertEqual((await listener.event("rejected"))["relay_status"], 410)

    async def test_refused_listener_is_slowed_down(self) -> None:
        """
        A hyco-ws listener with a bad key reconnects in a tight loop; the gateway answers each 401 later.

        Over three seconds the loop gets only a handful of answers instead of hundreds, and a
        well-behaved listener from elsewhere is still served at once.
        """
        gateway = await start_gateway(
            self, limits={"listener_failure_delay": 0.25, "listener_failure_max_delay": 2.0}
        )
        bad = spawn_script(
            self,
            "ws-listener.js",
            ["--uri", listen_uri(gateway), "--key-name", "root", "--key", "wrong-key-0123456789abcdef"],
        )
        await sleep(3.0)
        refusals = [e for e in bad.named("error") if e.get("status") == 401]
        self.assertGreaterEqual(len(refusals), 2)
        self.assertLessEqual(len(refusals), 6)
        good = HybridConnectionListener(gateway.connection_string, "hyco", reactor=reactor)
        await good.open()
        self.addCleanup(good.close)
        self.assertTrue(good.is_online)

    async def test_token_renewal(self) -> None:
        """A hyco-ws listener with a function token renews it (compressed clock) and outlives the first token."""
        gateway = await start_gateway(self)
        listener = renewing_listener(self, gateway, ttl=3, renew_ms=1000)
        await listener.event("online")
        await sleep(5.0)
        self.assertEqual(gateway.service.registry.total(), 1)
        self.assertEqual([e for e in listener.named("error")], [])
        sender = spawn_script(
            self,
            "ws-sender.js",
            ["--uri", send_uri(gateway), "--token", gateway.token("hyco"), "--message", "literal:still"],
        )
        self.assertEqual((await sender.event("message"))["text"], "still")

    async def test_static_token_expires_with_1008(self) -> None:
        """A hyco-ws listener with a static 2-second token is closed by the gateway with 1008 once it lapsed."""
        gateway = await start_gateway(self, limits={"listener_token_grace": 1.0})
        listener = spawn_script(
            self, "ws-listener.js", ["--uri", listen_uri(gateway), "--token", gateway.token("hyco", ttl=2)]
        )
        await listener.event("online")
        offline = await listener.event("offline", timeout=10)
        self.assertEqual(offline.get("code"), 1008)

    async def test_renewal_as_the_token_lapses(self) -> None:
        """
        A hyco-ws listener whose token lives as long as its renewal period (3600 s each by default) stays.

        The library renews only when the period is over, a moment after the token lapsed: the gateway
        closed such a listener with 1008 every period, just before its renewal came.
        """
        # A grace shorter than the run: a channel whose renewals were not taken would be closed in it.
        gateway = await start_gateway(self, limits={"listener_token_grace": 3.0})
        listener = renewing_listener(self, gateway, ttl=2, renew_ms=2000)
        await listener.event("online")
        await sleep(7.0)
        self.assertEqual(listener.named("offline"), [])
        purposes = [e["purpose"] for e in listener.named("token")]
        self.assertEqual(purposes.count("connect"), 1, purposes)
        self.assertGreaterEqual(purposes.count("renew"), 3, purposes)
        self.assertEqual(gateway.service.registry.total(), 1)

    async def test_listener_process_killed_mid_stream(self) -> None:
        """Killing the hyco-ws listener process during a transfer closes the Python sender with 1001."""
        gateway = await start_gateway(self)
        listener = await self.node_listener(gateway, "--behaviour", "sink")
        client = HybridConnectionClient(gateway.connection_string, "hyco", reactor=reactor)
        connection = await client.connect()
        await connection.send(os.urandom(200000))
        await listener.event("message")
        assert listener.transport is not None
        listener.transport.signalProcess(signal.SIGKILL)
        await connection.when_closed()
        self.assertEqual(connection.close_code, 1001)


def _port_443_free() -> bool:
    with socket.socket() as s:
        # As Twisted's listening ports do: connections the gateway closed first linger in TIME_WAIT.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", 443))
        except OSError:
            return False
    return True


class HycoWsHelpersOverTlsTests(TestCase):
    """hyco-ws's own URI helpers (always C{wss://NS:443/...}) against the gateway on port 443."""

    timeout = 120

    def setUp(self) -> None:
        require_node()
        ensure_node_modules()
        if os.geteuid() != 0:
            raise SkipTest("binding port 443 needs root (CI runs as root)")
        if not _port_443_free():
            raise SkipTest("port 443 on 127.0.0.1 is taken by another program")

    async def test_helpers_unchanged_over_tls_on_443(self) -> None:
        """C{createRelayListenUri}/C{createRelaySendUri} with namespace C{localhost} work over TLS on 443."""
        from relay.certs import issue_server_certificate

        certs = issue_server_certificate(
            __import__("pathlib").Path(self.mktemp()), ["localhost", "127.0.0.1", "::1"]
        )
        listen = f"ssl:443:interface=127.0.0.1:privateKey={certs.key_path}:certKey={certs.cert_path}"
        gateway = await start_gateway(self, listen=listen, public_url="https://localhost")
        # hyco-ws resolves "localhost" itself; serve ::1 too in case it prefers IPv6.
        extra: Any = None
        try:
            from twisted.internet.endpoints import serverFromString

            extra = await serverFromString(
                reactor, f"ssl:443:interface=\\:\\:1:privateKey={certs.key_path}:certKey={certs.cert_path}"
            ).listen(gateway.service.site)
            self.addCleanup(extra.stopListening)
        except Exception:  # noqa: S110 - no IPv6 loopback here; 127.0.0.1 is enough
            pass
        key_args = ["--key-name", "root", "--key", ROOT_KEY, "--token-uri", "http://localhost/hyco"]
        listener = spawn_script(
            self,
            "ws-listener.js",
            ["--namespace", "localhost", "--path", "hyco", *key_args],
            ca_file=certs.ca_path,
        )
        online = await listener.event("online")
        self.assertTrue(online["uri"].startswith("wss://localhost:443/$hc/hyco"))
        sender = spawn_script(
            self,
            "ws-sender.js",
            [
                "--namespace",
                "localhost",
                "--path",
                "hyco",
                *key_args,
                "--message",
                "literal:over tls",
                "--message",
                "binary:1048576",
            ],
            ca_file=certs.ca_path,
        )
        self.assertEqual((await sender.event("message", index=0))["text"], "over tls")
        self.assertEqual(
            (await sender.event("message", index=1))["sha256"],
            sha256_hex(payload("binary", 1048576, index=1)),
        )
        accept = await listener.event("accept")
        self.assertTrue(accept["address"].startswith("wss://localhost/$hc/hyco?"))
        # The closing handshake completes over TLS: the gateway closes the socket after the close frames
        # (a socket left open makes ws wait 30 s and report 1006).
        self.assertEqual((await sender.event("close"))["code"], 1000)
        self.assertEqual(await sender.exited(), 0)
