"""The gateway service while it stops: connections already open get 503 for anything new (in memory)."""

from __future__ import annotations

from .httpharness import RawHttpClient
from .wsharness import GatewayTestCase

UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


class StoppingTests(GatewayTestCase):
    """
    Stopping closes the ports, but accepted connections stay open while the gateway drains.

    Whatever they ask from then on is refused with the documented 503 and the connection closed after it;
    nothing reaches the routers, which have told their listeners to go away.
    """

    def keep_alive(self) -> RawHttpClient:
        """An HTTP connection that has been used once (404) and is kept open."""
        client: RawHttpClient = self.net.attach(RawHttpClient(), "10.0.0.5")
        client.request("GET", "/nothing")
        self.net.flush()
        self.assertEqual(client.reply.status, 404)
        return client

    def test_request_on_a_kept_connection(self) -> None:
        """A relayed HTTP request sent after the stop gets 503 (was 502, no listener) and a close."""
        self.listen()
        client = self.keep_alive()
        self.gateway.stopService()
        self.net.flush()
        client.request("GET", "/hyco/", {"ServiceBusAuthorization": self.token()})
        self.net.flush()
        self.assertEqual(client.reply.status, 503)
        self.assertIn(b"Server shutting down", client.reply.body)
        self.assertEqual(client.reply.header("connection"), "close")
        self.assertIsNotNone(client.lost)

    def test_listener_upgrade_on_a_kept_connection(self) -> None:
        """A listener's upgrade after the stop is refused with 503; it was admitted and registered."""
        client = self.keep_alive()
        self.gateway.stopService()
        self.net.flush()
        client.request(
            "GET", "/$hc/hyco?sb-hc-action=listen", {"ServiceBusAuthorization": self.token(), **UPGRADE}
        )
        self.net.flush()
        self.assertEqual(client.reply.status, 503)
        self.assertEqual(self.gateway.registry.total(), 0)

    def test_first_request_after_the_stop(self) -> None:
        """A connection accepted before the stop whose sender upgrade comes after it gets 503, not 404."""
        self.listen()
        client: RawHttpClient = self.net.attach(RawHttpClient(), "10.0.0.6")
        self.gateway.stopService()
        self.net.flush()
        client.request(
            "GET", "/$hc/hyco?sb-hc-action=connect", {"ServiceBusAuthorization": self.token(), **UPGRADE}
        )
        self.net.flush()
        self.assertEqual(client.reply.status, 503)

    def test_body_refused_unread(self) -> None:
        """A large body sent after the stop is answered 503 before it is read."""
        self.listen()
        client = self.keep_alive()
        self.gateway.stopService()
        self.net.flush()
        client.methods.append("POST")
        client.send(
            b"POST /hyco/up HTTP/1.1\r\nHost: relay.test\r\nContent-Length: 100000000\r\n"
            b"ServiceBusAuthorization: " + self.token().encode() + b"\r\n\r\n" + b"x" * 1000
        )
        self.net.flush()
        self.assertEqual(client.reply.status, 503)
        self.assertIsNotNone(client.lost)

    def test_started_again(self) -> None:
        """A stopped gateway that is started again serves requests again."""
        self.successResultOf(self.gateway.stopService())
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        client: RawHttpClient = self.net.attach(RawHttpClient(), "10.0.0.7")
        client.request("GET", "/hyco/", {"ServiceBusAuthorization": self.token()})
        self.net.flush()
        self.assertEqual(client.reply.status, 502)  # no listener, as before the stop


class ConfiguredEntityMetricsTests(GatewayTestCase):
    """Configured entities keep their own metric series, however many names others made up first."""

    def limits(self) -> dict[str, float]:
        """One entity label per family for names nobody configured."""
        return {"metrics_max_entities": 1}

    def test_configured_names_are_never_folded(self) -> None:
        """
        Configured names are counted under their own names after made-up ones used up the limit.

        With C{auto_create} any token holder can make names up; the second one here goes to C{_other}.
        """
        instruments = self.gateway.instruments
        for name in ("made-up-1", "made-up-2", "hyco", "open"):
            instruments.listener_connected(name)
        value = self.gateway.metrics.value
        family = "relay_listener_connections_total"
        self.assertEqual(value(family, entity="made-up-1", outcome="success"), 1)
        self.assertEqual(value(family, entity="_other", outcome="success"), 1)
        self.assertEqual(value(family, entity="hyco", outcome="success"), 1)
        self.assertEqual(value(family, entity="open", outcome="success"), 1)
