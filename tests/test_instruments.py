"""The gateway counts hybrid connection outcomes on its metrics registry (in memory, no sockets)."""

from __future__ import annotations

import json

from relay.metrics import UNKNOWN

from .httpharness import RawHttpClient
from .wsharness import KEY, GatewayTestCase, RecordingClient


class HybridMetricsTests(GatewayTestCase):
    """Listener and sender connections by outcome, disconnects, bytes and the active gauges."""

    def value(self, name: str, **labels: str) -> float:
        return self.gateway.metrics.value(name, **labels)

    def accept_next(self, listener: RecordingClient, extra: str = "") -> RecordingClient:
        accept = json.loads(listener.messages[-1][0])["accept"]
        return self.net.connect(accept["address"] + extra)

    def test_listener_success_and_disconnect(self) -> None:
        """An admitted listener counts as a success and as active until it goes offline."""
        listener = self.listen()
        self.assertEqual(self.value("relay_listener_connections_total", entity="hyco", outcome="success"), 1)
        self.assertEqual(self.value("relay_active_listeners", entity="hyco"), 1)
        listener.sendClose(1000)
        self.net.flush()
        self.assertEqual(self.value("relay_active_listeners", entity="hyco"), 0)
        self.assertEqual(self.value("relay_listener_disconnects_total", entity="hyco"), 1)

    def test_listener_refusals_are_client_errors(self) -> None:
        """Bad tokens, unknown names and the quota are client errors; unknown names count as _unknown."""
        self.listen(token="SharedAccessSignature sr=x&sig=AAAA&se=1&skn=root")
        self.listen("nothing", token=self.token("nothing"), source="10.0.0.3")
        self.listen(), self.listen()
        self.listen(source="10.0.0.2")  # third listener: quota of 2
        self.net.advance(10)
        self.assertEqual(
            self.value("relay_listener_connections_total", entity="hyco", outcome="client_error"), 2
        )
        self.assertEqual(
            self.value("relay_listener_connections_total", entity=UNKNOWN, outcome="client_error"), 1
        )
        self.assertEqual(self.value("relay_listener_connections_total", entity="hyco", outcome="success"), 2)

    def test_sender_outcomes(self) -> None:
        """No listener and a listener's 4xx reject are client errors; a rendezvous timeout a server error."""
        self.send()  # nobody listens: 404
        self.send(token=self.token(key_name="listen-only", key=KEY[::-1]))  # 403
        listener = self.listen()
        self.send()
        self.accept_next(listener, extra="&statusCode=401&statusDescription=no")
        waiting = self.send()
        self.net.advance(31)  # the listener never comes
        self.assertEqual(waiting.status, 504)
        self.assertEqual(
            self.value("relay_sender_connections_total", entity="hyco", outcome="client_error"), 3
        )
        self.assertEqual(
            self.value("relay_sender_connections_total", entity="hyco", outcome="server_error"), 1
        )
        self.assertEqual(self.value("relay_sender_connections_total", entity="hyco", outcome="success"), 0)

    def test_sender_that_hangs_up_while_waiting(self) -> None:
        """
        A sender that leaves before a listener accepts it is a client error (nginx's 499).

        Its ticket is gone, and every upgrade ends under one outcome; it used to be counted under none.
        """
        self.listen()
        # The gateway's own upgrade path, and Autobahn's (an upgrade with an Origin goes there).
        for n, extra in enumerate(({}, {"Origin": "https://app.example"}), start=1):
            sender = self.send(headers_extra=extra)
            self.assertEqual(len(self.gateway.hybrid.rendezvous), 1)
            sender.transport.abortConnection()
            self.net.flush()
            self.assertEqual(len(self.gateway.hybrid.rendezvous), 0)
            self.assertEqual(
                self.value("relay_sender_connections_total", entity="hyco", outcome="client_error"), n
            )
        self.net.advance(31)  # their rendezvous window passes: nothing more is counted
        self.assertEqual(
            sum(
                self.value("relay_sender_connections_total", entity="hyco", outcome=outcome)
                for outcome in ("success", "client_error", "server_error")
            ),
            2,
        )

    def test_pair_success_bytes_and_disconnect(self) -> None:
        """A paired sender is a success, is active while open, and its bytes are counted both ways."""
        listener = self.listen()
        sender = self.send()
        rendezvous = self.accept_next(listener)
        self.assertEqual((sender.status, rendezvous.status), (101, 101))
        self.assertEqual(self.value("relay_sender_connections_total", entity="hyco", outcome="success"), 1)
        self.assertEqual(self.value("relay_active_connections", entity="hyco"), 1)
        sender.sendMessage(b"x" * 1000, isBinary=True)
        rendezvous.sendMessage(b"y" * 500, isBinary=True)
        self.net.flush()
        self.assertGreaterEqual(self.value("relay_bytes_transferred_total", entity="hyco"), 1500)
        sender.sendClose(1000)
        self.net.flush()
        self.assertEqual(self.value("relay_active_connections", entity="hyco"), 0)
        self.assertEqual(self.value("relay_sender_disconnects_total", entity="hyco"), 1)

    def test_exposition_lists_entities(self) -> None:
        """Every configured hybrid connection has an active-listener sample, 0 when nobody listens."""
        text = self.gateway.metrics.exposition().decode()
        self.assertIn('relay_active_listeners{entity="hyco"} 0\n', text)
        self.assertIn('relay_active_listeners{entity="open"} 0\n', text)
        self.assertIn("# TYPE relay_listener_connections_total counter\n", text)


class HttpMetricsTests(GatewayTestCase):
    """Relayed HTTP requests are counted by status class when they end."""

    def test_answered_and_refused(self) -> None:
        """A relayed 200 counts as 2xx with its body bytes; a request with no listener as 5xx."""
        sender = self.net.attach(RawHttpClient(), "10.0.0.5")
        sender.request("GET", "/hyco/", {"ServiceBusAuthorization": self.token()})
        self.net.flush()
        self.assertEqual(sender.reply.status, 502)
        listener = self.listen()
        sender.request("GET", "/hyco/", {"ServiceBusAuthorization": self.token()})
        self.net.flush()
        request = json.loads(listener.messages[-1][0])["request"]
        response = {"requestId": request["id"], "statusCode": 200, "responseHeaders": {}, "body": True}
        listener.sendMessage(json.dumps({"response": response}).encode(), isBinary=False)
        listener.sendMessage(b"z" * 300, isBinary=True)
        self.net.flush()
        metrics = self.gateway.metrics
        self.assertEqual(metrics.value("relay_http_requests_total", entity="hyco", status_class="5xx"), 1)
        self.assertEqual(metrics.value("relay_http_requests_total", entity="hyco", status_class="2xx"), 1)
        self.assertEqual(metrics.value("relay_bytes_transferred_total", entity="hyco"), 300)
        self.assertEqual(metrics.value("relay_sender_connections_total", entity="hyco", outcome="success"), 0)

    def test_refused_bodies_are_not_relayed_bytes(self) -> None:
        """
        Only a request that went to a listener counts bytes: its body and the listener's answer.

        A refused upload and the relay's own error bodies used to count, so anyone without a token could
        inflate the counter.
        """
        sender = self.net.attach(RawHttpClient(), "10.0.0.5")
        sender.request("POST", "/hyco/up", {}, b"u" * 300_000)
        self.net.flush()
        self.assertEqual(sender.reply.status, 401)
        metrics = self.gateway.metrics
        self.assertEqual(metrics.value("relay_bytes_transferred_total", entity="hyco"), 0)
        self.assertEqual(metrics.value("relay_http_requests_total", entity="hyco", status_class="4xx"), 1)
        listener = self.listen()
        sender.request("POST", "/hyco/up", {"ServiceBusAuthorization": self.token()}, b"q" * 1000)
        self.net.flush()
        self.assertEqual(listener.messages[-1], (b"q" * 1000, True))
        request = json.loads(listener.messages[-2][0])["request"]
        response = {"requestId": request["id"], "statusCode": 200, "responseHeaders": {}, "body": True}
        listener.sendMessage(json.dumps({"response": response}).encode(), isBinary=False)
        listener.sendMessage(b"z" * 20, isBinary=True)
        self.net.flush()
        self.assertEqual(sender.reply.status, 200)
        self.assertEqual(metrics.value("relay_bytes_transferred_total", entity="hyco"), 1020)
