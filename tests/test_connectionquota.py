"""Concurrent connections per namespace (both specs' 5,000): the count, and hybrid connections' use of it."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from relay.config import ConfigError, parse_config
from relay.connectionquota import (
    MAX_CONNECTIONS_PER_NAMESPACE,
    ConnectionQuotaExceeded,
    NamespaceConnections,
)

from .httpharness import RawHttpClient
from .wsharness import GatewayTestCase, RecordingClient

FULL = "Quota exceeded: namespace 'test' allows 3 concurrent connections"


class NamespaceConnectionsTests(SynchronousTestCase):
    """The count itself."""

    def test_limit_and_release(self) -> None:
        """Up to the limit leases are given; past it they are refused; a release makes room, once."""
        connections = NamespaceConnections(2)
        first = connections.take("a")
        connections.take("a")
        with self.assertRaises(ConnectionQuotaExceeded) as refused:
            connections.take("a")
        self.assertEqual(
            refused.exception.message, "Quota exceeded: namespace 'a' allows 2 concurrent connections"
        )
        self.assertEqual(connections.count("b"), 0)
        connections.take("b")  # another namespace has its own count
        first.release()
        first.release()  # a second release gives nothing back
        self.assertFalse(first.held)
        self.assertEqual(connections.counts(), {"a": 1, "b": 1})
        connections.take("a")
        with self.assertRaises(ConnectionQuotaExceeded):
            connections.take("a")

    def test_empty_namespaces_take_no_room(self) -> None:
        """A namespace whose last connection ended leaves the table."""
        connections = NamespaceConnections()
        leases = [connections.take(f"ns{i}") for i in range(100)]
        for lease in leases:
            lease.release()
        self.assertEqual(connections.counts(), {})

    def test_default_and_bad_limit(self) -> None:
        """The specs' 5,000 by default; a limit below one is a mistake."""
        self.assertEqual(NamespaceConnections().limit, MAX_CONNECTIONS_PER_NAMESPACE)
        self.assertEqual(MAX_CONNECTIONS_PER_NAMESPACE, 5000)
        self.assertRaises(ValueError, NamespaceConnections, 0)

    def test_configured(self) -> None:
        """C{max_connections_per_namespace} in C{[gateway]}; a fraction or zero stops start-up."""
        self.assertEqual(parse_config({}, "relay.toml").limits["max_connections_per_namespace"], 5000)
        config = parse_config({"gateway": {"max_connections_per_namespace": 20}}, "relay.toml")
        self.assertEqual(config.limits["max_connections_per_namespace"], 20)
        for bad in (0, 2.5):
            with self.assertRaises(ConfigError):
                parse_config({"gateway": {"max_connections_per_namespace": bad}}, "relay.toml")


class HybridConnectionLimitTests(GatewayTestCase):
    """A namespace that allows three connections: listeners, WebSocket senders and HTTP requests count."""

    sender_headers: dict[str, str] = {}  # the direct path; an Origin sends the sender through Autobahn

    def limits(self) -> dict[str, float]:
        return {"max_connections_per_namespace": 3}

    def count(self) -> int:
        level = self.gateway.metrics.value("relay_namespace_connections", namespace="test")
        self.assertEqual(level, self.gateway.connections.count("test"))
        return int(level)

    def refused_listener(self) -> RecordingClient:
        listener = self.listen()
        self.net.advance(5)  # refused listeners are answered after the failure throttle's delay
        return listener

    def sender(self) -> RecordingClient:
        return self.send(headers_extra=self.sender_headers)

    def accept_next(self, listener: RecordingClient, query: str = "") -> RecordingClient:
        accept = json.loads(listener.messages[-1][0])["accept"]
        return self.net.connect(accept["address"] + query)

    def http_get(self, path: str = "/hyco/x") -> RawHttpClient:
        client: RawHttpClient = self.net.attach(RawHttpClient(), "10.0.0.5")
        client.request("GET", path, {"ServiceBusAuthorization": self.token("hyco")})
        self.net.flush()
        return client

    def answer(self, listener: RecordingClient) -> None:
        request: dict[str, Any] = json.loads(listener.messages[-1][0])["request"]
        response = {"requestId": request["id"], "statusCode": 200, "responseHeaders": {}, "body": False}
        listener.sendMessage(json.dumps({"response": response}).encode(), isBinary=False)
        self.net.flush()

    def test_every_kind_of_connection_counts_until_it_ends(self) -> None:
        """A listener, a paired sender and a request in flight fill the namespace; each end frees its place."""
        listener = self.listen()
        self.assertEqual(self.count(), 1)
        sender = self.sender()
        rendezvous = self.accept_next(listener)
        self.assertEqual((sender.status, rendezvous.status), (101, 101))
        self.assertEqual(self.count(), 2)  # the listener's rendezvous serves the sender: no place of its own
        waiting = self.http_get()
        self.assertEqual((waiting.replies, self.count()), ([], 3))

        refused_listener = self.refused_listener()
        self.assertEqual(refused_listener.status, 403)
        self.assertIn(FULL, refused_listener.status_line)
        refused_sender = self.sender()
        self.assertEqual(refused_sender.status, 403)
        self.assertIn(FULL, refused_sender.status_line)
        self.assertIn("TrackingId:", refused_sender.status_line)
        refused_request = self.http_get()
        self.assertEqual(refused_request.reply.status, 403)
        self.assertIn(FULL.encode(), refused_request.reply.body)
        self.assertEqual(self.count(), 3)
        self.assertEqual(
            self.gateway.metrics.value(
                "relay_sender_connections_total", entity="hyco", outcome="client_error"
            ),
            2,
        )

        self.answer(listener)
        self.assertEqual((waiting.reply.status, self.count()), (200, 2))
        again = self.http_get()
        self.answer(listener)
        self.assertEqual((again.reply.status, self.count()), (200, 2))

        sender.sendClose(1000)
        self.net.flush()
        self.assertEqual(self.count(), 1)
        listener.sendClose(1000)
        self.net.flush()
        self.assertEqual(self.count(), 0)
        self.assertEqual(self.gateway.connections.counts(), {})

    def test_a_waiting_sender_counts_until_it_leaves(self) -> None:
        """A sender waiting for its listener holds its place; leaving gives it back."""
        self.listen()
        sender = self.sender()
        self.assertEqual((sender.status, self.count()), (None, 2))
        sender.transport.loseConnection()
        self.net.flush()
        self.assertEqual(self.count(), 1)

    def test_refused_senders_and_requests_hold_no_place(self) -> None:
        """No listener (404 / 502), or a listener's rejection: nothing stays counted."""
        self.assertEqual(self.sender().status, 404)
        self.assertEqual(self.http_get().reply.status, 502)
        self.assertEqual(self.count(), 0)
        listener = self.listen()
        sender = self.sender()
        self.accept_next(listener, "&sb-hc-statusCode=403&sb-hc-statusDescription=no")
        self.assertEqual(sender.status, 403)
        self.assertEqual(self.count(), 1)

    def test_a_listener_over_its_entity_quota_gives_its_place_back(self) -> None:
        """A listener refused by the hybrid connection's own quota (2 here) is not counted either."""
        self.listen()
        self.listen()
        self.assertEqual(self.refused_listener().status, 403)
        self.assertEqual(self.count(), 2)

    def test_requests_to_the_limit_are_served(self) -> None:
        """The limit itself is allowed: the third connection is served, the fourth refused."""
        listener = self.listen()
        first, second = self.http_get(), self.http_get()
        self.assertEqual(self.count(), 3)
        self.assertEqual(self.http_get().reply.status, 403)
        for client in (first, second):
            request = json.loads(listener.messages[-1 if client is second else -2][0])["request"]
            response = {"requestId": request["id"], "statusCode": 204, "responseHeaders": {}, "body": False}
            listener.sendMessage(json.dumps({"response": response}).encode(), isBinary=False)
        self.net.flush()
        self.assertEqual([first.reply.status, second.reply.status], [204, 204])
        self.assertEqual(self.count(), 1)


class HybridConnectionLimitAutobahnTests(HybridConnectionLimitTests):
    """The same for senders whose upgrade goes through Autobahn (it has an Origin)."""

    sender_headers = {"Origin": "https://app.example"}
