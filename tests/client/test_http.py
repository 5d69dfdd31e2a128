"""Tests for the listener's HTTP side: request bodies, responses and how they choose their channel."""

from __future__ import annotations

import json
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from relay.client.address import split_request_target
from relay.client.errors import ConnectionClosedError
from relay.client.httprequest import BodyTooLarge, RequestBody
from relay.client.httpresponse import (
    CONTROL_RESPONSE_LIMIT,
    FLUSH_DELAY,
    RelayedResponse,
    ResponseHeaders,
    _SocketSink,
)
from relay.hybrid.headers import HeaderError, response_head
from relay.writes import WriteGate


class FakeControl:
    """A control channel that records messages (or refuses them once closed)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bool]] = []
        self.writes: list[int] = []  # messages per write
        self.open = True

    def send_message(self, payload: bytes, is_binary: bool = False) -> bool:
        return self.send_messages(((payload, is_binary),))

    def send_messages(self, messages: Sequence[tuple[bytes, bool]]) -> bool:
        if self.open:
            self.sent.extend(messages)
            self.writes.append(len(messages))
        return self.open


class FakeProtocol:
    """The calls a socket sink makes on an Autobahn protocol, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.open = True

    def can_send(self) -> bool:
        return self.open

    def sendMessage(self, payload: bytes, isBinary: bool) -> None:
        self.calls.append(("text" if not isBinary else "binary", payload))

    def beginMessage(self, isBinary: bool) -> None:
        self.calls.append(("begin", isBinary))

    def sendMessageFrame(self, data: bytes) -> None:
        self.calls.append(("frame", data))

    def endMessage(self) -> None:
        self.calls.append(("end", None))

    def sendClose(self, code: int) -> None:
        self.calls.append(("close", code))

    def dropConnection(self, abort: bool) -> None:
        self.calls.append(("drop", abort))


class RequestIdTests(SynchronousTestCase):
    def test_an_id_utf8_cannot_hold_is_echoed(self) -> None:
        """
        A request id with a lone surrogate (JSON lets a relay send one) comes back as the same string.

        Before, encoding the response raised UnicodeEncodeError: the application's answer, and the 500
        after it, failed with tracebacks, and the sender got nothing until the relay gave up.
        """
        control = FakeControl()
        response = RelayedResponse("\ud800-1", reactor=Clock(), control=control)
        self.successResultOf(response.finish(b"hi"))
        [(head, head_binary), (body, body_binary)] = control.sent
        self.assertEqual(json.loads(head.decode("utf-8"))["response"]["requestId"], "\ud800-1")
        self.assertEqual((head_binary, body, body_binary), (False, b"hi", True))


class RequestBodyTests(SynchronousTestCase):
    """A request body read as it arrives, with flow control."""

    def test_reading_and_flow_control(self) -> None:
        """Beyond the high-water mark the source is paused, and resumed once half was read."""
        events: list[str] = []
        body = RequestBody(
            high_water=10, pause=lambda: events.append("pause"), resume=lambda: events.append("resume")
        )
        body.feed(b"12345")
        body.feed(b"67890")
        self.assertEqual(events, ["pause"])
        self.assertEqual(self.successResultOf(body.read()), b"12345")
        self.assertEqual(events, ["pause", "resume"])
        waiting = body.read()
        self.assertEqual(self.successResultOf(waiting), b"67890")
        later = body.read()
        self.assertNoResult(later)
        body.feed(b"x")
        self.assertEqual(self.successResultOf(later), b"x")
        body.end()
        self.assertEqual(self.successResultOf(body.read()), b"")
        self.assertEqual(body.received, 11)

    def test_cut_off(self) -> None:
        """A body that will never end fails its readers."""
        body = RequestBody()
        waiting = body.read()
        body.cut(ConnectionClosedError("gone"))
        self.failureResultOf(waiting, ConnectionClosedError)
        self.failureResultOf(body.read(), ConnectionClosedError)

    def test_read_all_and_limit(self) -> None:
        """C{read_all} collects the body; a limit refuses longer ones."""
        whole = RequestBody.whole(b"abc")
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(whole.read_all())), b"abc")
        self.failureResultOf(
            Deferred.fromCoroutine(RequestBody.whole(b"abcd").read_all(limit=3)), BodyTooLarge
        )
        self.assertFalse(RequestBody.whole(None).present)


class ResponseTests(SynchronousTestCase):
    """How a response picks the control channel or a rendezvous."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.control = FakeControl()
        self.protocol = FakeProtocol()
        self.gate = WriteGate(ConnectionClosedError)
        self.opened: list[Deferred[_SocketSink]] = []

    def response(self) -> RelayedResponse:
        def open_rendezvous() -> Deferred[_SocketSink]:
            waiting: Deferred[_SocketSink] = Deferred()
            self.opened.append(waiting)
            return waiting

        return RelayedResponse(
            "r1", reactor=self.clock, control=self.control, open_rendezvous=open_rendezvous
        )

    def sink(self) -> _SocketSink:
        return _SocketSink(self.protocol, self.gate, close_after=True)  # type: ignore[arg-type]

    def test_small_complete_response_on_the_control_channel(self) -> None:
        """A response complete within 64 kB is one C{response} text and one binary message, in one write."""
        response = self.response()
        response.status_code = 201
        response.headers["X-A"] = "1"
        self.successResultOf(response.write(b"x" * 1000))
        self.successResultOf(response.finish(b"!"))
        (head, _), (body, binary) = self.control.sent
        self.assertEqual(
            json.loads(head),
            {
                "response": {
                    "requestId": "r1",
                    "statusCode": 201,
                    "statusDescription": "Created",
                    "responseHeaders": {"X-A": "1"},
                    "body": True,
                }
            },
        )
        self.assertEqual((body, binary), (b"x" * 1000 + b"!", True))
        self.assertEqual(self.control.writes, [2])
        self.assertEqual(self.opened, [])

    def test_empty_response(self) -> None:
        """No body: C{"body": false} and no binary message."""
        response = self.response()
        self.successResultOf(response.finish())
        ((head, _),) = self.control.sent
        self.assertIs(json.loads(head)["response"]["body"], False)

    def test_large_response_streams_over_a_rendezvous(self) -> None:
        """Past 64 kB a rendezvous is opened; writes wait for it, then everything streams as fragments."""
        response = self.response()
        self.successResultOf(response.write(b"a" * CONTROL_RESPONSE_LIMIT))
        blocked = response.write(b"b")
        self.assertNoResult(blocked)
        (opening,) = self.opened
        opening.callback(self.sink())
        self.successResultOf(blocked)
        done = response.finish(b"c")
        self.successResultOf(done)
        kinds = [kind for kind, _ in self.protocol.calls]
        self.assertEqual(kinds, ["text", "begin", "frame", "frame", "frame", "end", "close"])
        self.assertIs(json.loads(self.protocol.calls[0][1])["response"]["body"], True)
        self.assertEqual(self.control.sent, [])

    def test_slow_response_is_flushed(self) -> None:
        """A small response that is not finished within 2 s starts streaming over a rendezvous."""
        response = self.response()
        self.successResultOf(response.write(b"first"))
        self.clock.advance(FLUSH_DELAY - 0.1)
        self.assertEqual(self.opened, [])
        self.clock.advance(0.2)
        self.opened[0].callback(self.sink())
        self.assertEqual([k for k, _ in self.protocol.calls], ["text", "begin", "frame"])

    def test_response_on_a_request_rendezvous(self) -> None:
        """On the rendezvous the request came on, the head goes with the first write and the socket stays."""
        response = RelayedResponse(
            "r2", reactor=self.clock, sink=_SocketSink(self.protocol, self.gate, close_after=False)
        )  # type: ignore[arg-type]
        response.headers["X"] = "y"
        self.assertEqual(self.protocol.calls, [])
        self.successResultOf(response.write(b"data"))
        self.successResultOf(response.finish())
        self.assertEqual([k for k, _ in self.protocol.calls], ["text", "begin", "frame", "end"])

    def test_failures(self) -> None:
        """A lost control channel or rendezvous fails the response; an abort drops a started rendezvous."""
        self.control.open = False
        response = self.response()
        self.failureResultOf(response.finish(b"x"), ConnectionClosedError)
        streamed = RelayedResponse(
            "r3", reactor=self.clock, sink=_SocketSink(self.protocol, self.gate, close_after=False)
        )  # type: ignore[arg-type]
        self.successResultOf(streamed.write(b"part"))
        streamed.abort()
        self.assertEqual(self.protocol.calls[-1], ("drop", True))
        self.failureResultOf(streamed.finish(), ConnectionClosedError)
        self.assertRaises(RuntimeError, self.response_after_finish)

    def test_a_rendezvous_that_fails_to_send_fails_the_waiting_writers(self) -> None:
        """A rendezvous that raises as the response starts on it fails the writes waiting for it."""
        response = self.response()
        self.successResultOf(response.write(b"a" * CONTROL_RESPONSE_LIMIT))
        blocked = response.write(b"b")
        sink = self.sink()
        sink.send_head = lambda payload, has_body: 1 / 0  # type: ignore[method-assign]
        self.opened[0].callback(sink)
        self.failureResultOf(blocked, ConnectionClosedError)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.protocol.calls, [("drop", True)])

    def test_a_closing_rendezvous_takes_no_more(self) -> None:
        """
        Once a close frame came (the socket is still there), the response fails instead of being sent.

        Autobahn drops frames silently then: the response would have been reported delivered.
        """
        response = RelayedResponse(
            "r4", reactor=self.clock, sink=_SocketSink(self.protocol, self.gate, close_after=False)
        )  # type: ignore[arg-type]
        lost = response.when_lost()
        self.successResultOf(response.write(b"part"))
        self.protocol.open = False
        self.failureResultOf(response.finish(b"rest"), ConnectionClosedError)
        self.assertIsInstance(self.successResultOf(lost), ConnectionClosedError)
        self.assertEqual([k for k, _ in self.protocol.calls], ["text", "begin", "frame"])

    def response_after_finish(self) -> None:
        response = self.response()
        self.failureResultOf(response.finish(), ConnectionClosedError)
        response.write(b"late")

    def test_status_code(self) -> None:
        """
        A status the relay would refuse is refused when it is set, and the status stays as it was.

        The relay takes 100-599 in a C{response} and turns an interim (1xx) final status into a 502 too,
        blaming the listener; C{True} is no status, nor is a number in any other type.
        """
        response = self.response()
        for status in (200, 204, 302, 404, 599, HTTPStatus.CREATED):
            response.status_code = status
            self.assertEqual((response.status_code, type(response.status_code)), (int(status), int))
        for status in (0, -200, 99, 100, 101, 199, 600, 999, 2000):
            with self.subTest(status=status):
                error = self.assertRaises(ValueError, setattr, response, "status_code", status)
                self.assertEqual(
                    str(error),
                    f"status code {status} is out of range: the relay takes 200 to 599 (no interim 1xx status)",
                )
        for value in (True, False, "200", 200.0, None, b"200"):
            with self.subTest(value=value):
                error = self.assertRaises(ValueError, setattr, response, "status_code", value)
                self.assertEqual(str(error), f"a status code is an int from 200 to 599, not {value!r}")
        self.assertEqual(response.status_code, 201)
        self.successResultOf(response.finish())
        self.assertEqual(json.loads(self.control.sent[0][0])["response"]["statusCode"], 201)

    def test_status_description(self) -> None:
        """A reason phrase is text the head can carry: a lone surrogate or a non-string is refused when set."""
        response = self.response()
        for value in ("Fine \udcff", b"Fine", 200):
            with self.subTest(value=value):
                self.assertRaises(ValueError, setattr, response, "status_description", value)
        self.assertIsNone(response.status_description)
        response.status_description = "Très bien"
        self.successResultOf(response.finish())
        self.assertEqual(json.loads(self.control.sent[0][0])["response"]["statusDescription"], "Très bien")

    def test_headers(self) -> None:
        """Names are matched without case; lists make several lines; bad names and values are refused."""
        headers = ResponseHeaders()
        headers["Content-Type"] = "text/plain"
        headers["content-type"] = "text/html"
        headers.add("Set-Cookie", "a=1")
        headers.add("set-cookie", "b=2")
        self.assertEqual(headers.to_json(), {"content-type": "text/html", "Set-Cookie": ["a=1", "b=2"]})
        for name in ("Bad Name", "Bad\tName", "Bad:", "X\r", "X\n", "X\0", ""):
            self.assertRaises(ValueError, headers.__setitem__, name, "x")
        for value in ("a\r\nb", "a\rb", "a\nb", "a\0b"):
            self.assertRaises(ValueError, headers.__setitem__, "X", value)
            self.assertRaises(ValueError, headers.__setitem__, "X", ["ok", value])
        self.assertRaises(ValueError, headers.__setitem__, "X", [b"bytes"])
        del headers["CONTENT-TYPE"]
        self.assertEqual(len(headers), 1)


class HeaderValidityTests(SynchronousTestCase):
    """Headers the relay would refuse (answering the sender 502, blaming the listener) are refused when set."""

    NAMES = ("X(1)", "a/b", "{x}", 'say"hi"', "Caf\u00e9", "x,y", "k=v", "a b", "x:", "")
    VALUES = ("\ud800", "a\udfffb", "a\rb", "a\nb", "a\0b", "a\x07b", "a\x7fb", "\x1b[0m")

    def test_names_must_be_http_tokens(self) -> None:
        """A name that is no RFC 9110 token raises ValueError and nothing is set."""
        headers = ResponseHeaders()
        for name in self.NAMES:
            with self.subTest(name=name):
                error = self.assertRaises(ValueError, headers.__setitem__, name, "v")
                self.assertIn("is not an HTTP token", str(error))
        self.assertEqual(len(headers), 0)

    def test_values_must_be_forwardable(self) -> None:
        """A value with a control character (but the tab) or a lone surrogate raises ValueError, in a list too."""
        headers = ResponseHeaders()
        for value in self.VALUES:
            with self.subTest(value=value):
                self.assertRaises(ValueError, headers.__setitem__, "X-V", value)
                self.assertRaises(ValueError, headers.add, "X-V", value)
                self.assertRaises(ValueError, headers.__setitem__, "X-V", ["ok", value])
        self.assertEqual(len(headers), 0)

    def test_the_relay_forwards_what_is_accepted(self) -> None:
        """The client accepts exactly the names and values the relay's response check lets through."""
        names = (*self.NAMES, "X-Ok", "!#$%&'*+-.^_`|~", "a1")
        values = (*self.VALUES, "", "caf\u00e9 \U0001f600", "a\tb", " padded ")
        for name in names:
            for value in values:
                with self.subTest(name=name, value=value):
                    self.assertEqual(self.accepted(name, value), self.forwarded(name, value))

    def accepted(self, name: str, value: str) -> bool:
        try:
            ResponseHeaders()[name] = value
        except ValueError:
            return False
        return True

    def forwarded(self, name: str, value: str) -> bool:
        try:
            response_head({name: value}, via="1.1 relay.test")
        except HeaderError:
            return False
        return True


class TargetTests(SynchronousTestCase):
    """What an app sees of the relayed request target."""

    def test_split(self) -> None:
        """The hybrid connection's name is removed (any case, multi-segment), the query kept."""
        self.assertEqual(split_request_target("/hyco/api/x?a=1", "hyco"), ("/api/x", "a=1"))
        self.assertEqual(split_request_target("/HYCO", "hyco"), ("", ""))
        self.assertEqual(split_request_target("/team/app/v1", "team/app"), ("/v1", ""))
        self.assertEqual(split_request_target("/other/x", "hyco"), ("/other/x", ""))
