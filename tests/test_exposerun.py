"""Tests for L{relay.exposerun}: what C{relay expose} writes on its terminal."""

from __future__ import annotations

import io
import json
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, LogLevel
from twisted.python import threadable
from twisted.trial.unittest import SynchronousTestCase

from relay.auth import Rights, SharedAccessRule
from relay.client import HybridConnectionClient
from relay.exposerun import Exposer, stderr_observer
from relay.localclient import LocalClient

from .client.fakes import ROOT_KEY, ROOT_KEY_NAME, FakeRelayTestCase
from .client.test_http_abandon import FakeLocalServer

CONNECTION_STRING = (
    "Endpoint=sb://localhost:1/;SharedAccessKeyName=k;SharedAccessKey=c2VjcmV0;EntityPath=hyco"
)
HOSTILE = "id\rforged line\x1b[2K\x1b]0;title\x07\x00\x7f\x9bend"
ESCAPED = "id\\rforged line\\x1b[2K\\x1b]0;title\\x07\\x00\\x7f\\x9bend"


def fake_relay_exposer(local_url: str, reactor: MemoryReactorClock, err: io.StringIO) -> Exposer:
    """An L{Exposer} of C{hyco} on the fake relay (L{FakeRelayTestCase}), its lines written to C{err}."""
    connection_string = (
        f"Endpoint=ws://relay.test:80/;SharedAccessKeyName={ROOT_KEY_NAME};"
        f"SharedAccessKey={ROOT_KEY};EntityPath=hyco"
    )
    return Exposer(local_url, connection_string, None, reactor=reactor, out=io.StringIO(), err=err)


class StderrObserverTests(SynchronousTestCase):
    """The log on stderr: classic lines at the chosen level, controls from peers escaped."""

    def test_controls_escaped(self) -> None:
        """A request id or error text cannot put a lone CR or an escape sequence on the terminal."""
        err = io.StringIO()
        log = Logger(namespace="relay.expose.Forwarder", observer=stderr_observer(err, LogLevel.info))
        log.warn("request {request_id} not forwarded: {problem}", request_id=HOSTILE, problem="two\nlines\tx")
        self.assertTrue(
            err.getvalue().endswith(
                f" [relay.expose.Forwarder#warn] request {ESCAPED} not forwarded: two\n\tlines\tx\n"
            ),
            err.getvalue(),
        )

    def test_level(self) -> None:
        """Events below the level are not written."""
        err = io.StringIO()
        log = Logger(namespace="t", observer=stderr_observer(err, LogLevel.warn))
        log.info("quiet")
        log.warn("loud")
        self.assertEqual(err.getvalue().count("\n"), 1)
        self.assertIn("[t#warn] loud\n", err.getvalue())


class ExposerLinesTests(SynchronousTestCase):
    """Access lines (stdout) and notes (stderr) are one line each, whatever a peer put in them."""

    def setUp(self) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()
        self.exposer = Exposer(
            "http://127.0.0.1:8080",
            CONNECTION_STRING,
            None,
            reactor=MemoryReactorClock(),
            out=self.out,
            err=self.err,
        )

    def test_access_line(self) -> None:
        """A path with controls or a line feed is written escaped, on one line."""
        self.exposer.forwarder.log_line(f'"GET /{HOSTILE}\n" 200\t1ms')
        self.assertEqual(self.out.getvalue(), f'"GET /{ESCAPED}\\n" 200\t1ms\n')

    def test_a_running_reactors_turn_writes_its_lines_together(self) -> None:
        """While the reactor runs, a turn's access lines go out in one write at the turn's end, in order."""
        reactor: Any = self.exposer.reactor
        reactor.running = True
        previous_io_thread = threadable.ioThread
        threadable.registerAsIOThread()
        self.addCleanup(setattr, threadable, "ioThread", previous_io_thread)
        writes: list[str] = []
        real_write = self.out.write
        self.patch(self.out, "write", lambda text: writes.append(text) or real_write(text))
        for i in range(3):
            self.exposer.forwarder.log_line(f'"GET /{i}" 200\t1ms')
        self.assertEqual(self.out.getvalue(), "")
        reactor.advance(0)  # the end of the turn (a timer of no delay on a reactor without the lean dispatch)
        self.assertEqual(writes, ['"GET /0" 200\t1ms\n"GET /1" 200\t1ms\n"GET /2" 200\t1ms\n'])
        self.exposer.forwarder.log_line('"GET /last" 200\t1ms')
        for function, args, kwargs in reactor.triggers["after"]["shutdown"]:  # the reactor stops
            function(*args, **kwargs)
        self.assertEqual(writes[1:], ['"GET /last" 200\t1ms\n'])
        reactor.advance(0)
        self.assertEqual(len(writes), 2)

    def test_quick_lane(self) -> None:
        """The listener offers requests to the forwarder's quick lane first."""
        self.assertIs(self.exposer.http._quick, self.exposer.forwarder.quick)

    def test_note(self) -> None:
        """An error text from the relay is written escaped, on one line."""
        self.exposer.listener.on_offline(ConnectionError(f"{HOSTILE}\nrelay expose: forged"))  # type: ignore[misc]
        self.assertEqual(
            self.err.getvalue(),
            f"relay expose: connection lost ({ESCAPED}\\nrelay expose: forged); reconnecting\n",
        )


class ReconnectRefusedTests(FakeRelayTestCase, SynchronousTestCase):
    """After a good start, how C{relay expose} takes the relay refusing it on reconnecting."""

    def setUp(self) -> None:
        super().setUp()
        self.err = io.StringIO()
        self.exposer = fake_relay_exposer("http://127.0.0.1:8080", self.reactor, self.err)
        self.running = Deferred.fromCoroutine(self.exposer.run())
        self.network.flush()
        self.assertIn("relay expose: online", self.err.getvalue())
        self.addCleanup(self.stop)

    def stop(self) -> None:
        stopping = Deferred.fromCoroutine(self.exposer.stop())
        self.network.advance(5)
        self.successResultOf(stopping)

    def listens(self) -> int:
        return sum(1 for upgrade in self.relay.upgrades if upgrade.action == "listen")

    def test_key_rotated(self) -> None:
        """
        A 401 on reconnecting (the key was changed on the relay) ends expose with status 1.

        One line says so, as the same refusal does at start: retrying with the same key cannot help.
        """
        self.relay.rules = [SharedAccessRule(ROOT_KEY_NAME, "the-new-key", Rights.MANAGE)]
        self.relay.close_listeners(1001, "Shutting down")
        self.network.advance(600)
        self.assertEqual(self.successResultOf(self.running), 1)
        self.assertEqual(self.listens(), 2, "no retry after the refusal")
        self.assertIn(
            "relay expose: the relay refused the listener on reconnecting: 401", self.err.getvalue()
        )

    def test_forbidden_keeps_trying(self) -> None:
        """A 403 (a full quota clears on its own) is retried with back-off until the relay takes it again."""
        self.relay.deny = lambda upgrade: (403, "Quota exceeded") if upgrade.action == "listen" else None
        self.relay.close_listeners(1001, "Shutting down")
        self.network.advance(600)
        self.assertNoResult(self.running)
        self.assertGreater(self.listens(), 5)
        self.assertLess(self.listens(), 60, "the back-off grew to its cap")
        self.relay.deny = None
        self.network.advance(60)
        self.assertTrue(self.exposer.listener.is_online)
        self.assertEqual(self.err.getvalue().count("relay expose: online"), 2)


class StopTests(FakeRelayTestCase, SynchronousTestCase):
    """SIGINT/SIGTERM (L{Exposer.stop}): answers in flight finish before the listener goes."""

    def setUp(self) -> None:
        super().setUp()
        self.err = io.StringIO()
        self.exposer = fake_relay_exposer("http://127.0.0.1:8000", self.reactor, self.err)
        self.local = FakeLocalServer()
        self.exposer.forwarder.client = LocalClient(
            self.reactor, "http", "127.0.0.1", 8000, endpoint=self.local
        )
        self.running = Deferred.fromCoroutine(self.exposer.run())
        self.network.flush()
        self.assertTrue(self.exposer.listener.is_online)
        self.count = 0

    def request(self) -> None:
        """The relay sends a small GET on the control channel."""
        self.count += 1
        fields = {
            "address": f"ws://relay.test:80/$hc/hyco?sb-hc-action=request&sb-hc-id=r{self.count}",
            "id": f"r{self.count}",
            "method": "GET",
            "requestTarget": "/hyco/x",
            "requestHeaders": {"Host": "relay.test"},
            "remoteEndpoint": {"address": "192.0.2.7", "port": 4000},
            "body": False,
        }
        self.relay.listeners[0].protocol.sendMessage(json.dumps({"request": fields}).encode())
        self.network.flush()

    def statuses(self) -> dict[str, int]:
        return {
            m["response"]["requestId"]: m["response"]["statusCode"]
            for m in self.relay.control_messages
            if isinstance(m, dict) and "response" in m
        }

    def test_answer_in_flight_finishes(self) -> None:
        """
        The listener stays until the answer in flight has gone back; a request meanwhile gets 503.

        Before, the control channel closed at once and the relay answered the sender 502 ("The listener
        went away before responding").
        """
        self.request()
        [(protocol, _transport)] = self.local.connections
        stopping = Deferred.fromCoroutine(self.exposer.stop())
        self.network.advance(1, step=0.05)
        self.assertNoResult(stopping)
        self.assertEqual(self.relay.listener_closes, [])
        self.request()
        self.assertEqual(self.statuses(), {"r2": 503})
        self.assertEqual(len(self.local.connections), 1, "nothing new reaches the local server")
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.network.advance(1, step=0.05)
        self.successResultOf(stopping)
        self.assertEqual(self.statuses(), {"r2": 503, "r1": 200})
        self.assertEqual(self.relay.listener_closes, [(True, 1000, None)])
        self.assertEqual(self.successResultOf(self.running), 0)
        self.assertIn("relay expose: stopping: 1 answer in flight", self.err.getvalue())

    def test_drain_is_bounded(self) -> None:
        """A local server that never answers holds the stop for 10 s at most."""
        self.request()
        stopping = Deferred.fromCoroutine(self.exposer.stop())
        self.network.advance(9.5, step=0.25)
        self.assertNoResult(stopping)
        self.network.advance(1, step=0.25)
        self.successResultOf(stopping)
        self.assertEqual(self.relay.listener_closes, [(True, 1000, None)])

    def test_second_signal_stops_at_once(self) -> None:
        """L{Exposer.hurry} (a second SIGINT or SIGTERM) ends the wait: the listener goes now."""
        self.request()
        stopping = Deferred.fromCoroutine(self.exposer.stop())
        self.network.advance(1, step=0.05)
        self.assertNoResult(stopping)
        self.exposer.hurry()
        self.network.advance(0.1, step=0.05)
        self.successResultOf(stopping)
        self.assertEqual(self.relay.listener_closes, [(True, 1000, None)])
        self.assertIn("relay expose: stopping now", self.err.getvalue())

    def test_idle(self) -> None:
        """With nothing in flight the listener closes at once, without a note."""
        stopping = Deferred.fromCoroutine(self.exposer.stop())
        self.network.flush()
        self.successResultOf(stopping)
        self.assertEqual(self.relay.listener_closes, [(True, 1000, None)])
        self.assertNotIn("stopping", self.err.getvalue())

    def test_websockets_are_closed_going_away(self) -> None:
        """
        A WebSocket relayed at the stop is closed with 1001 on both sides, not dropped with the process.

        Before, the local server saw its connection cut without a closing handshake (1006).
        """
        closes: list[tuple[bool, int | None]] = []

        class Echo(WebSocketServerProtocol):  # type: ignore[misc]
            def onMessage(self, payload: bytes, isBinary: bool) -> None:
                self.sendMessage(payload, isBinary)

            def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
                closes.append((wasClean, code))

        factory = WebSocketServerFactory(reactor=self.reactor)
        factory.protocol = Echo
        self.network.serve(8000, factory)
        client = HybridConnectionClient(
            "ws://relay.test:80", "hyco", self.root_tokens(), reactor=self.reactor
        )
        connecting = client.connect()
        self.network.flush()
        sender = self.successResultOf(connecting)
        sender.send("hi")
        self.network.flush()
        stopping = Deferred.fromCoroutine(self.exposer.stop())
        self.network.advance(2, step=0.05)
        self.successResultOf(stopping)
        self.assertEqual(closes, [(True, 1001)])
        self.assertEqual(sender.close_code, 1001)
        self.assertIn('"WEBSOCKET /" 101 closed', self.exposer.out.getvalue())  # type: ignore[union-attr]
