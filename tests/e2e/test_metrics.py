"""
End to end on loopback: relay with the Python client, then scrape the admin endpoint over real HTTP.

The counters must say what happened: successful listener and sender connections, at least the bytes
sent, a refused sender as a client error, and the active listener gauge back to 0 once the listener left.
"""

from __future__ import annotations

import re

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from relay.client import EndpointNotFoundError, HybridConnectionClient, HybridConnectionListener

from .gateway import start_gateway
from .test_hybrid_python import until

SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of the text format by name and label set (our label values contain no commas or quotes)."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match is not None, line
        name, labels, value = match.groups()
        pairs = frozenset(tuple(p.split("=", 1)) for p in labels.split(",")) if labels else frozenset()
        samples[(name, frozenset((k, v.strip('"')) for k, v in pairs))] = float(value)
    return samples


class MetricsEndToEndTests(TestCase):
    """A real gateway with its admin endpoint."""

    timeout = 60

    async def scrape(self, url: str) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
        response = await treq.get(f"{url}/metrics", reactor=reactor, persistent=False)
        self.assertEqual(response.code, 200)
        content_type = response.headers.getRawHeaders(b"content-type")[0]
        text = (await response.content()).decode("utf-8")
        return content_type.decode(), parse(text)

    async def test_counts_after_relaying(self) -> None:
        """Messages relayed by the Python client show up as successes, bytes and gauges in /metrics."""
        gateway = await start_gateway(self, admin=True)
        health = await treq.get(f"{gateway.admin_url}/healthz", reactor=reactor, persistent=False)
        self.assertEqual((health.code, await health.content()), (200, b"ok\n"))
        client = HybridConnectionClient(gateway.connection_string, "hyco", reactor=reactor)
        with self.assertRaises(EndpointNotFoundError):
            await client.connect()  # nobody listens yet: a client error
        listener = HybridConnectionListener(gateway.connection_string, "hyco", reactor=reactor)
        await listener.open()

        async def echo() -> None:
            while (connection := await listener.accept_connection()) is not None:
                async for message in connection:
                    await connection.send(message)
                await connection.close()

        Deferred.fromCoroutine(echo())
        sent = 0
        for _ in range(3):
            connection = await client.connect()
            for payload in (b"x" * 1000, "hello"):
                await connection.send(payload)
                self.assertEqual(await connection.receive(), payload)
                sent += len(payload)
            await connection.close()
        factory = gateway.service.hybrid_factory
        await until(lambda: not factory.splices)

        content_type, samples = await self.scrape(gateway.admin_url)
        self.assertEqual(content_type, "text/plain; version=0.0.4; charset=utf-8")

        def value(name: str, **labels: str) -> float:
            """The latest scrape's sample (0 when absent)."""
            return samples.get((name, frozenset(labels.items())), 0.0)

        self.assertEqual(value("relay_listener_connections_total", entity="hyco", outcome="success"), 1)
        self.assertEqual(value("relay_sender_connections_total", entity="hyco", outcome="success"), 3)
        self.assertEqual(value("relay_sender_connections_total", entity="hyco", outcome="client_error"), 1)
        self.assertGreaterEqual(value("relay_bytes_transferred_total", entity="hyco"), 2 * sent)
        self.assertEqual(value("relay_sender_disconnects_total", entity="hyco"), 3)
        self.assertEqual(value("relay_active_connections", entity="hyco"), 0)
        self.assertEqual(value("relay_active_listeners", entity="hyco"), 1)

        await listener.close()
        registry = gateway.service.registry
        await until(lambda: registry.total() == 0)
        _, samples = await self.scrape(gateway.admin_url)
        self.assertEqual(value("relay_active_listeners", entity="hyco"), 0)
        self.assertEqual(value("relay_listener_disconnects_total", entity="hyco"), 1)
        missing = await treq.get(f"{gateway.admin_url}/nope", reactor=reactor, persistent=False)
        self.assertEqual(missing.code, 404)
        await missing.content()
