"""
The gateway service as it starts and while it stops (in memory).

Starting, it records its endpoint in the state directory; stopping, connections already open get 503 for
anything new.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from relay.service import GatewayService, GatewaySettings

from .httpharness import RawHttpClient
from .wsharness import GatewayTestCase, RecordingClient

UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


class StartingTests(SynchronousTestCase):
    """What the gateway writes to its state directory as it starts."""

    def test_endpoint_that_cannot_be_recorded(self) -> None:
        """An endpoint record the state directory cannot take is one warning; the start goes on."""
        state = Path(self.mktemp())
        (state / "gateway.json" / "in-the-way").mkdir(parents=True)  # gateway.json cannot be replaced
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service = GatewayService(GatewaySettings(state_dir=state), reactor=MemoryReactorClock())
        service.startService()
        self.addCleanup(service.stopService)
        self.assertIs(self.successResultOf(service.ready), service)
        [warning] = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(warning["path"], str(state.absolute() / "gateway.json"))
        self.assertIn("--endpoint", warning["log_format"])
        self.assertTrue(any("connection_string" in e for e in events))

    def test_relative_state_dir_and_a_change_of_directory(self) -> None:
        """
        A relative state directory is where it was when the gateway was built, after a chdir too.

        twistd changes to its C{--rundir} between building the service and starting it: the key was
        made in one directory and gateway.json written in another, so C{relay connection-string} read no
        endpoint, or an old one.
        """
        base = Path(self.mktemp()).absolute()
        (base / "rundir").mkdir(parents=True)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(base)
        service = GatewayService(GatewaySettings(state_dir=Path("state")), reactor=MemoryReactorClock())
        os.chdir(base / "rundir")
        service.startService()
        self.addCleanup(service.stopService)
        self.successResultOf(service.ready)
        self.assertEqual(
            sorted(p.name for p in (base / "state").iterdir()), ["development-key", "gateway.json"]
        )
        self.assertFalse((base / "rundir" / "state").exists())

    def test_tls_public_urls(self) -> None:
        """A public URL with wss:// (or an upper-case HTTPS://) is TLS in the connection string and the record."""
        for url in ("wss://relay.example.org", "HTTPS://relay.example.org", "WSS://relay.example.org:8443"):
            state = Path(self.mktemp())
            settings = GatewaySettings(state_dir=state, public_url=url)
            service = GatewayService(settings, reactor=MemoryReactorClock())
            service.startService()
            self.addCleanup(service.stopService)
            self.successResultOf(service.ready)
            connection_string = service.connection_string()
            assert connection_string is not None
            self.assertNotIn("UseDevelopmentEmulator", connection_string, url)
            self.assertFalse(json.loads((state / "gateway.json").read_text())["plain"], url)

    def test_plain_public_urls(self) -> None:
        """A public URL with ws:// or http:// is plain (UseDevelopmentEmulator=true)."""
        for url in ("ws://relay.example.org", "http://relay.example.org"):
            service = GatewayService(
                GatewaySettings(state_dir=Path(self.mktemp()), public_url=url), reactor=MemoryReactorClock()
            )
            self.assertIn("UseDevelopmentEmulator=true", service.connection_string() or "", url)


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


class DrainTests(GatewayTestCase):
    """With C{drain_timeout}, what is under way when the gateway stops goes on; newcomers get 503."""

    def limits(self) -> dict[str, float]:
        """Ten seconds of drain."""
        return {"drain_timeout": 10.0}

    def pair(self) -> tuple[RecordingClient, RecordingClient, RecordingClient]:
        """A listener, a sender and the listener's rendezvous leg, paired."""
        listener = self.listen()
        sender = self.send()
        accept = json.loads(listener.messages[-1][0])["accept"]
        rendezvous = self.net.connect(accept["address"])
        self.assertEqual((sender.status, rendezvous.status), (101, 101))
        return listener, sender, rendezvous

    def test_a_pair_goes_on_and_the_stop_ends_with_it(self) -> None:
        """
        A relayed pair keeps relaying after the stop; a new sender gets 503; the stop ends with the pair.

        Without a drain, stopping ended every pair at once with 1001.
        """
        listener, sender, rendezvous = self.pair()
        stopped = self.gateway.stopService()
        self.net.flush()
        self.assertNoResult(stopped)
        self.assertTrue(self.gateway.draining)
        sender.sendMessage(b"still here", isBinary=True)
        self.net.flush()
        self.assertEqual(rendezvous.messages, [(b"still here", True)])
        self.assertIsNone(listener.closed)
        self.assertEqual(self.send().status, 503)
        sender.sendClose(1000)
        self.net.flush()
        self.net.advance(0.2)
        self.assertEqual(listener.closed and listener.closed[1], 1001)
        self.net.advance(10)
        self.successResultOf(stopped)

    def test_an_http_request_is_answered(self) -> None:
        """A relayed HTTP request under way when the gateway stops still gets its listener's answer."""
        listener = self.listen()
        sender: RawHttpClient = self.net.attach(RawHttpClient(), "10.0.0.8")
        sender.request("GET", "/hyco/", {"ServiceBusAuthorization": self.token()})
        self.net.flush()
        request = json.loads(listener.messages[-1][0])["request"]
        stopped = self.gateway.stopService()
        self.net.flush()
        response = {"requestId": request["id"], "statusCode": 200, "responseHeaders": {}, "body": False}
        listener.sendMessage(json.dumps({"response": response}).encode(), isBinary=False)
        self.net.flush()
        self.assertEqual(sender.reply.status, 200)
        self.net.advance(0.2)
        self.net.advance(10)
        self.successResultOf(stopped)

    def test_the_deadline_ends_what_is_left(self) -> None:
        """After C{drain_timeout} the pairs still open are ended with 1001, and the stop completes."""
        _, sender, rendezvous = self.pair()
        stopped = self.gateway.stopService()
        self.net.advance(9.9)
        self.assertIsNone(sender.closed)
        self.net.advance(0.2)
        self.assertEqual(sender.closed and sender.closed[1], 1001)
        self.assertEqual(rendezvous.closed and rendezvous.closed[1], 1001)
        self.net.advance(10)
        self.successResultOf(stopped)

    def test_hurry_ends_the_drain(self) -> None:
        """
        L{GatewayService.hurry} (a second SIGINT or SIGTERM under twistd) ends the drain at once.

        twistd's handlers took a second signal as another C{reactor.stop()}, logged C{ReactorNotRunning}
        as a critical error, and the drain went on for up to C{drain_timeout}.
        """
        _, sender, rendezvous = self.pair()
        stopped = self.gateway.stopService()
        self.net.advance(1)
        self.assertIsNone(sender.closed)
        self.gateway.hurry()
        self.net.flush()
        self.net.advance(0.2)
        self.assertEqual(sender.closed and sender.closed[1], 1001)
        self.assertEqual(rendezvous.closed and rendezvous.closed[1], 1001)
        self.net.advance(7)
        self.successResultOf(stopped)
        self.gateway.hurry()  # again, with nothing to hurry: nothing happens

    def test_nothing_under_way(self) -> None:
        """With nothing under way the stop does not wait."""
        self.listen()
        stopped = self.gateway.stopService()
        self.net.flush()
        self.net.advance(7)
        self.successResultOf(stopped)
