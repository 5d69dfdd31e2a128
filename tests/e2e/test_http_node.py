"""
End-to-end HTTP relaying with the official hyco-https listener and real senders on loopback.

Senders: curl, Python requests, treq and Node https (what the hyco-https samples use).
"""

from __future__ import annotations

from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from .gateway import ROOT_KEY, RunningGateway, start_gateway
from .nodeharness import NodeScript, ensure_node_modules, require_node, spawn_script
from .senders import SENDERS, Bulk, Curl, Node, Requests, Sender, Treq, dumps, sha

CONFIG = """
[[namespaces]]
name = "test"
hosts = ["127.0.0.1", "localhost"]

  [[namespaces.rules]]
  name = "root"
  key = "e2e-root-key-0123456789abcdefghij"
  rights = ["Listen", "Send", "Manage"]

  [[namespaces.hybrid_connections]]
  name = "hyco"

  [[namespaces.hybrid_connections]]
  name = "open"
  requires_client_authorization = false

  [[namespaces.hybrid_connections]]
  name = "slow"
  request_timeout = 2
"""

MB = 1024 * 1024
BIG = 200 * MB


class HycoHttpsTests(TestCase):
    """hyco-https C{createRelayedServer} behind the gateway."""

    timeout = 240

    def setUp(self) -> None:
        require_node()
        ensure_node_modules()

    async def gateway(self) -> RunningGateway:
        return await start_gateway(self, CONFIG)

    async def listener(self, gateway: RunningGateway, *args: str, path: str = "hyco") -> NodeScript:
        script = spawn_script(
            self,
            "https-listener.js",
            [
                "--uri",
                f"{gateway.ws_url}/$hc/{path}?sb-hc-action=listen",
                "--key-name",
                "root",
                "--key",
                ROOT_KEY,
                *args,
            ],
        )
        await script.event("online")
        return script

    def auth(self, gateway: RunningGateway, path: str = "hyco") -> dict[str, str]:
        return {"ServiceBusAuthorization": gateway.token(path)}

    async def test_methods_with_every_sender(self) -> None:
        """GET, POST, PUT, DELETE and HEAD from curl, requests, treq and Node reach the listener and return."""
        gateway = await self.gateway()
        listener = await self.listener(gateway)
        for sender_class in SENDERS:
            sender = sender_class(self)
            for method in ("GET", "POST", "PUT", "DELETE", "HEAD"):
                body = f"{sender.name} says {method}".encode() if method in ("POST", "PUT") else None
                target = f"/hyco/m/{sender.name}?verb={method}"
                headers = {**self.auth(gateway), "Content-Type": "text/plain", "X-Sender": sender.name}
                outcome = await sender.send(gateway.http_url + target, method, headers, body)
                self.assertEqual(outcome.status, 200, dumps(outcome))
                self.assertEqual(outcome.header("via"), "1.1 127.0.0.1", dumps(outcome))
                self.assertEqual(outcome.sha256, sha(body), dumps(outcome))
                seen = await listener.event("request", match=lambda e, t=target: e["url"] == t)
                self.assertEqual((seen["method"], seen["headers"]["x-sender"]), (method, sender.name))
                self.assertNotIn("servicebusauthorization", seen["headers"])
                self.assertEqual(seen["headers"]["x-forwarded-for"], "127.0.0.1")

    async def test_200kb_post(self) -> None:
        """A 200 kB body goes over a rendezvous and comes back intact, from each sender."""
        gateway = await self.gateway()
        listener = await self.listener(gateway)
        body = Bulk(200 * 1024)
        for sender_class in SENDERS:
            sender = sender_class(self)
            target = f"/hyco/post/{sender.name}"
            outcome = await sender.send(gateway.http_url + target, "POST", self.auth(gateway), body)
            self.assertEqual(
                (outcome.status, outcome.length, outcome.sha256), (200, body.length, body.sha256())
            )
            seen = await listener.event("request", match=lambda e, t=target: e["url"] == t)
            self.assertEqual(seen["channel"], "rendezvous")

    async def test_200mb_upload_and_download(self) -> None:
        """200 MB up (curl, Node) and down (treq, requests) stream through; checksums match on both ends."""
        gateway = await self.gateway()
        expected = Bulk(BIG).sha256()
        up = await self.listener(
            gateway, "--respond", "fixed", "--body-text", "stored", "--max-payload", str(BIG + MB)
        )
        for sender in (Curl(self), Node(self)):
            outcome = await sender.send(f"{gateway.http_url}/hyco/up", "POST", self.auth(gateway), Bulk(BIG))
            self.assertEqual((outcome.status, outcome.head), (200, b"stored"), dumps(outcome))
            seen = await up.event("request", match=lambda e: e["url"] == "/hyco/up")
            self.assertEqual((seen["length"], seen["sha256"]), (BIG, expected))
        up.command("close")
        await up.exited()
        down = await self.listener(
            gateway,
            "--respond",
            "fixed",
            "--body-size",
            str(BIG),
            "--body-kind",
            "bulk",
            "--chunk-size",
            "65536",
        )
        for sender in (Treq(self), Requests(self)):
            outcome = await sender.send(f"{gateway.http_url}/hyco/down", "GET", self.auth(gateway))
            self.assertEqual(
                (outcome.status, outcome.length, outcome.sha256), (200, BIG, expected), dumps(outcome)
            )
        await down.event("responded")

    async def test_100_concurrent_requests(self) -> None:
        """100 requests at once, from Node and from treq, all answered correctly."""
        gateway = await self.gateway()
        await self.listener(gateway)
        url = f"{gateway.http_url}/hyco/many"
        node = spawn_script(
            self,
            "http-sender.js",
            [
                "--url",
                url,
                "--count",
                "100",
                "--parallel",
                "--token",
                gateway.token("hyco"),
                "--body-text",
                "ping",
            ],
        )
        self.assertEqual(await node.exited(timeout=120), 0, node.describe())
        responses = node.named("response")
        self.assertEqual(len(responses), 100)
        self.assertEqual({(r["status"], r["text"]) for r in responses}, {(200, "ping")})
        self.assertEqual(len({r["local_port"] for r in responses}), 100)
        treq_sender = Treq(self)
        outcomes = await gatherResults(
            [
                Deferred.fromCoroutine(
                    treq_sender.send(f"{url}/{i}", "POST", self.auth(gateway), f"request {i}".encode())
                )
                for i in range(100)
            ]
        )
        self.assertEqual([o.head for o in outcomes], [f"request {i}".encode() for i in range(100)])

    async def test_anonymous_and_token_senders(self) -> None:
        """An anonymous hybrid connection needs no token; others need one, in any of the three places."""
        gateway = await self.gateway()
        await self.listener(gateway, path="open")
        await self.listener(gateway)
        curl = Curl(self)
        self.assertEqual((await curl.send(f"{gateway.http_url}/open/x")).status, 200)
        refused = await curl.send(f"{gateway.http_url}/hyco/x")
        self.assertEqual(refused.status, 401)
        self.assertIsNone(refused.header("via"))
        token = gateway.token("hyco")
        for headers, url in (
            ({"ServiceBusAuthorization": token}, f"{gateway.http_url}/hyco/x"),
            ({}, f"{gateway.http_url}/hyco/x?sb-hc-token={quote(token)}"),
            ({"Authorization": token}, f"{gateway.http_url}/hyco/x"),
        ):
            with self.subTest(headers=list(headers)):
                self.assertEqual((await curl.send(url, headers=headers)).status, 200)
        wrong = gateway.token("hyco", key="wrong-key-0123456789abcdefghijkl")
        self.assertEqual(
            (
                await curl.send(f"{gateway.http_url}/hyco/x", headers={"ServiceBusAuthorization": wrong})
            ).status,
            401,
        )

    async def test_no_listener_and_listener_timeout(self) -> None:
        """No listener: 502 without Via. A listener that never answers: 504 after the HC's request timeout."""
        gateway = await self.gateway()
        for sender_class in SENDERS:
            outcome = await sender_class(self).send(
                f"{gateway.http_url}/hyco/none", headers=self.auth(gateway)
            )
            self.assertEqual(outcome.status, 502, dumps(outcome))
            self.assertIsNone(outcome.header("via"))
            self.assertIn(b"No listener", outcome.head)
        await self.listener(gateway, "--respond", "never", path="slow")
        started = reactor.seconds()  # type: ignore[attr-defined]
        outcome = await Treq(self).send(f"{gateway.http_url}/slow/x", headers=self.auth(gateway, "slow"))
        self.assertEqual(outcome.status, 504)
        self.assertIn(b"did not respond within 2s", outcome.head)
        self.assertGreaterEqual(reactor.seconds() - started, 1.9)  # type: ignore[attr-defined]

    async def test_listener_killed_mid_body(self) -> None:
        """A listener killed in the middle of a 50 MB body: every sender sees a failed transfer, not a short one."""
        gateway = await self.gateway()
        for sender_class in SENDERS:
            sender: Sender = sender_class(self)
            listener = await self.listener(
                gateway,
                "--respond", "fixed", "--body-size", str(50 * MB), "--body-kind", "bulk",
                "--chunk-size", "65536", "--crash-after-bytes", str(5 * MB),
            )  # fmt: skip
            outcome = await sender.send(f"{gateway.http_url}/hyco/crash", headers=self.auth(gateway))
            self.assertIsNotNone(outcome.error, f"{sender.name}: {dumps(outcome)}")
            self.assertLess(outcome.length, 50 * MB)
            await listener.exited()

    async def test_response_size_boundary_and_keep_alive(self) -> None:
        """
        64 kB responses come on the control channel, one byte more over a rendezvous.

        The keep-alive connection then carries the next request (never onto the response-only rendezvous).
        """
        gateway = await self.gateway()
        for size, channel in ((65536, "control"), (65537, "rendezvous")):
            listener = await self.listener(gateway, "--respond", "fixed", "--body-size", str(size))
            url = f"{gateway.http_url}/hyco/size"
            node = spawn_script(
                self,
                "http-sender.js",
                ["--url", url, "--url", url + "?again=1", "--token", gateway.token("hyco")],
            )
            self.assertEqual(await node.exited(), 0, node.describe())
            first, second = node.named("response")
            self.assertEqual((first["status"], first["length"], second["status"]), (200, size, 200))
            self.assertEqual(first["local_port"], second["local_port"])
            self.assertEqual((await listener.event("responded"))["channel"], channel)
            listener.command("close")
            await listener.exited()

    async def test_library_message_limit(self) -> None:
        """
        A request body over 100 MiB cannot reach hyco-https; the sender gets a 502 naming the cause.

        The library's ws sockets refuse messages over 100 MiB (maxPayload) and the whole body is one message.
        """
        gateway = await self.gateway()
        await self.listener(gateway, "--respond", "fixed", "--body-text", "never seen")
        outcome = await Node(self).send(
            f"{gateway.http_url}/hyco/toolarge", "POST", self.auth(gateway), Bulk(101 * MB)
        )
        self.assertEqual(outcome.status, 502, dumps(outcome))
        self.assertIn(b"closed the rendezvous before responding", outcome.head)
