"""The admin endpoint's resources, in memory (treq's StubTreq), and its assembly by C{twistd relay}."""

from __future__ import annotations

from pathlib import Path

from treq.testing import StubTreq
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from relay.admin import MAX_BODY, AdminRoot, admin_site
from relay.config import parse_config
from relay.metrics import Registry
from relay.service import GatewayService
from relay.tap import Options, makeService

from .httpharness import RawHttpClient


class AdminResourceTests(SynchronousTestCase):
    """GET /metrics and /healthz; other paths 404, other methods 405."""

    def setUp(self) -> None:
        self.registry = Registry()
        self.registry.counter("relay_x_total", "X.", ("entity",)).inc("hyco", amount=3)
        self.client = StubTreq(AdminRoot(self.registry))

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[bytes, list[bytes]], bytes]:
        response = self.successResultOf(self.client.request(method, f"http://admin.test{path}"))
        body = self.successResultOf(response.content())
        return response.code, dict(response.headers.getAllRawHeaders()), body

    def test_metrics(self) -> None:
        """/metrics is the registry in the text format, with Prometheus's content type."""
        code, headers, body = self.get("/metrics")
        self.assertEqual(code, 200)
        self.assertEqual(headers[b"Content-Type"], [b"text/plain; version=0.0.4; charset=utf-8"])
        self.assertEqual(body, self.registry.exposition())
        self.assertIn(b'relay_x_total{entity="hyco"} 3\n', body)

    def test_healthz(self) -> None:
        """/healthz answers ok."""
        code, _, body = self.get("/healthz")
        self.assertEqual((code, body), (200, b"ok\n"))

    def test_readyz(self) -> None:
        """/readyz is 200 while the gateway takes new work and 503 once it stops, for load balancers."""
        self.assertEqual(self.get("/readyz")[::2], (200, b"ready\n"))
        ready = [True]
        client = StubTreq(AdminRoot(self.registry, ready=lambda: ready[0]))
        ready[0] = False
        response = self.successResultOf(client.request("GET", "http://admin.test/readyz"))
        self.assertEqual((response.code, self.successResultOf(response.content())), (503, b"stopping\n"))

    def test_head(self) -> None:
        """HEAD answers without a body."""
        code, _, body = self.get("/metrics", "HEAD")
        self.assertEqual((code, body), (200, b""))

    def test_unknown_paths(self) -> None:
        """Anything else is 404, including the root and paths below the pages."""
        for path in ("/", "/nope", "/metrics/x", "/healthz/"):
            self.assertEqual(self.get(path)[0], 404, path)

    def test_served_by_relay(self) -> None:
        """The admin Site names itself as the gateway's site does, without twisted.web's version."""
        client, pump = self.connect()
        client.request("GET", "/healthz")
        pump.flush()
        self.assertEqual((client.reply.status, client.reply.header("Server")), (200, "relay"))

    def connect(self) -> tuple[RawHttpClient, iosim.IOPump]:
        """A raw HTTP client on the admin Site, over an in-memory connection."""
        site = admin_site(self.registry, reactor=MemoryReactorClock())
        client = RawHttpClient()
        server = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9090))
        pump = iosim.connect(
            server, iosim.FakeTransport(server, True), client, iosim.FakeTransport(client, False), greet=False
        )
        return client, pump

    def test_large_body_refused_unread(self) -> None:
        """
        A body announced above the limit is answered 413 at once and the connection closed.

        The pages read no body; twisted.web's Site spooled any body to a temporary file before the 405,
        so one unauthenticated request could fill the disk.
        """
        client, pump = self.connect()
        client.methods.append("POST")
        client.send(b"POST /metrics HTTP/1.1\r\nHost: admin\r\nContent-Length: 100000000\r\n\r\n")
        client.send(b"x" * 100_000)
        pump.flush()
        self.assertEqual(client.reply.status, 413)
        self.assertIsNotNone(client.lost)

    def test_large_chunked_body_refused(self) -> None:
        """A chunked body is refused (413, connection closed) as soon as it passes the limit."""
        client, pump = self.connect()
        client.request("GET", "/metrics", chunked=True)
        for _ in range(10):
            client.chunk(b"y" * 1000)
        pump.flush()
        self.assertEqual(client.reply.status, 413)
        self.assertIsNotNone(client.lost)
        self.assertLess(MAX_BODY, 10_000)

    def test_small_body_read(self) -> None:
        """A small body is read and dropped: the answer is the page's own (405 for POST)."""
        client, pump = self.connect()
        client.request("POST", "/metrics", body=b"{}")
        pump.flush()
        self.assertEqual(client.reply.status, 405)
        self.assertIsNone(client.lost)

    def test_other_methods(self) -> None:
        """POST and friends are 405 with Allow."""
        code, headers, _ = self.get("/metrics", "POST")
        self.assertEqual(code, 405)
        self.assertEqual(headers[b"Allow"], [b"GET, HEAD"])
        self.assertEqual(self.get("/healthz", "DELETE")[0], 405)


class AdminOptionTests(SynchronousTestCase):
    """C{--admin} and C{gateway.admin}: off by default, a separate server when set."""

    def options(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(["--state-dir", self.mktemp(), *argv])
        return options

    def build(self, options: Options) -> tuple[MemoryReactorClock, GatewayService]:
        reactor = MemoryReactorClock()
        return reactor, makeService(options, reactor=reactor)

    def endpoints(self, service: GatewayService) -> list[StreamServerEndpointService]:
        return [s for s in service if isinstance(s, StreamServerEndpointService)]

    def test_off_by_default(self) -> None:
        """Without --admin only the relay endpoint is served."""
        options = self.options()
        self.assertIsNone(options["settings"].admin)
        _, service = self.build(options)
        self.assertEqual(len(self.endpoints(service)), 1)

    def test_admin_endpoint(self) -> None:
        """--admin adds a server on its own endpoint; the relay's ports exclude it."""
        options = self.options("--admin", "tcp:9090:interface=127.0.0.1")
        reactor, service = self.build(options)
        self.assertEqual(len(self.endpoints(service)), 2)
        service.startService()
        self.addCleanup(service.stopService)
        self.successResultOf(service.ready)
        self.assertEqual(
            [(p, i) for p, _, _, i in reactor.tcpServers], [(9080, "127.0.0.1"), (9090, "127.0.0.1")]
        )
        self.assertEqual(len(service.ports), 1)
        self.assertIsNotNone(service.admin_port)

    def test_readyz_follows_the_gateway(self) -> None:
        """The gateway's /readyz says 503 from the moment it starts stopping (draining included)."""
        _, service = self.build(self.options("--admin", "tcp:9090:interface=127.0.0.1"))
        service.startService()
        client = StubTreq(service._admin_service.factory.resource)  # type: ignore[union-attr]

        def readyz() -> int:
            return int(self.successResultOf(client.request("GET", "http://admin.test/readyz")).code)

        self.assertEqual(readyz(), 200)
        service.stopService()
        self.assertEqual(readyz(), 503)

    def test_admin_from_the_file(self) -> None:
        """gateway.admin in the file is used unless --admin overrides it."""
        path = Path(self.mktemp())
        path.write_text('[gateway]\nadmin = "tcp:9191:interface=127.0.0.1"\n')
        self.assertEqual(
            self.options("--config", str(path))["settings"].admin, "tcp:9191:interface=127.0.0.1"
        )
        overridden = self.options("--config", str(path), "--admin", "tcp:9292")
        self.assertEqual(overridden["settings"].admin, "tcp:9292")

    def test_config_admin_checked(self) -> None:
        """An empty admin endpoint in the file is an error; the entity limit is a gateway setting."""
        with self.assertRaises(ValueError):
            parse_config({"gateway": {"admin": " "}}, "f.toml")
        config = parse_config({"gateway": {"metrics_max_entities": 50}}, "f.toml")
        self.assertEqual(config.limits["metrics_max_entities"], 50.0)
