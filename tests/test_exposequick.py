"""
Tests for L{relay.exposequick}: C{relay expose}'s quick lane answers exactly as the general path does.

Each test relays the same requests twice, once with the lane and once without it (the general path
alone), against the same local answers, and compares what went back on the control channel and into the
access log.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from relay.client.commands import RequestCommand, parse_command
from relay.client.http import HttpListener
from relay.client.httpresponse import CONTROL_RESPONSE_LIMIT, ResponseHeaders
from relay.expose import _HOP_BY_HOP
from relay.exposequick import response_headers
from relay.http1 import read_response_head
from relay.localclient import LocalResponse

from .client.test_http import FakeControl
from .client.test_http_abandon import FakeListener, forwarder_to_fake_local

WARM_UP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Expose:
    """A forwarder behind an L{HttpListener} on a fake control channel, with or without its quick lane."""

    def __init__(self, quick: bool) -> None:
        self.reactor = MemoryReactorClock()
        self.lines: list[str] = []
        self.forwarder, self.local = forwarder_to_fake_local(self.reactor, self.lines)
        self.listener = FakeListener()
        self.control = FakeControl()
        self.listener.control_channel = self.control
        self.taken: list[bool] = []
        lane = self.forwarder.quick

        def spy(command: RequestCommand, body: bytes | None, listener: HttpListener) -> bool:
            took = lane(command, body, listener)
            self.taken.append(took)
            return took

        self.http = HttpListener(
            self.listener,
            self.forwarder,
            reactor=self.reactor,
            on_response=self.forwarder.access_line,
            quick_lane=spy if quick else None,
        )
        self.count = 0

    def request(
        self,
        method: str = "GET",
        target: str = "/hyco/x",
        headers: dict[str, Any] | None = None,
        body: bytes | None = None,
    ) -> None:
        """The relay sends a whole request on the control channel."""
        self.count += 1
        fields = {
            "address": f"wss://relay.example/$hc/hyco?sb-hc-action=request&sb-hc-id=r{self.count}",
            "id": f"r{self.count}",
            "method": method,
            "requestTarget": target,
            "requestHeaders": {"Host": "relay.example"} if headers is None else headers,
            "remoteEndpoint": {"address": "192.0.2.7", "port": 4000},
            "body": body is not None,
        }
        command = parse_command(json.dumps({"request": fields}).encode())
        assert isinstance(command, RequestCommand)
        self.http.listener.request_handler(command, body)

    def answer(self, raw: bytes) -> None:
        """The local server's bytes, on the connection that carries the request in flight."""
        protocol, _ = self.local.connections[-1]
        protocol.dataReceived(raw)

    def warm(self) -> None:
        """One request answered, so that a kept connection waits for the next."""
        self.request()
        self.answer(WARM_UP)
        self.control.sent.clear()
        self.control.writes.clear()
        self.lines.clear()
        self.taken.clear()

    def sent(self) -> list[tuple[Any, bool]]:
        """What went back on the control channel: JSON decoded, bodies as bytes."""
        return [(payload if binary else json.loads(payload), binary) for payload, binary in self.control.sent]

    def access(self) -> list[str]:
        """The access lines without their time stamp and duration."""
        return [
            " ".join(f for f in line.split()[1:] if not re.fullmatch(r"[0-9.]+ms", f)) for line in self.lines
        ]


class EquivalenceTests(SynchronousTestCase):
    """For every kind of local answer, the lane sends what the general path sends."""

    def both(
        self,
        answer: bytes,
        *,
        method: str = "GET",
        headers: dict[str, Any] | None = None,
        body: bytes | None = None,
    ) -> tuple[Expose, Expose]:
        runs = []
        for quick in (True, False):
            expose = Expose(quick)
            expose.warm()
            expose.request(method, "/hyco/x?q=1", headers, body)
            if expose.local.connections[-1][1].value():
                expose.answer(answer)
            runs.append(expose)
        quick_run, general_run = runs
        self.assertEqual(quick_run.sent(), general_run.sent())
        self.assertEqual(quick_run.access(), general_run.access())
        self.assertEqual(
            [t.value() for _, t in quick_run.local.connections],
            [t.value() for _, t in general_run.local.connections],
        )
        self.assertEqual(quick_run.http.active, general_run.http.active)
        return quick_run, general_run

    def test_small_answer(self) -> None:
        """A small answer with a length goes back on the lane: one write, the response and its body."""
        quick, _ = self.both(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(quick.taken, [True])
        [(head, head_binary), (body, body_binary)] = quick.sent()
        self.assertEqual((head_binary, body_binary), (False, True))
        self.assertEqual(
            head["response"]["responseHeaders"], {"Content-Type": "text/plain", "Content-Length": "5"}
        )
        self.assertEqual(body, b"hello")
        self.assertEqual(quick.control.writes, [2])
        self.assertEqual(quick.http.active, 0)
        self.assertEqual(quick.access(), ['192.0.2.7 "GET /x?q=1" 200 5'])

    def test_repeated_and_hop_by_hop_fields(self) -> None:
        """Repeated names in any case become one list under the first spelling; hop-by-hop fields stay out."""
        quick, _ = self.both(
            b"HTTP/1.1 201 Made It\r\nSet-Cookie: a=1\r\nKeep-Alive: timeout=5\r\nset-cookie: b=2\r\n"
            b"Connection: keep-alive\r\nX-A: 1\r\nSET-COOKIE: c=3\r\nContent-Length: 0\r\n\r\n"
        )
        [(head, binary)] = quick.sent()
        self.assertFalse(binary)
        self.assertEqual(
            head["response"],
            {
                "requestId": "r2",
                "statusCode": 201,
                "statusDescription": "Made It",
                "responseHeaders": {"Set-Cookie": ["a=1", "b=2", "c=3"], "X-A": "1", "Content-Length": "0"},
                "body": False,
            },
        )

    def test_fields_named_by_connection(self) -> None:
        """
        Fields the local C{Connection} names are hop-by-hop too (RFC 9110, 7.6.1) and stay out.

        Before, expose dropped C{Connection} itself, and with it the only sign that they were this hop's.
        """
        quick, _ = self.both(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop, x-other\r\nX-Hop: 1\r\nX-Other: 2\r\n"
            b"X-Kept: 3\r\nContent-Length: 0\r\n\r\n"
        )
        [(head, _)] = quick.sent()
        self.assertEqual(head["response"]["responseHeaders"], {"X-Kept": "3", "Content-Length": "0"})

    def test_request_body_and_forwarded_host(self) -> None:
        """A request body and the sender's Host reach the local server as on the general path."""
        quick, _ = self.both(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nk",
            method="POST",
            headers={"Host": "relay.example", "Content-Type": "a/b", "Connection": "close", "X-N": 5},
            body=b"payload",
        )
        self.assertEqual(quick.taken, [True])
        sent = quick.local.connections[-1][1].value()
        self.assertIn(b"X-Forwarded-Host: relay.example\r\n", sent)
        self.assertIn(b"X-N: 5\r\n", sent)
        self.assertTrue(sent.endswith(b"\r\n\r\npayload"))

    def test_forwarded_host_is_expose_s_own(self) -> None:
        """A sender's own X-Forwarded-Host does not reach the local server: only the Host it used does."""
        quick, general = self.both(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nk",
            headers={"Host": "relay.example", "x-forwarded-host": "evil.example"},
        )
        for lane in (quick, general):
            sent = lane.local.connections[-1][1].value()
            self.assertIn(b"X-Forwarded-Host: relay.example\r\n", sent)
            self.assertNotIn(b"evil.example", sent)

    def test_answer_at_the_control_channel_limit(self) -> None:
        """The largest body the control channel takes still goes on the lane."""
        body = b"x" * CONTROL_RESPONSE_LIMIT
        quick, _ = self.both(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        self.assertEqual(quick.sent()[1], (body, True))

    def test_larger_answer_is_handed_over(self) -> None:
        """One byte more goes to the general path, which opens a rendezvous for it: nothing on the channel."""
        body = b"x" * (CONTROL_RESPONSE_LIMIT + 1)
        quick, general = self.both(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        self.assertEqual(quick.sent(), [])
        self.assertEqual(len(quick.reactor.tcpClients), len(general.reactor.tcpClients))
        self.assertEqual(len(quick.reactor.tcpClients), 1)
        self.assertEqual(quick.http.active, 1)  # until the rendezvous carries the answer

    def test_chunked_answer_is_handed_over(self) -> None:
        """An answer without a length is relayed from its head on by the general path."""
        quick, _ = self.both(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        self.assertEqual(quick.sent()[1], (b"abc", True))

    def test_head_and_no_content(self) -> None:
        """HEAD and 204 answers have no length to go by: the general path answers them."""
        self.both(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", method="HEAD")
        self.both(b"HTTP/1.1 204 No Content\r\n\r\n")

    def test_length_of_answers_without_body(self) -> None:
        """
        A HEAD or 304 answer's C{Content-Length} reaches the relay (it says the size of what a GET gets).

        Before, expose took it for the framing of a body that was not there and dropped it, so a C{curl
        -I} through the relay showed no size. A 204 has none to give.
        """
        for method, answer, length in (
            ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n", "12345"),
            ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n", "999999999"),
            ("GET", b'HTTP/1.1 304 Not Modified\r\nETag: "a"\r\nContent-Length: 7\r\n\r\n', "7"),
            ("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", None),
            ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", None),
        ):
            with self.subTest(method=method, answer=answer):
                quick, _ = self.both(answer, method=method)
                [(head, _)] = quick.sent()
                self.assertFalse(head["response"]["body"])
                headers = head["response"]["responseHeaders"]
                self.assertEqual(headers.get("Content-Length"), length)

    def test_local_failure(self) -> None:
        """A local server that answers garbage gets the relay the general path's 502."""
        quick, _ = self.both(b"garbage\r\n\r\n")
        [(head, head_binary), (body, body_binary)] = quick.sent()
        self.assertEqual((head_binary, body_binary), (False, True))
        self.assertEqual(head["response"]["statusCode"], 502)
        self.assertIn(b"did not answer. TrackingId:r2", body)
        self.flushLoggedErrors()

    def test_unsendable_request(self) -> None:
        """A request the local server cannot be sent is left to the general path, which answers 400."""
        quick, _ = self.both(b"", headers={"X-Bad": "a\r\nInjected: 1"})
        self.assertEqual(quick.taken, [False])
        self.assertEqual(quick.sent()[0][0]["response"]["statusCode"], 400)


class DurationTests(SynchronousTestCase):
    """The access line's duration counts from the request's arrival, on whichever path it ends."""

    def test_handed_over_after_waiting(self) -> None:
        """
        A local answer the lane hands over (chunked, too large, or a failure) took as long as on the general path.

        Before, the general path's clock started at the hand-over: a 504 after a minute was logged as 0 ms.
        """
        for answer in (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
        ):
            lines = []
            for quick in (True, False):
                expose = Expose(quick)
                expose.warm()
                expose.request()
                expose.reactor.advance(5)
                expose.answer(answer)
                if answer.endswith(b"\r\n\r\n") and b"Content-Length: 10" in answer:
                    protocol, _ = expose.local.connections[-1]
                    protocol.connectionLost(Failure(ConnectionDone()))
                lines.append(expose.lines[-1].split()[-1])
            with self.subTest(answer=answer):
                self.assertEqual(lines, ["5000.0ms", "5000.0ms"])
        self.flushLoggedErrors()


class WatchedControl(FakeControl):
    """A control channel that tells who watches it when it closes, as L{ControlChannel} does."""

    def __init__(self) -> None:
        super().__init__()
        self.watchers: set[Any] = set()

    def watch(self, watcher: Any) -> bool:
        if not self.open:
            return False
        self.watchers.add(watcher)
        return True

    def unwatch(self, watcher: Any) -> None:
        self.watchers.discard(watcher)

    def close(self) -> None:
        self.open = False
        watchers, self.watchers = self.watchers, set()
        for watcher in watchers:
            watcher()


class LaneTests(SynchronousTestCase):
    """When the lane declines, and what it does when the relay or the local server goes away."""

    def test_control_channel_closes_before_the_local_head(self) -> None:
        """
        The control channel closes while the local server has not answered: it is given up, on both paths.

        The relay answers that request 502 as the channel closes. The local connection is dropped and the
        slot freed at once, with the same access line either way. The lane used to wait for the local
        server: for ever without C{--timeout}, for an endless answer.
        """
        runs = []
        for quick in (True, False):
            expose = Expose(quick)
            expose.control = WatchedControl()
            expose.listener.control_channel = expose.control  # type: ignore[assignment]
            expose.warm()
            self.assertEqual(expose.control.watchers, set(), "an answered request is watched no more")
            expose.request()
            _, transport = expose.local.connections[-1]
            self.assertEqual((expose.http.active, transport.disconnecting), (1, False))
            expose.control.close()
            self.assertEqual((expose.http.active, transport.disconnecting), (0, True))
            self.assertEqual(expose.sent(), [])
            runs.append(expose)
        quick_run, general_run = runs
        self.assertEqual(quick_run.taken, [True])
        self.assertEqual(quick_run.access(), general_run.access())
        self.assertEqual(
            quick_run.access(), ['192.0.2.7 "GET /x" - 0 given up: the local server had not answered']
        )

    def test_no_kept_connection(self) -> None:
        """The first request has no kept connection to go to: the general path connects."""
        expose = Expose(quick=True)
        expose.request()
        self.assertEqual(expose.taken, [False])
        expose.answer(WARM_UP)
        self.assertEqual(expose.sent()[1], (b"ok", True))

    def test_other_access_log(self) -> None:
        """An access log other than the forwarder's wants request and response objects: no lane."""
        expose = Expose(quick=True)
        expose.warm()
        seen: list[Any] = []
        expose.http.on_response = lambda request, response, seconds: seen.append(response.status_code)
        expose.request()
        expose.answer(WARM_UP)
        self.assertEqual((expose.taken, seen), ([False], [200]))

    def test_busy_listener(self) -> None:
        """A listener at its limit answers 503 on the general path, lane or not."""
        expose = Expose(quick=True)
        expose.warm()
        expose.http.max_concurrent = 0
        expose.request()
        self.assertEqual(expose.taken, [])
        self.assertEqual(expose.sent()[0][0]["response"]["statusCode"], 503)

    def test_control_channel_closed(self) -> None:
        """An answer for a closed control channel is dropped with an info line; the slot is free again."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        expose = Expose(quick=True)
        expose.warm()
        expose.request()
        expose.control.open = False
        expose.answer(WARM_UP)
        self.assertEqual((expose.taken, expose.sent(), expose.http.active), ([True], [], 0))
        self.assertEqual(expose.access(), ['192.0.2.7 "GET /x" 200 0 given up: the sender got nothing'])
        self.assertTrue(any("control channel closed" in e["log_format"] for e in events))

    def test_answer_for_a_closed_control_channel_on_both_paths(self) -> None:
        """
        The local server answered but the control channel is gone: the line says the sender got nothing.

        Before, it read "200 0" as if an empty answer had been delivered.
        """
        for quick in (True, False):
            expose = Expose(quick)
            expose.warm()
            expose.request()
            expose.control.open = False
            expose.answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\ngone")
            self.assertEqual(expose.sent(), [])
            self.assertEqual(expose.access(), ['192.0.2.7 "GET /x" 404 0 given up: the sender got nothing'])

    def test_cut_body(self) -> None:
        """
        A local body cut short before anything went back gets the relay a 502 at once, on both paths.

        Before, nothing went back: the sender waited for the relay's C{request_timeout} (60 s by
        default) and got a 504 saying the listener had not answered.
        """
        runs = []
        for quick in (True, False):
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            expose = Expose(quick)
            expose.warm()
            expose.request()
            expose.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
            protocol, _ = expose.local.connections[-1]
            protocol.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(expose.http.active, 0)
            [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
            self.assertEqual(warning["request_id"], "r2")
            self.assertIn("closed the connection", warning["error"])
            runs.append(expose)
        quick_run, general_run = runs
        self.assertEqual(quick_run.taken, [True])
        self.assertEqual(quick_run.sent(), general_run.sent())
        [(head, _), (body, _)] = quick_run.sent()
        self.assertEqual(head["response"]["statusCode"], 502)
        self.assertEqual(
            body, b"The local server http://127.0.0.1:8000 broke off its answer. TrackingId:r2\n"
        )
        self.assertNotIn(b"half", body)
        self.assertEqual(quick_run.access(), general_run.access())
        self.assertEqual(quick_run.access(), [f'192.0.2.7 "GET /x" 502 {len(body)}'])


_NAMES = st.sampled_from(
    ["Set-Cookie", "set-cookie", "X-A", "x-a", "Connection", "Keep-Alive", "Content-Type", "Host", "Vary"]
)
_VALUES = st.text(alphabet="abc =;,/", max_size=8).map(str.strip)


class ResponseHeadersTests(SynchronousTestCase):
    """L{response_headers} gives the JSON the general path builds with L{ResponseHeaders}."""

    @given(st.lists(st.tuples(_NAMES, _VALUES), max_size=8), st.integers(0, 100))
    def test_as_the_general_path(self, fields: list[tuple[str, str]], length: int) -> None:
        raw = b"HTTP/1.1 200 OK\r\n" + b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in fields)
        raw += b"Content-Length: %d\r\n\r\n" % length
        found = read_response_head(raw, b"GET")
        assert found is not None
        local = LocalResponse(None, found[0])  # type: ignore[arg-type]
        general = ResponseHeaders()
        for name, value in local.headers:
            if name.decode().lower() not in _HOP_BY_HOP:
                general.add(name.decode("latin-1"), value.decode("latin-1"))
        general["Content-Length"] = str(local.length)
        self.assertEqual(response_headers(local, _HOP_BY_HOP), general.to_json())
        self.assertEqual(list(response_headers(local, _HOP_BY_HOP)), list(general.to_json()))
