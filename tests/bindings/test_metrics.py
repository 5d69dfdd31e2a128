"""The SOAP bindings count messages, faults, slow subscribers and queue depths per name (in memory)."""

from __future__ import annotations

from bindings.settings import MULTICAST

from .calculator import IChat
from .test_httpsoap import ADD_BODY, HttpTestCase, soap11
from .test_wcf import CHAT, add_request, reply_for, subcode
from .wcfharness import BindingsTestCase, envelope_bytes

SAY = CHAT.operation("Say")


def say(i: int) -> bytes:
    return envelope_bytes(SAY.encode_request("me", str(i)), action=SAY.action, message_id=f"urn:uuid:{i}")


class WebSocketMetricsTests(BindingsTestCase):
    """Counting on the C{$wcf} channel."""

    def value(self, name: str, **labels: str) -> float:
        return self.service.metrics.value(name, **labels)

    def test_messages_and_bytes(self) -> None:
        """A routed request counts as a requestreply message with its size; listeners are active."""
        listener = self.listener("calc")
        sender = self.wcf("calc", "send")
        request = add_request(message_id="urn:uuid:1")
        sender.sendMessage(request, isBinary=False)
        self.net.flush()
        listener.sendMessage(reply_for(listener.messages[-1][0], 5), isBinary=False)
        self.net.flush()
        self.assertEqual(self.value("relay_binding_messages_total", entity="calc", shape="requestreply"), 1)
        self.assertGreaterEqual(
            self.value("relay_binding_message_bytes_total", entity="calc"), len(request) - 200
        )
        self.assertEqual(self.value("relay_active_listeners", entity="calc"), 1)

    def test_faults_by_subcode(self) -> None:
        """Faults are counted per name and subcode, whether they go to senders or listeners."""
        sender = self.wcf("calc", "send")
        sender.sendMessage(add_request(message_id="urn:uuid:n"), isBinary=False)
        self.net.flush()
        self.assertEqual(subcode(sender.messages[-1][0]), "NoListener")
        self.assertEqual(self.value("relay_binding_faults_total", entity="calc", subcode="NoListener"), 1)
        listener = self.wcf("calc", "listen")
        listener.sendMessage(add_request(message_id="urn:uuid:r"), isBinary=False)  # not r:Register
        self.net.flush()
        faults = self.service.metrics.get("relay_binding_faults_total").samples()
        self.assertEqual(sum(value for labels, value in faults if labels[0] == "calc"), 2, faults)

    def test_slow_subscriber_and_queue_depth(self) -> None:
        """A dropped slow subscriber is counted; queued copies show in the queue gauges meanwhile."""
        slow, _fast = self.listener("chat", MULTICAST, IChat), self.listener("chat", MULTICAST, IChat)
        slow.pump.serverIO.producer.pauseProducing()
        sender = self.wcf("chat", "send")
        sender.sendMessage(say(0), isBinary=False)
        sender.sendMessage(say(1), isBinary=False)
        self.net.flush()
        self.assertGreaterEqual(self.value("relay_binding_queued_messages", entity="chat"), 1)
        self.assertGreater(self.value("relay_binding_queued_bytes", entity="chat"), 0)
        for i in range(2, 5):
            sender.sendMessage(say(i), isBinary=False)
        self.net.flush()
        self.assertEqual(slow.closed[1], 1008)  # type: ignore[index]
        self.assertEqual(self.value("relay_binding_slow_subscriber_disconnects_total", entity="chat"), 1)
        self.assertEqual(self.value("relay_binding_messages_total", entity="chat", shape="multicast"), 5)
        self.assertEqual(self.value("relay_binding_queued_messages", entity="chat"), 0)


class HttpMetricsTests(HttpTestCase):
    """Counting on plain HTTP SOAP."""

    def test_fault_counted(self) -> None:
        """An HTTP sender's NoListener fault is counted for its name."""
        status, _, _ = self.post("/calc", soap11(ADD_BODY))
        self.assertEqual(status, 502)
        metrics = self.service.metrics
        self.assertEqual(metrics.value("relay_binding_faults_total", entity="calc", subcode="NoListener"), 1)
