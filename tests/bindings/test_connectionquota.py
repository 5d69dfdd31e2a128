"""Concurrent connections per namespace (spec 12: 5,000 by default) for the SOAP bindings."""

from __future__ import annotations

from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred
from twisted.web._newclient import ResponseNeverReceived
from twisted.web.http_headers import Headers

from bindings.channels import BytesProducer, read_capped
from bindings.soap import SoapVersion, parse_envelope

from .test_httpsoap import ADD, ADD_BODY, HttpTestCase, soap11
from .wcfharness import HOST

FULL = "Quota exceeded: namespace 'test' allows 3 concurrent connections"


class BindingConnectionLimitTests(HttpTestCase):
    """A namespace that allows three connections, shared by SOAP names and hybrid connections."""

    def limits(self) -> dict[str, float]:
        return {"max_connections_per_namespace": 3}

    def count(self) -> int:
        return self.service.connections.count("test")

    def held_call(self, agent: RequestTraversalAgent) -> Deferred[object]:
        raw = Headers(
            {
                b"content-type": [b"text/xml"],
                b"soapaction": [ADD.action.encode()],
                b"servicebusauthorization": [self.token("calc").encode()],
            }
        )
        pending = agent.request(b"POST", f"http://{HOST}/calc".encode(), raw, BytesProducer(soap11(ADD_BODY)))
        agent.flush()
        self.net.flush()
        return pending

    def test_listeners_senders_and_calls_count_until_they_end(self) -> None:
        """A listener, a WebSocket sender and an HTTP call in flight fill it; further ones are refused."""
        self.host()  # the service's listener socket
        self.assertEqual(self.count(), 1)
        sender = self.wcf("calc", "send")
        self.assertEqual((sender.status, self.count()), (101, 2))
        self.calculator.hold = True
        pending = self.held_call(self.agent)
        self.assertEqual(self.count(), 3)

        refused = self.wcf("calc", "send")
        self.assertEqual(refused.status, 403)
        self.assertIn(FULL, refused.status_line)
        refused_listener = self.wcf("calc", "listen")
        self.assertEqual(refused_listener.status, 403)
        status, _, data = self.post("/calc", soap11(ADD_BODY))
        self.assertEqual(status, 403)
        fault = self.fault_of(data)
        self.assertEqual(fault[0], "QuotaExceeded")
        self.assertIn(FULL, fault[1])
        self.assertEqual(self.count(), 3)

        waiting, _, _ = self.calculator.held.pop()
        waiting.callback(5)
        response = self.settle(pending)
        self.assertEqual(response.code, 200)  # type: ignore[attr-defined]
        self.settle(read_capped(response, 1 << 20))
        self.assertEqual(self.count(), 2)
        sender.sendClose(1000)
        self.net.flush()
        self.assertEqual(self.count(), 1)
        self.calculator.hold = False
        status, _, data = self.post("/calc", soap11(ADD_BODY))
        self.assertEqual(status, 200)
        self.assertEqual(len(parse_envelope(data, SoapVersion.SOAP11).body), 1)
        self.assertEqual(self.count(), 1)

    def test_hybrid_connections_share_the_count(self) -> None:
        """A hybrid connection's listeners take places in the same namespace as SOAP names."""
        self.host()
        auth = {"ServiceBusAuthorization": self.token("hyco")}
        for _ in range(2):
            self.net.connect(f"wss://{HOST}/$hc/hyco?sb-hc-action=listen", headers=auth)
        self.assertEqual(self.count(), 3)
        self.assertEqual(self.wcf("calc", "send").status, 403)

    def test_a_caller_that_leaves_gives_its_place_back(self) -> None:
        """An HTTP caller gone before its answer no longer counts."""
        self.host()
        self.calculator.hold = True
        pending = self.held_call(self.agent)
        self.assertEqual(self.count(), 2)
        pending.cancel()
        self.agent.flush()
        self.net.flush()
        self.failureResultOf(pending, ResponseNeverReceived)
        self.assertEqual(self.count(), 1)

    def test_a_refused_listener_leaves_no_hybrid_connection_behind(self) -> None:
        """A listener refused for the namespace's count does not leave its auto-created hybrid connection."""
        self.host()
        for _ in range(2):
            self.wcf("calc", "send")
        self.assertEqual(self.count(), 3)
        refused = self.net.connect(
            f"wss://{HOST}/$hc/fresh?sb-hc-action=listen",
            headers={"ServiceBusAuthorization": self.token("fresh")},
        )
        self.net.advance(10)  # refused listeners are answered after the failure throttle's delay
        self.assertEqual(refused.status, 403)
        self.assertIn(FULL, refused.status_line)
        self.assertIsNone(self.service.store.get(self.namespace, "fresh"))
