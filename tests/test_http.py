"""Transport tests for HTTP relaying on in-memory connections (no sockets, no real time)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

import relay.hybrid.control
import relay.hybrid.http
from relay.entities import HYBRID_CONNECTION, Entity, HybridConnectionSettings

from .httpharness import RawHttpClient
from .wsharness import HOST, GatewayTestCase, RecordingClient

TIMEOUT = 10.0


class HttpTestCase(GatewayTestCase):
    """A gateway with C{hyco} (10 s request timeout), C{open} (anonymous senders) and C{off} (no HTTP)."""

    def entities(self) -> tuple[Entity, ...]:
        return (
            Entity("hyco", HYBRID_CONNECTION, settings=HybridConnectionSettings(request_timeout=TIMEOUT)),
            Entity(
                "open",
                HYBRID_CONNECTION,
                settings=HybridConnectionSettings(
                    requires_client_authorization=False, request_timeout=TIMEOUT
                ),
            ),
            Entity("off", HYBRID_CONNECTION, settings=HybridConnectionSettings(http_enabled=False)),
        )

    def sender(self, source: str = "10.0.0.5") -> RawHttpClient:
        return self.net.attach(RawHttpClient(), source)  # type: ignore[no-any-return]

    def auth(self, path: str = "hyco") -> dict[str, str]:
        return {"ServiceBusAuthorization": self.token(path)}

    def texts(self, socket: RecordingClient) -> list[dict[str, Any]]:
        return [json.loads(payload) for payload, binary in socket.messages if not binary]

    def last_request(self, socket: RecordingClient) -> dict[str, Any]:
        payload, binary = socket.messages[-1]
        self.assertFalse(binary)
        request: dict[str, Any] = json.loads(payload)["request"]
        return request

    def respond(
        self,
        socket: RecordingClient,
        request_id: str,
        status: Any = 200,
        headers: dict[str, Any] | None = None,
        body: bytes | None = None,
        description: str | None = "OK",
        streamed: bool = False,
    ) -> None:
        response: dict[str, Any] = {
            "requestId": request_id,
            "statusCode": status,
            "responseHeaders": headers or {},
            "body": body is not None or streamed,
        }
        if description is not None:
            response["statusDescription"] = description
        socket.sendMessage(json.dumps({"response": response}).encode(), isBinary=False)
        if body is not None:
            socket.sendMessage(body, isBinary=True)
        self.net.flush()

    def fetch(self, listener: RecordingClient) -> tuple[RecordingClient, dict[str, Any]]:
        """Open the rendezvous of the request last announced to C{listener}."""
        announcement = self.last_request(listener)
        self.assertEqual(set(announcement), {"address", "id"})
        rendezvous = self.net.connect(announcement["address"])
        self.assertTrue(rendezvous.opened)
        return rendezvous, announcement

    def streamed_upload(self) -> tuple[RawHttpClient, RecordingClient, dict[str, Any]]:
        """A chunked POST announced to a new listener, which opened its rendezvous (no chunk sent yet)."""
        listener = self.listen()
        sender = self.sender()
        sender.request("POST", "/hyco/up", self.auth(), chunked=True)
        self.net.flush()
        rendezvous, announcement = self.fetch(listener)
        return sender, rendezvous, announcement

    def answer_over_rendezvous(
        self, target: str
    ) -> tuple[RecordingClient, RawHttpClient, dict[str, Any], RecordingClient]:
        """A GET the listener answers over a rendezvous it opens to the request's address."""
        listener = self.listen()
        sender = self.sender()
        sender.request("GET", target, self.auth())
        self.net.flush()
        request = self.last_request(listener)
        return listener, sender, request, self.net.connect(request["address"])

    def stream_response(
        self, socket: RecordingClient, request_id: str, pieces: list[bytes], **head: Any
    ) -> None:
        """A response whose body is one binary message sent as one fragment per piece."""
        self.respond(socket, request_id, streamed=True, **head)
        socket.beginMessage(isBinary=True)
        for piece in pieces:
            socket.sendMessageFrame(piece)
        socket.endMessage()
        self.net.flush()


class SmallRequestTests(HttpTestCase):
    """Requests that fit the control channel."""

    def test_absolute_form_target(self) -> None:
        """
        A request target in absolute form (RFC 9112 §3.2.2) is served: its host is the namespace's, not C{Host}.

        It got 404: the whole URL was taken for the path. A server must accept this form.
        """
        listener = self.listen()
        sender = self.sender()
        for method, body in (("GET", None), ("POST", b"x" * 200_000)):
            with self.subTest(method=method):
                sender.request(
                    method, f"HTTP://{HOST}/hyco/x?a=1", self.auth(), body, host="elsewhere.example"
                )
                self.net.flush()
                request = self.last_request(listener)
                if method == "POST":  # too large for the control channel: fetched over its rendezvous
                    rendezvous = self.net.connect(request["address"])
                    request = json.loads(rendezvous.messages[0][0])["request"]
                else:
                    rendezvous = listener
                self.assertEqual((request["method"], request["requestTarget"]), (method, "/hyco/x?a=1"))
                self.assertEqual(request["requestHeaders"]["Host"], HOST)
                self.respond(rendezvous, request["id"], body=b"done")
                self.assertEqual((sender.reply.status, sender.reply.body), (200, b"done"))

    def test_get_on_the_control_channel(self) -> None:
        """A GET arrives as a full C{request} with forwarding headers and no body message; the answer comes back."""
        listener = self.listen()
        sender = self.sender()
        sender.request(
            "GET",
            "/hyco/sub/res?a=1&sb-hc-id=zzz&sb-hc-x&b=2",
            {**self.auth(), "X-App": "yes", "Via": "1.0 upstream"},
        )
        self.net.flush()
        request = self.last_request(listener)
        self.assertEqual(len(listener.messages), 1)
        self.assertEqual(request["method"], "GET")
        self.assertIs(request["body"], False)
        self.assertEqual(request["requestTarget"], "/hyco/sub/res?a=1&sb-hc-x&b=2")
        self.assertEqual(request["remoteEndpoint"]["address"], "10.0.0.5")
        self.assertTrue(
            request["address"].startswith(f"wss://{HOST}/$hc/hyco?sb-hc-action=request&sb-hc-id=")
        )
        self.assertIn(request["id"], request["address"])
        headers = request["requestHeaders"]
        self.assertEqual(headers["X-App"], "yes")
        self.assertEqual(headers["Host"], HOST)
        self.assertEqual(headers["Via"], f"1.0 upstream, 1.1 {HOST}")
        self.assertEqual(headers["X-Forwarded-For"], "10.0.0.5")
        self.assertEqual(headers["X-Forwarded-Proto"], "https" if self.use_tls else "http")
        self.assertNotIn("Servicebusauthorization", {k.title() for k in headers})
        self.respond(listener, request["id"], headers={"Content-Type": "text/plain"}, body=b"hello")
        reply = sender.reply
        self.assertEqual((reply.status, reply.reason, reply.body), (200, "OK", b"hello"))
        self.assertEqual(reply.header("Content-Length"), "5")
        self.assertEqual(reply.header("Via"), f"1.1 {HOST}")
        self.assertIsNone(reply.header("Server"))
        self.assertIsNone(reply.header("Date"))

    def test_address_while_the_answer_is_due(self) -> None:
        """
        A small request's address is held by its exchange, not a ticket: claimable once, with its key.

        No ticket is opened for it while the answer is due (one per request cost 3 % of a relayed
        request); a second upgrade to it, its tracking id, or an upgrade after the answer came are 403.
        """
        listener = self.listen()
        sender = self.sender()
        sender.request("GET", "/hyco/one", self.auth())
        self.net.flush()
        first = self.last_request(listener)
        self.assertEqual(len(self.gateway.hybrid.rendezvous), 0)
        by_id = f"wss://{HOST}/$hc/hyco?sb-hc-action=request&sb-hc-id={first['id']}"
        self.assertEqual(self.net.connect(by_id, source="10.0.0.5").status, 403)
        rendezvous = self.net.connect(first["address"])
        self.assertEqual(rendezvous.status, 101)
        self.assertEqual(self.net.connect(first["address"]).status, 403)  # used
        self.respond(rendezvous, first["id"], body=b"over the rendezvous")
        self.assertEqual((sender.reply.status, sender.reply.body), (200, b"over the rendezvous"))
        sender.request("GET", "/hyco/two", self.auth())
        self.net.flush()
        second = self.last_request(listener)
        self.respond(listener, second["id"], body=b"on the control channel")
        self.assertEqual(sender.replies[-1].body, b"on the control channel")
        self.assertEqual(self.net.connect(second["address"]).status, 403)  # answered: no longer claimable
        self.assertEqual((self.gateway.http._addresses, len(self.gateway.hybrid.rendezvous)), ({}, 0))

    def test_listener_fields_reach_the_sender_as_sent(self) -> None:
        """
        The listener's header lines reach the sender in order, a repeated one once per line.

        They come beside the relay's own framing fields, and twisted.web's C{Connection: close} stays
        when the sender asked for it.
        """
        listener = self.listen()
        sender = self.sender()
        sender.request("GET", "/hyco/res", {**self.auth(), "Connection": "close"})
        self.net.flush()
        request = self.last_request(listener)
        fields = {"X-First": "1", "Set-Cookie": ["a=1", "b=2"], "X-Last": "caf\u00e9"}
        self.respond(listener, request["id"], headers=fields, body=b"bye")
        reply = sender.reply
        self.assertEqual((reply.status, reply.body), (200, b"bye"))
        self.assertEqual(reply.header("Connection"), "close")
        self.assertEqual(reply.header("Content-Length"), "3")
        self.assertEqual(reply.all("Set-Cookie"), ["a=1", "b=2"])
        names = [name.lower() for name, _ in reply.headers]
        self.assertLess(names.index("x-first"), names.index("set-cookie"))
        self.assertLess(names.index("set-cookie"), names.index("x-last"))
        self.assertEqual(reply.header("X-Last"), "caf\u00e9".encode().decode("latin-1"))
        self.assertIsNotNone(sender.lost)  # and the connection is closed, as announced

    def test_a_request_is_one_access_log_event(self) -> None:
        """Each relayed request is logged once when it ends, as readable text and as structured fields."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        listener = self.listen()
        sender = self.sender()
        sender.request("GET", "/hyco/res?q=1", self.auth())
        self.net.flush()
        request = self.last_request(listener)
        self.assertEqual([e for e in events if "access" in e], [])
        self.respond(listener, request["id"], status=201, body=b"made")
        (line,) = [e for e in events if "access" in e]
        self.assertEqual(
            formatEvent(line),
            f"GET /hyco/res?q=1 -> 201 (4 bytes) request {request['id']} from 10.0.0.5",
        )
        self.assertEqual(
            (
                line["method"],
                line["target"],
                line["status"],
                line["size"],
                line["request_id"],
                line["client"],
            ),
            ("GET", "/hyco/res?q=1", 201, 4, request["id"], "10.0.0.5"),
        )
        self.assertEqual(line["log_level"], LogLevel.info)

    def test_post_body_is_exactly_one_binary_message(self) -> None:
        """A small POST is the C{request} text with C{body: true} and then its body as one binary message."""
        listener = self.listen()
        sender = self.sender()
        sender.request("POST", "/hyco/api", self.auth(), b"x" * 1000)
        self.net.flush()
        (payload, binary), (body, body_binary) = listener.messages
        self.assertFalse(binary)
        self.assertTrue(body_binary)
        self.assertEqual(body, b"x" * 1000)
        request = json.loads(payload)["request"]
        self.assertIs(request["body"], True)
        self.respond(listener, request["id"], status="201", description=None)
        self.assertEqual((sender.reply.status, sender.reply.reason), (201, "Created"))
        self.assertEqual(sender.reply.header("Content-Length"), "0")
        self.assertIsNone(sender.reply.header("Content-Type"))

    def test_empty_body_is_no_body(self) -> None:
        """A zero-length body is C{body: false} with no binary message."""
        listener = self.listen()
        self.sender().request("PUT", "/hyco/x", self.auth(), b"")
        self.net.flush()
        self.assertEqual(len(listener.messages), 1)
        self.assertIs(self.last_request(listener)["body"], False)

    def test_a_small_multipart_post_is_relayed_unparsed(self) -> None:
        """A form body is the listener's to read: an empty FormData or a C{name*=} field reaches it unparsed."""
        listener = self.listen()
        for body in (
            b"------WebKitFormBoundaryx8YbZ1q2--\r\n",
            b"------WebKitFormBoundaryx8YbZ1q2\r\nContent-Disposition: form-data; name*=UTF-8''%C3%A9\r\n\r\n"
            b"1\r\n------WebKitFormBoundaryx8YbZ1q2--\r\n",
        ):
            with self.subTest(body=body):
                sender = self.sender()
                sender.request(
                    "POST",
                    "/hyco/form",
                    {
                        **self.auth(),
                        "Content-Type": "multipart/form-data; boundary=----WebKitFormBoundaryx8YbZ1q2",
                    },
                    body,
                )
                self.net.flush()
                self.assertEqual(sender.replies, [])
                self.assertEqual(listener.messages[-1], (body, True))
                request = self.texts(listener)[-1]["request"]
                self.respond(listener, request["id"], status=422, body=b"bad form")
                self.assertEqual((sender.reply.status, sender.reply.body), (422, b"bad form"))
                self.assertIsNone(sender.lost)

    def test_multi_value_headers(self) -> None:
        """Repeated request headers are joined; response header arrays become one line per value."""
        listener = self.listen()
        sender = self.sender()
        sender.send(
            b"GET /hyco/m HTTP/1.1\r\nHost: relay.test\r\nServiceBusAuthorization: "
            + self.token().encode()
            + b"\r\nX-Multi: a\r\nX-Multi: b\r\nCookie: c=1\r\nCookie: d=2\r\n\r\n"
        )
        sender.methods.append("GET")
        self.net.flush()
        request = self.last_request(listener)
        self.assertEqual(request["requestHeaders"]["X-Multi"], "a, b")
        self.assertEqual(request["requestHeaders"]["Cookie"], "c=1; d=2")
        self.respond(listener, request["id"], headers={"Set-Cookie": ["a=1", "b=2"], "X-Num": 7}, body=b"")
        self.assertEqual(sender.reply.all("Set-Cookie"), ["a=1", "b=2"])
        self.assertEqual(sender.reply.header("X-Num"), "7")

    def test_hop_by_hop_headers_dropped(self) -> None:
        """Connection-level headers (and those Connection names) are not forwarded, either way."""
        listener = self.listen()
        sender = self.sender()
        sender.request(
            "GET", "/hyco/h", {**self.auth(), "Connection": "keep-alive, X-Local", "X-Local": "1", "TE": "x"}
        )
        self.net.flush()
        request = self.last_request(listener)
        names = {name.lower() for name in request["requestHeaders"]}
        self.assertFalse(names & {"connection", "x-local", "te", "keep-alive", "content-length"})
        self.respond(
            listener,
            request["id"],
            headers={
                "Connection": "X-Private",
                "X-Private": "no",
                "Transfer-Encoding": "gzip",
                "Keep-Alive": "5",
            },
            body=b"ok",
        )
        names = {name.lower() for name, _ in sender.reply.headers}
        self.assertFalse(names & {"x-private", "keep-alive"})
        self.assertEqual(sender.reply.header("Transfer-Encoding"), None)
        self.assertEqual(sender.reply.body, b"ok")

    def test_head_and_no_content_keep_the_connection_sound(self) -> None:
        """Bodies a listener sends for HEAD or 204 never reach the sender; the stray empty message is ignored."""
        listener = self.listen()
        sender = self.sender()
        sender.request("HEAD", "/hyco/h", self.auth())
        self.net.flush()
        self.respond(
            listener, self.last_request(listener)["id"], headers={"Content-Length": "5"}, body=b"hello"
        )
        sender.request("DELETE", "/hyco/d", self.auth())
        self.net.flush()
        self.respond(listener, self.last_request(listener)["id"], status=204, description="No Content")
        listener.sendMessage(b"", isBinary=True)  # hyco-https does this after "body": false
        sender.request("GET", "/hyco/g", self.auth())
        self.net.flush()
        self.respond(listener, self.last_request(listener)["id"], body=b"third")
        head, no_content, third = sender.replies
        self.assertEqual((head.status, head.header("Content-Length")), (200, "5"))
        self.assertEqual(no_content.status, 204)
        self.assertEqual((third.status, third.body, third.complete), (200, b"third", True))
        self.assertFalse(sender.data.count(b"hello"))

    def test_unknown_request_id(self) -> None:
        """A response for an unknown id is dropped with its body; the next response is read correctly."""
        listener = self.listen()
        sender = self.sender()
        sender.request("GET", "/hyco/u", self.auth())
        self.net.flush()
        self.respond(listener, "no-such-request", body=b"stray")
        self.respond(listener, self.last_request(listener)["id"], body=b"mine")
        self.assertEqual(sender.reply.body, b"mine")

    def test_responses_for_unknown_requests_are_logged_within_a_budget(self) -> None:
        """A thousand responses for requests that do not exist get a burst of log lines, not one each."""
        listener = self.listen()
        sender = self.sender()
        sender.request("GET", "/hyco/first", self.auth())
        self.net.flush()
        self.respond(listener, self.last_request(listener)["id"], body=b"ok")
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for i in range(1000):
            self.respond(listener, f"nope-{i}")
        self.assertIsNone(listener.closed)
        self.assertEqual(len([e for e in events if "unknown request" in formatEvent(e)]), 20)

    def test_a_response_before_any_request_is_for_an_unknown_request(self) -> None:
        """A response on a channel that carried no request yet is logged as such, not as an unknown message."""
        listener = self.listen()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.respond(listener, "nope", body=b"stray")
        lines = [formatEvent(e) for e in events if e["log_level"] is not LogLevel.debug]
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], r"^response for unknown request nope from listener \S+ dropped$")
        sender = self.sender()
        sender.request("GET", "/hyco/after", self.auth())
        self.net.flush()
        self.respond(listener, self.last_request(listener)["id"], body=b"mine")
        self.assertEqual(sender.reply.body, b"mine")

    def test_a_response_instead_of_the_announced_body_is_502(self) -> None:
        """
        A response announcing a body must be followed by it: another response first fails the request.

        It used to wait for the body as long as its sender stayed (its response timer stops with the head).
        """
        listener = self.listen()
        first, second = self.sender(), self.sender()
        first.request("GET", "/hyco/one", self.auth())
        self.net.flush()
        first_id = self.last_request(listener)["id"]
        second.request("GET", "/hyco/two", self.auth())
        self.net.flush()
        second_id = self.last_request(listener)["id"]
        self.respond(listener, first_id, body=None, streamed=True)  # "body": true, and no binary message
        self.assertEqual(first.data, b"")  # the head waits for the body
        self.respond(listener, second_id, body=b"two")
        self.assertEqual(first.reply.status, 502)
        self.assertIn(f"TrackingId:{first_id}", first.reply.body.decode())
        self.assertIsNone(first.reply.header("Via"))  # none of the listener's fields: it did not answer
        self.assertEqual((second.reply.status, second.reply.body), (200, b"two"))
        self.assertIsNone(listener.closed)

    def test_an_announced_body_that_never_comes_is_502(self) -> None:
        """
        An announced body not sent within the request's timeout fails the request.

        If it comes later it is dropped, and the next request on the channel is answered as usual.
        """
        listener = self.listen()
        sender = self.sender()
        sender.request("GET", "/hyco/one", self.auth())
        self.net.flush()
        request_id = self.last_request(listener)["id"]
        self.respond(listener, request_id, body=None, streamed=True)  # "body": true, no binary message
        self.net.advance(TIMEOUT - 0.5)
        self.assertEqual(sender.data, b"")
        self.net.advance(1)
        self.assertEqual(sender.reply.status, 502)
        self.assertIn("did not send the body", sender.reply.body.decode())
        listener.sendMessage(b"late", isBinary=True)
        self.net.flush()
        again = self.sender()
        again.request("GET", "/hyco/two", self.auth())
        self.net.flush()
        self.respond(listener, self.last_request(listener)["id"], body=b"two")
        self.assertEqual((again.reply.status, again.reply.body), (200, b"two"))
        self.assertIsNone(listener.closed)

    def test_a_held_answer_failing_is_the_relays_own_answer(self) -> None:
        """The 502 for a held answer whose body never came has the relay's C{Server} and C{Date}, on either channel."""
        listener = self.listen()
        for method, body in (("GET", None), ("POST", b"form")):  # a lean channel's request; twisted.web's
            with self.subTest(method=method):
                sender = self.sender()
                sender.request(method, "/hyco/one", self.auth(), body)
                self.net.flush()
                self.respond(
                    listener, self.texts(listener)[-1]["request"]["id"], headers={"X-App": "1"}, streamed=True
                )
                self.net.advance(TIMEOUT + 1)
                reply = sender.reply
                self.assertEqual(reply.status, 502)
                self.assertEqual(reply.header("Server"), "relay")
                self.assertIsNotNone(reply.header("Date"))
                self.assertIsNone(reply.header("X-App"))

    def test_the_body_timer_goes_with_the_channel(self) -> None:
        """The control channel's one timer for announced bodies does not outlive the channel."""
        listener = self.listen()
        sender = self.sender()
        sender.request("GET", "/hyco/one", self.auth())
        self.net.flush()
        self.respond(listener, self.last_request(listener)["id"], body=b"one")
        self.assertEqual(sender.reply.body, b"one")

        def body_timers() -> list[Any]:
            return [c for c in self.net.clock.getDelayedCalls() if "_body_overdue" in repr(c.func)]

        self.assertEqual(len(body_timers()), 1)  # armed for the body, lapses by itself
        listener.sendClose(1000)
        self.net.flush()
        self.assertEqual(body_timers(), [])

    def test_invalid_responses_are_502(self) -> None:
        """Interim statuses, impossible statuses and unsafe headers become 502 with a tracking id."""
        listener = self.listen()
        for bad in (
            {"status": 100},
            {"status": 99},
            {"headers": {"Bad Name": "x"}},
            {"headers": {"X": "a\r\nb"}},
            {"headers": {"X-Split\n": "x"}},  # a regex "$" let a final line feed through
            {"headers": {"X": "lone \ud800 surrogate"}},  # no UTF-8 form: an encoding error mid-answer
            {"headers": {"Content-Length": "\u00b2"}},  # "²": str.isdigit says yes, int says no
            {"status": "\u00b200"},
            {"status": "\u0662\u0660\u0660"},  # Arabic-Indic "200": a digit, not ASCII
        ):
            with self.subTest(bad=bad):
                sender = self.sender()
                sender.request("GET", "/hyco/bad", self.auth())
                self.net.flush()
                request_id = self.last_request(listener)["id"]
                self.respond(listener, request_id, body=b"never", **bad)
                reply = sender.reply
                self.assertEqual(reply.status, 502)
                self.assertIn(f"TrackingId:{request_id}", reply.body.decode())
                self.assertIsNone(reply.header("Via"))
        self.assertIsNone(listener.closed)

    def test_a_response_head_too_large_for_senders_is_502(self) -> None:
        """A head over 64 KiB (status line, header lines) is a logged 502, on either socket; 64 KiB is relayed."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        listener = self.listen()
        # "HTTP/1.1 200 OK", "X-Big: ...", "Via: 1.1 <host>" lines and the empty line.
        fixed = len("HTTP/1.1 200 OK\r\nX-Big: \r\nVia: 1.1 \r\n\r\n") + len(HOST)
        for size, status in ((65536, 200), (65537, 502), (1000000, 502)):
            with self.subTest(size=size):
                sender = self.sender()
                sender.request("GET", "/hyco/big", self.auth())
                self.net.flush()
                request_id = self.last_request(listener)["id"]
                self.respond(listener, request_id, headers={"X-Big": "b" * (size - fixed)}, body=b"x")
                self.assertEqual(sender.reply.status, status)
                if status == 502:
                    self.assertIn(f"TrackingId:{request_id}", sender.reply.body.decode())
                    self.assertIsNone(sender.reply.header("Via"))
                else:
                    self.assertEqual(len(sender.reply.header("X-Big") or ""), size - fixed)
        self.assertIsNone(listener.closed)
        _listener, sender, request, rendezvous = self.answer_over_rendezvous("/hyco/r")
        self.respond(rendezvous, request["id"], headers={"X-Big": "b" * 65536}, streamed=True)
        self.assertEqual(sender.reply.status, 502)
        self.assertIsNotNone(rendezvous.closed)
        lines = [formatEvent(e) for e in events if "exceeds the relay's 65536 bytes" in formatEvent(e)]
        self.assertEqual(len(lines), 3, lines)

    def test_control_channel_body_must_match_its_content_length(self) -> None:
        """A held answer whose body message is shorter or longer than its Content-Length, or missing, is a 502."""
        listener = self.listen()
        for announced, body in (("10", b"12345"), ("3", b"12345"), ("5", None)):
            with self.subTest(announced=announced, body=body):
                sender = self.sender()
                sender.request("GET", "/hyco/cl", self.auth())
                self.net.flush()
                request_id = self.last_request(listener)["id"]
                self.respond(listener, request_id, headers={"Content-Length": announced}, body=body)
                reply = sender.reply
                self.assertEqual(reply.status, 502)
                self.assertIn(f"TrackingId:{request_id}", reply.body.decode())
                self.assertIsNone(reply.header("Via"))
        self.assertIsNone(listener.closed)

    def test_large_response_over_a_response_rendezvous(self) -> None:
        """
        A listener may answer a small request on a rendezvous to its address.

        That socket is closed after the response and never carries a request: the next one goes on the
        control channel.
        """
        listener, sender, request, rendezvous = self.answer_over_rendezvous("/hyco/big")
        self.assertTrue(rendezvous.opened)
        pieces = [bytes([i]) * 10240 for i in range(10)] + [b""]
        self.stream_response(rendezvous, request["id"], pieces)
        self.assertEqual(sender.reply.body, b"".join(pieces))
        self.assertTrue(sender.reply.complete)
        self.assertEqual(rendezvous.closed[1], 1000)  # type: ignore[index]
        again = self.net.connect(request["address"])
        self.assertEqual(again.status, 403)
        sender.request("GET", "/hyco/next", self.auth())
        self.net.flush()
        self.assertEqual(self.last_request(listener)["requestTarget"], "/hyco/next")

    def test_junk_on_a_response_rendezvous_is_logged_within_a_budget(self) -> None:
        """A listener's stray messages on a rendezvous get a burst of lines, and the rest a count at its close."""
        _listener, _sender, _request, rendezvous = self.answer_over_rendezvous("/hyco/r")
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for i in range(1000):
            rendezvous.sendMessage(b'{"x%d": 1}' % i, isBinary=False)
        self.net.flush()
        self.assertIsNone(rendezvous.closed)
        self.assertEqual(len([e for e in events if "ignored a rendezvous message" in formatEvent(e)]), 20)
        rendezvous.sendClose(1000)
        self.net.flush()
        held = [formatEvent(e) for e in events if "were not logged (at most" in formatEvent(e)]
        self.assertEqual(len(held), 1, held)
        self.assertRegex(
            held[0], r"^980 more lines about rendezvous \S+ were not logged \(at most 10 a second\)$"
        )

    def test_repeated_response_heads_on_a_rendezvous_are_logged_within_a_budget(self) -> None:
        """A listener repeating its response head on a rendezvous gets a burst of lines, not one each."""
        _listener, sender, request, rendezvous = self.answer_over_rendezvous("/hyco/r")
        self.respond(rendezvous, request["id"], streamed=True)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for _ in range(1000):
            self.respond(rendezvous, request["id"], streamed=True)
        lines = [e for e in events if f"response for request {request['id']} ignored" in formatEvent(e)]
        self.assertEqual(len(lines), 20)
        rendezvous.sendMessage(b"body", isBinary=True)
        self.net.flush()
        self.assertEqual((sender.reply.status, sender.reply.body), (200, b"body"))


class RendezvousRequestTests(HttpTestCase):
    """Requests too large for the control channel, or streamed."""

    def test_request_address_used_for_an_accept_rendezvous(self) -> None:
        """
        A request's address opened with C{sb-hc-action=accept} is unknown to that action (403), not a 500.

        The address stays the request's: the listener can still fetch it.
        """
        listener = self.listen()
        sender = self.sender()
        sender.request("POST", "/hyco/up", self.auth(), bytes(100_000))
        self.net.flush()
        address = self.last_request(listener)["address"]
        wrong = self.net.connect(address.replace("sb-hc-action=request", "sb-hc-action=accept"))
        self.assertEqual(wrong.status, 403)
        self.assertIn("Rendezvous address is unknown", wrong.status_line)
        self.assertEqual(self.flushLoggedErrors(), [])
        rendezvous, announcement = self.fetch(listener)
        self.respond(rendezvous, announcement["id"], body=b"done")
        self.assertEqual((sender.reply.status, sender.reply.body), (200, b"done"))

    def test_large_body_over_a_reused_rendezvous(self) -> None:
        """A 100 kB POST is fetched over a rendezvous, which then carries the connection's next request."""
        listener = self.listen()
        sender = self.sender()
        body = bytes(range(256)) * 400
        sender.request("POST", "/hyco/up?q=1&sb-hc-token=" + quote(self.token()), {}, body)
        self.net.flush()
        rendezvous, announcement = self.fetch(listener)
        (head, _), (received, binary) = rendezvous.messages
        request = json.loads(head)["request"]
        self.assertEqual(
            (request["id"], request["method"], request["body"]), (announcement["id"], "POST", True)
        )
        self.assertEqual(request["requestTarget"], "/hyco/up?q=1")
        self.assertEqual((received, binary), (body, True))
        self.respond(rendezvous, request["id"], status=201, body=b"stored")
        self.assertEqual((sender.reply.status, sender.reply.body), (201, b"stored"))
        control_messages = len(listener.messages)
        sender.request("GET", "/hyco/again", self.auth())
        self.net.flush()
        self.assertEqual(len(listener.messages), control_messages)
        follow_up = json.loads(rendezvous.messages[-1][0])["request"]
        self.assertEqual((follow_up["method"], follow_up["body"]), ("GET", False))
        self.respond(rendezvous, follow_up["id"], body=b"again")
        self.assertEqual([r.body for r in sender.replies], [b"stored", b"again"])

    def reused_then_closed(self, listener: RecordingClient, sender: RawHttpClient) -> RecordingClient:
        """A rendezvous that fetched a 70 kB POST and answered it, parked for C{sender}'s next request."""
        sender.request("POST", "/hyco/up", self.auth(), b"u" * 70000)
        self.net.flush()
        rendezvous, announcement = self.fetch(listener)
        self.respond(rendezvous, announcement["id"], body=b"stored")
        self.assertEqual(sender.reply.body, b"stored")
        return rendezvous

    def test_a_request_crossing_the_listeners_close_of_its_rendezvous(self) -> None:
        """A request crossing the listener's close (1000) of its parked rendezvous goes on the control channel."""
        listener = self.listen()
        for method, body in (("GET", None), ("PUT", b"small")):
            with self.subTest(method=method):
                sender = self.sender()
                rendezvous = self.reused_then_closed(listener, sender)
                sender.request(method, "/hyco/next", self.auth(), body)
                rendezvous.sendClose(1000)  # the .NET listener closes every rendezvous after its answer
                self.net.flush()
                self.assertEqual(len(sender.replies), 1)  # no 502
                following = self.texts(listener)[-1]["request"]
                self.assertEqual((following["requestTarget"], following["body"]), ("/hyco/next", bool(body)))
                if body:
                    self.assertEqual(listener.messages[-1], (body, True))
                self.respond(listener, following["id"], body=b"next")
                self.assertEqual(
                    [(r.status, r.body) for r in sender.replies], [(200, b"stored"), (200, b"next")]
                )

    def test_a_post_crossing_the_close_is_not_sent_twice(self) -> None:
        """A POST that may have reached a handler before the close gets its 502, never a second delivery."""
        listener = self.listen()
        sender = self.sender()
        rendezvous = self.reused_then_closed(listener, sender)
        announced = len(self.texts(listener))
        sender.request("POST", "/hyco/next", self.auth(), b"small")
        rendezvous.sendClose(1000)
        self.net.flush()
        self.assertEqual([r.status for r in sender.replies], [200, 502])
        self.assertEqual(len(self.texts(listener)), announced)  # nothing sent again on the control channel

    def test_a_parked_rendezvous_the_listener_is_closing_is_not_reused(self) -> None:
        """Once the listener's close came, the sender's next request goes on the control channel."""
        listener = self.listen()
        sender = self.sender()
        rendezvous = self.reused_then_closed(listener, sender)
        rendezvous.sendClose(1000)
        self.net.flush()
        sender.request("GET", "/hyco/next", self.auth())
        self.net.flush()
        self.assertEqual(self.last_request(listener)["requestTarget"], "/hyco/next")

    def test_a_streamed_body_already_sent_is_not_sent_again(self) -> None:
        """A request whose streamed body went partly to the closing rendezvous cannot be repeated: 502."""
        listener = self.listen()
        sender = self.sender()
        rendezvous = self.reused_then_closed(listener, sender)
        sender.request("POST", "/hyco/next", self.auth(), b"part", chunked=True)
        rendezvous.sendClose(1000)
        self.net.flush()
        self.assertEqual(sender.replies[-1].status, 502)
        self.assertEqual(len(listener.messages), 1)  # the first request's announcement only

    def test_a_request_whose_answer_had_begun_is_not_sent_again(self) -> None:
        """A rendezvous closed in the middle of a response head had a handler answering: 502."""
        listener = self.listen()
        sender = self.sender()
        rendezvous = self.reused_then_closed(listener, sender)
        sender.request("GET", "/hyco/next", self.auth())
        self.net.flush()
        rendezvous.beginMessage(isBinary=False)
        rendezvous.sendMessageFrame(b'{"response": {')
        rendezvous.sendClose(1000)
        self.net.flush()
        self.assertEqual(sender.replies[-1].status, 502)
        self.assertEqual(len(listener.messages), 1)

    def test_a_streamed_body_not_yet_sent_is_announced_again(self) -> None:
        """A streamed request whose body had not started when the rendezvous closed is fetched anew."""
        listener = self.listen()
        sender = self.sender()
        rendezvous = self.reused_then_closed(listener, sender)
        sender.request("PUT", "/hyco/next", self.auth(), chunked=True)
        rendezvous.sendClose(1000)
        self.net.flush()
        self.assertEqual(len(sender.replies), 1)
        again, announcement = self.fetch(listener)
        sender.chunk(b"part")
        sender.chunk(b"")
        self.net.flush()
        head, *body = again.messages
        self.assertEqual(json.loads(head[0])["request"]["requestTarget"], "/hyco/next")
        self.assertEqual(b"".join(data for data, _ in body), b"part")
        self.respond(again, announcement["id"], body=b"next")
        self.assertEqual([r.body for r in sender.replies], [b"stored", b"next"])

    def test_chunked_request_streams(self) -> None:
        """A chunked upload is announced at once and its chunks reach the listener as they arrive."""
        listener = self.listen()
        sender = self.sender()
        sender.request("POST", "/hyco/chunks", self.auth(), chunked=True)
        self.net.flush()
        rendezvous, _ = self.fetch(listener)
        sender.chunk(b"first,")
        self.net.flush()
        sender.chunk(b"second")
        sender.chunk(b"")
        self.net.flush()
        self.assertEqual(rendezvous.messages[-1], (b"first,second", True))
        request = json.loads(rendezvous.messages[0][0])["request"]
        self.respond(rendezvous, request["id"], body=b"done")
        self.assertEqual(sender.reply.body, b"done")

    def test_idle_rendezvous_is_reaped(self) -> None:
        """An idle rendezvous is closed (1000) after the idle timeout; the next request is announced anew."""
        listener = self.listen()
        sender = self.sender()
        sender.request("POST", "/hyco/up", self.auth(), b"u" * 70000)
        self.net.flush()
        rendezvous, announcement = self.fetch(listener)
        self.respond(rendezvous, announcement["id"], body=b"ok")
        self.net.advance(59)
        self.assertIsNone(rendezvous.closed)
        self.net.advance(2)
        self.assertEqual(rendezvous.closed[1], 1000)  # type: ignore[index]
        sender.request("GET", "/hyco/later", self.auth())
        self.net.flush()
        self.assertEqual(self.last_request(listener)["requestTarget"], "/hyco/later")

    def test_sender_leaving_closes_its_rendezvous(self) -> None:
        """When the sender's connection closes, its rendezvous is closed with 1000."""
        listener = self.listen()
        sender = self.sender()
        sender.request("POST", "/hyco/up", self.auth(), b"u" * 70000)
        self.net.flush()
        rendezvous, announcement = self.fetch(listener)
        self.respond(rendezvous, announcement["id"], body=b"ok")
        sender.transport.loseConnection()  # type: ignore[union-attr]
        self.net.flush()
        self.assertEqual(rendezvous.closed[1], 1000)  # type: ignore[index]

    def test_listener_that_never_fetches(self) -> None:
        """A listener that does not open the rendezvous within 30 s gets its sender a 504."""
        self.listen()
        sender = self.sender()
        sender.request("POST", "/hyco/up", self.auth(), chunked=True)
        self.net.advance(29)
        self.assertEqual(sender.replies, [])
        self.net.advance(2)
        self.assertEqual(sender.reply.status, 504)
        self.assertIn(b"did not fetch the request within 30s", sender.reply.body)

    def test_upload_back_pressure(self) -> None:
        """A listener socket that cannot take more pauses reading from the sender until it drains."""
        sender, rendezvous, _ = self.streamed_upload()
        listener_side = rendezvous.server_transport
        self.assertFalse(sender.server_transport.reading_paused)
        listener_side.producer.pauseProducing()
        self.assertTrue(sender.server_transport.reading_paused)
        listener_side.producer.resumeProducing()
        self.assertFalse(sender.server_transport.reading_paused)

    def test_a_listener_that_takes_no_body_gets_its_sender_a_504(self) -> None:
        """A listener that takes none of a streamed upload for request_timeout: 504, its rendezvous closed."""
        sender, rendezvous, _ = self.streamed_upload()
        sender.chunk(b"first")
        self.net.flush()
        listener_side = rendezvous.server_transport
        listener_side.producer.pauseProducing()
        self.net.advance(TIMEOUT - 0.5)
        self.assertEqual(sender.replies, [])
        listener_side.producer.resumeProducing()  # it took more: the stall starts over
        listener_side.producer.pauseProducing()
        self.net.advance(TIMEOUT - 0.5)
        self.assertEqual(sender.replies, [])
        self.net.advance(1)
        self.assertEqual(sender.reply.status, 504)
        self.assertIn(f"took none of the request body for {TIMEOUT:g}s".encode(), sender.reply.body)
        self.assertEqual(rendezvous.closed[1], 1001)  # type: ignore[index]

    def test_an_upload_stall_does_not_cut_a_moving_download(self) -> None:
        """Once the answer streams, a download that keeps moving is not cut, though the listener reads no more."""
        sender, rendezvous, announcement = self.streamed_upload()
        sender.chunk(b"first")
        self.net.flush()
        rendezvous.server_transport.producer.pauseProducing()  # it takes no more of the upload
        self.respond(rendezvous, announcement["id"], streamed=True)
        rendezvous.beginMessage(isBinary=True)
        for _ in range(4):
            self.net.advance(TIMEOUT / 2)
            rendezvous.sendMessageFrame(b"tick")
            self.net.flush()
        self.assertFalse(sender.server_transport.aborted)
        self.assertEqual(sender.data.count(b"4\r\ntick\r\n"), 4)  # four chunks of the streamed answer

    def test_body_waits_for_the_rendezvous(self) -> None:
        """Until the listener has fetched the request, the sender's body is not read."""
        listener = self.listen()
        sender = self.sender()
        sender.request("POST", "/hyco/up", self.auth(), chunked=True)
        self.net.flush()
        self.assertTrue(sender.server_transport.reading_paused)
        self.fetch(listener)
        self.assertFalse(sender.server_transport.reading_paused)


class FailureTests(HttpTestCase):
    """Timeouts and listeners that go away."""

    def test_no_listener(self) -> None:
        """Nobody listening: 502 without Via, naming the cause and the tracking id."""
        sender = self.sender()
        sender.request("GET", "/hyco/x", self.auth())
        self.net.flush()
        reply = sender.reply
        self.assertEqual(reply.status, 502)
        self.assertIsNone(reply.header("Via"))
        self.assertIn(b"No listener is connected", reply.body)
        self.assertIn(b"TrackingId:", reply.body)

    def test_response_timeout(self) -> None:
        """No response within the hybrid connection's request timeout: 504."""
        self.listen()
        sender = self.sender()
        sender.request("GET", "/hyco/slow", self.auth())
        self.net.advance(TIMEOUT - 0.5)
        self.assertEqual(sender.replies, [])
        self.net.advance(1)
        self.assertEqual(sender.reply.status, 504)
        self.assertIn(f"did not respond within {TIMEOUT:g}s".encode(), sender.reply.body)

    def test_overlapping_requests_time_out_each_at_its_own_deadline(self) -> None:
        """Requests share one response timer; each still gets its 504 one timeout after it was sent."""
        listener = self.listen()
        senders = []
        for i in range(3):
            sender = self.sender()
            sender.request("GET", f"/hyco/{i}", self.auth())
            self.net.flush()
            senders.append((sender, self.last_request(listener)))
            self.net.advance(1)
        self.respond(listener, senders[1][1]["id"], body=b"in time")
        self.assertEqual(senders[1][0].reply.body, b"in time")
        self.net.advance(TIMEOUT - 3.5)  # 0.5 s before the first request's deadline
        self.assertEqual([sender.replies for sender, _ in (senders[0], senders[2])], [[], []])
        self.net.advance(1)
        self.assertEqual(senders[0][0].reply.status, 504)
        self.assertEqual(senders[2][0].replies, [])
        self.net.advance(1)
        self.assertEqual(senders[2][0].replies, [])  # 0.5 s left
        self.net.advance(1)
        self.assertEqual(senders[2][0].reply.status, 504)
        self.assertEqual(len(senders[1][0].replies), 1)
        response_timers = [c for c in self.net.clock.getDelayedCalls() if "Deadlines" in repr(c.func)]
        self.assertEqual(response_timers, [])  # no response due: no response timer left

    def test_slow_body_is_not_cut(self) -> None:
        """Once the response started, a body that keeps coming is never cut, however long it takes."""
        _listener, sender, request, rendezvous = self.answer_over_rendezvous("/hyco/slow")
        self.respond(rendezvous, request["id"], streamed=True)
        rendezvous.beginMessage(isBinary=True)
        for _ in range(6):
            self.net.advance(TIMEOUT - 1)
            rendezvous.sendMessageFrame(b"tick")
            self.net.flush()
        rendezvous.endMessage()
        self.net.flush()
        self.assertEqual((sender.reply.body, sender.reply.complete), (b"tick" * 6, True))

    def test_stalled_body_aborts_the_sender(self) -> None:
        """A body that stalls longer than the request timeout aborts the sender's connection."""
        _listener, sender, request, rendezvous = self.answer_over_rendezvous("/hyco/stall")
        self.respond(rendezvous, request["id"], headers={"Content-Length": "100"}, streamed=True)
        rendezvous.beginMessage(isBinary=True)
        rendezvous.sendMessageFrame(b"partial")
        self.net.advance(TIMEOUT + 1)
        self.assertTrue(sender.server_transport.aborted)
        self.assertFalse(sender.reply.complete)

    def test_listener_vanishing_mid_response(self) -> None:
        """A rendezvous lost in the middle of a chunked body aborts the sender; nothing looks complete."""
        _listener, sender, request, rendezvous = self.answer_over_rendezvous("/hyco/vanish")
        self.respond(rendezvous, request["id"], streamed=True)
        rendezvous.beginMessage(isBinary=True)
        rendezvous.sendMessageFrame(b"half of it")
        self.net.flush()
        rendezvous.transport.loseConnection()  # type: ignore[union-attr]
        self.net.flush()
        self.assertTrue(sender.server_transport.aborted)
        reply = sender.reply
        self.assertTrue(reply.chunked)
        self.assertFalse(reply.complete)

    def test_listener_closing_before_response(self) -> None:
        """The control channel closing before the response: 502."""
        listener = self.listen()
        sender = self.sender()
        sender.request("GET", "/hyco/gone", self.auth())
        self.net.flush()
        listener.sendClose(1000)
        self.net.flush()
        self.assertEqual(sender.reply.status, 502)
        self.assertIn(b"went away", sender.reply.body)

    def test_a_close_reason_with_line_breaks_stays_out_of_the_head(self) -> None:
        """
        A listener's close reason named in the relay's 502 cannot add lines to the sender's response head.

        The reason went into the status line as it came: CR LF in it ended the line, and the rest was read
        as a header field of the relay's own answer.
        """
        _listener, sender, _request, rendezvous = self.answer_over_rendezvous("/hyco/x")
        rendezvous.sendClose(4000, "x\r\nSet-Cookie: evil=1\r\n\x00")
        self.net.flush()
        reply = sender.reply
        self.assertEqual(reply.status, 502)
        self.assertIsNone(reply.header("Set-Cookie"))
        status_line = sender.data.split(b"\r\n", 1)[0]
        self.assertIsNone(re.search(rb"[\x00-\x1f\x7f]", status_line), status_line)
        self.assertIn(b"close code 4000", status_line)
        self.assertIn(b"Set-Cookie: evil=1", reply.body)  # the body names it as it came (text/plain)

    def test_a_listener_not_reading_is_warned_once_per_episode(self) -> None:
        """A listener that stops reading is warned about once, not per request it is skipped for, until it reads again."""
        self.listen("open")
        unread = [2 * relay.hybrid.control.MAX_CONTROL_BACKLOG]  # what its control channel has not taken
        self.patch(relay.hybrid.control, "pending_write_bytes", lambda transport: unread[0])
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        sender = self.sender()
        for i in range(100):
            sender.request("GET", f"/open/{i}")
        self.net.flush()
        self.assertEqual([r.status for r in sender.replies], [502] * 100)
        self.assertEqual(len([e for e in events if "is not reading" in formatEvent(e)]), 1)
        unread[0] = 0  # it reads again, then stops again: a new episode
        self.sender().request("GET", "/open/read")
        self.net.flush()
        unread[0] = 2 * relay.hybrid.control.MAX_CONTROL_BACKLOG
        self.sender().request("GET", "/open/stuck")
        self.net.flush()
        self.assertEqual(len([e for e in events if "is not reading" in formatEvent(e)]), 2)

    def test_listener_gone_leaves_no_channel_state(self) -> None:
        """
        A control channel that closes with requests in flight leaves nothing behind in the relay.

        Failing its exchanges used to make the channel's HTTP state again after it was forgotten, so
        every listener that left with a request in flight kept its channel and protocol for good.
        """
        for attempt in range(3):
            listener = self.listen()
            sender = self.sender()
            sender.request("GET", f"/hyco/gone-{attempt}", self.auth())
            self.net.flush()
            self.assertEqual(len(self.gateway.http._responses), 1)
            listener.sendClose(1000)
            self.net.flush()
            self.assertEqual(sender.reply.status, 502)
            self.assertEqual(self.gateway.http._responses, {})
            self.assertEqual(self.gateway.http.exchanges, set())

    def streaming_to_a_full_sender(self) -> tuple[RawHttpClient, RecordingClient, Any]:
        """A streamed answer begun over a rendezvous to a sender whose socket then fills (its server side)."""
        _listener, sender, request, rendezvous = self.answer_over_rendezvous("/hyco/down")
        self.respond(rendezvous, request["id"], streamed=True)
        rendezvous.beginMessage(isBinary=True)
        rendezvous.sendMessageFrame(b"x" * 1000)
        self.net.flush()
        sender_side = sender.server_transport
        sender_side.producer.pauseProducing()
        return sender, rendezvous, sender_side

    def test_download_back_pressure(self) -> None:
        """A slow sender pauses reading the rendezvous; waiting for it is no stall of the listener."""
        sender, rendezvous, sender_side = self.streaming_to_a_full_sender()
        self.assertTrue(rendezvous.server_transport.reading_paused)
        rendezvous.sendMessageFrame(b"y" * 1000)  # already on its way when reading paused
        self.net.flush()
        self.net.advance(TIMEOUT * 3)
        self.assertFalse(sender_side.aborted)
        sender_side.producer.resumeProducing()
        self.assertFalse(rendezvous.server_transport.reading_paused)
        rendezvous.endMessage()
        self.net.flush()
        self.assertTrue(sender.reply.complete)

    def test_a_sender_that_reads_none_of_its_answer_is_cut_off(self) -> None:
        """A sender that takes none of a streamed answer for http_idle_timeout (120 s) is idle: cut off."""
        _sender, rendezvous, sender_side = self.streaming_to_a_full_sender()
        self.net.advance(60)
        sender_side.producer.resumeProducing()  # it took some: the stall starts over
        sender_side.producer.pauseProducing()
        self.net.advance(119)
        self.assertFalse(sender_side.aborted)
        self.net.advance(2)
        self.assertTrue(sender_side.aborted)
        self.assertEqual(rendezvous.closed[1], 1001)  # type: ignore[index]
        self.assertEqual(self.gateway.http.exchanges, set())

    def test_pipelined_requests_wait_for_a_sender_that_reads_no_answers(self) -> None:
        """
        Requests pipelined behind one whose answer filled the sender's socket wait until it reads.

        twisted.web went on to the next buffered request as each answer ended, socket full or not: a sender
        that pipelined 64 KB of small GETs and read nothing had every answer (up to 64 KB each, from the
        control channel) queued in the gateway, some 1,600 of them for one connection.
        """
        listener = self.listen()
        sender = self.sender()
        head = f"GET /hyco/p HTTP/1.1\r\nHost: {HOST}\r\nServiceBusAuthorization: {self.token()}\r\n\r\n"
        sender.methods += ["GET"] * 3
        sender.send(head.encode() * 3)
        self.net.flush()
        self.assertEqual(len(listener.messages), 1)
        sender_side = sender.server_transport  # type: ignore[attr-defined]
        for answered in range(3):
            sender_side.producer.pauseProducing()  # the answer below fills its socket
            self.respond(listener, self.last_request(listener)["id"], body=b"%d" % answered)
            self.assertEqual(len(listener.messages), answered + 1)  # the next request waits
            self.assertTrue(sender_side.reading_paused)
            sender_side.producer.resumeProducing()  # it read them
            self.net.flush()
        self.assertEqual(len(listener.messages), 3)
        self.assertEqual([reply.body for reply in sender.replies], [b"0", b"1", b"2"])
        self.assertFalse(sender_side.reading_paused)
        self.assertEqual(self.gateway.http.exchanges, set())

    def test_a_sender_that_reads_none_of_a_download_is_not_read_either(self) -> None:
        """
        While a streamed answer waits for the sender's full socket, what the sender sends is not read.

        twisted.web kept reading a connection whose request was in hand, and held what came without a
        bound once the socket was full (its read-ahead limit only applied while it was not).
        """
        listener = self.listen()
        sender = self.sender()
        # Two values of one field: twisted.web's channel, not the lean one (which bounds its read-ahead).
        sender.request("GET", "/hyco/down", {**self.auth(), "Connection": "keep-alive, X-Hop"})
        self.net.flush()
        request = self.last_request(listener)
        rendezvous = self.net.connect(request["address"])
        self.respond(rendezvous, request["id"], streamed=True)
        rendezvous.beginMessage(isBinary=True)
        rendezvous.sendMessageFrame(b"x" * 1000)
        self.net.flush()
        sender_side = sender.server_transport  # type: ignore[attr-defined]
        self.assertFalse(sender_side.reading_paused)
        sender_side.producer.pauseProducing()  # its socket is full
        self.assertTrue(sender_side.reading_paused)
        self.assertTrue(rendezvous.server_transport.reading_paused)  # type: ignore[union-attr]
        sender_side.producer.resumeProducing()
        self.assertFalse(sender_side.reading_paused)
        rendezvous.endMessage()
        self.net.flush()
        self.assertEqual((sender.reply.body, sender.reply.complete), (b"x" * 1000, True))

    def test_a_full_control_channel_is_still_read(self) -> None:
        """
        A listener's control channel whose socket is full is still read: its protocol decides, not twisted.web.

        twisted.web's channel stays the producer of a connection an upgrade took over; pausing reading
        there too when the socket filled left a listener that stopped reading unable to close cleanly.
        """
        listener = self.listen()
        side = listener.server_transport  # type: ignore[attr-defined]
        side.producer.pauseProducing()  # (under TLS, the TLS layer's: it tells twisted.web's channel)
        self.assertFalse(side.reading_paused)
        side.producer.resumeProducing()
        self.assertFalse(side.reading_paused)

    def test_a_head_answer_is_complete_with_its_head(self) -> None:
        """
        An answer that has no body for the sender (HEAD, 204, 304) ends with its head, whatever body follows.

        hyco-https sends a HEAD answer's body as for a GET. The sender's request was only finished once all
        of it had come over the rendezvous (its next request on the connection waited as long), and a
        listener that vanished or stalled in it had the sender's connection aborted, with the sender's
        next request on it, though its answer was complete.
        """
        listener = self.listen()
        sender = self.sender()
        sender.request("POST", "/hyco/up", self.auth(), b"u" * 70_000)  # over a rendezvous, kept after
        self.net.flush()
        rendezvous, announced = self.fetch(listener)
        self.respond(rendezvous, announced["id"], body=b"stored")
        for method, status in (("HEAD", 200), ("GET", 304), ("DELETE", 204)):
            with self.subTest(method=method, status=status):
                sender.request(method, "/hyco/big", self.auth())
                self.net.flush()
                request = json.loads(rendezvous.messages[-1][0])["request"]
                self.assertEqual(request["method"], method)
                self.respond(
                    rendezvous, request["id"], status, headers={"Content-Length": "1000000"}, streamed=True
                )
                rendezvous.beginMessage(isBinary=True)
                rendezvous.sendMessageFrame(b"b" * 1000)  # the body begins, and the rest takes its time
                self.net.flush()
                reply = sender.replies[-1]
                self.assertEqual((reply.status, reply.complete, reply.body), (status, True, b""))
                sender.request("GET", "/hyco/next", self.auth())  # served meanwhile (control channel)
                self.net.flush()
                self.respond(listener, self.last_request(listener)["id"], body=b"next")
                self.assertEqual((sender.reply.status, sender.reply.body), (200, b"next"))
                rendezvous.sendMessageFrame(b"b" * 1000)
                rendezvous.endMessage()  # the rendezvous is kept for the sender again
                self.net.flush()
        self.assertIsNone(rendezvous.closed)
        self.assertFalse(sender.server_transport.aborted)  # type: ignore[attr-defined]
        self.assertEqual(sender.data.count(b"b"), 0)
        self.assertEqual(self.gateway.http.exchanges, set())

    def test_a_rendezvous_drained_after_its_sender_left_is_closed(self) -> None:
        """
        A rendezvous whose body nobody reads ends after its sender left: it is closed, not kept for it.

        A socket kept for a connection already gone stayed open until it idled out.
        """
        listener = self.listen()
        sender = self.sender()
        sender.request("HEAD", "/hyco/big", {**self.auth(), "X-Big": "h" * 40_000})  # over a rendezvous
        self.net.flush()
        rendezvous, announced = self.fetch(listener)
        self.respond(rendezvous, announced["id"], streamed=True)
        rendezvous.beginMessage(isBinary=True)
        rendezvous.sendMessageFrame(b"b" * 1000)
        self.net.flush()
        self.assertEqual(sender.reply.status, 200)
        sender.transport.loseConnection()  # type: ignore[union-attr]
        self.net.flush()
        rendezvous.endMessage()
        self.net.flush()
        self.assertEqual(rendezvous.closed[1], 1000)  # type: ignore[index]
        self.assertEqual(self.gateway.http.exchanges, set())

    def test_a_head_answer_outlives_its_listener(self) -> None:
        """A listener that vanishes in the middle of a HEAD answer's body leaves the sender's answer whole."""
        listener = self.listen()
        sender = self.sender()
        sender.request("HEAD", "/hyco/big", {**self.auth(), "X-Big": "h" * 40_000})  # over a rendezvous
        self.net.flush()
        rendezvous, announced = self.fetch(listener)
        self.respond(rendezvous, announced["id"], headers={"Content-Length": "1000000"}, streamed=True)
        rendezvous.beginMessage(isBinary=True)
        rendezvous.sendMessageFrame(b"b" * 1000)
        self.net.flush()
        rendezvous.transport.loseConnection()  # type: ignore[union-attr]
        self.net.flush()
        self.assertFalse(sender.server_transport.aborted)  # type: ignore[attr-defined]
        reply = sender.reply
        self.assertEqual(
            (reply.status, reply.complete, reply.header("Content-Length")), (200, True, "1000000")
        )
        sender.request("GET", "/hyco/next", self.auth())
        self.net.flush()
        self.respond(listener, self.last_request(listener)["id"], body=b"next")
        self.assertEqual((sender.reply.status, sender.reply.body), (200, b"next"))

    def test_sender_already_full(self) -> None:
        """A streamed answer to a sender whose socket is already full starts with the rendezvous paused."""
        _listener, sender, request, rendezvous = self.answer_over_rendezvous("/hyco/full")
        sender.server_transport.producer.pauseProducing()
        self.respond(rendezvous, request["id"], streamed=True)
        self.assertTrue(rendezvous.server_transport.reading_paused)

    def test_content_length_mismatch(self) -> None:
        """A streamed body shorter than the listener's Content-Length aborts the sender."""
        _listener, sender, request, rendezvous = self.answer_over_rendezvous("/hyco/short")
        self.stream_response(rendezvous, request["id"], [b"123"], headers={"Content-Length": "10"})
        self.assertTrue(sender.server_transport.aborted)
        self.assertFalse(sender.reply.complete)


class AbandonedRequestTests(HttpTestCase):
    """A small request whose sender left keeps its address for a late answer, and nothing else."""

    def abandon(self, listener: RecordingClient, count: int) -> list[dict[str, Any]]:
        """Send C{count} 32 KiB POSTs on the control channel, each sender hanging up before its answer."""
        requests = []
        for _ in range(count):
            sender = self.sender()
            sender.request("POST", "/hyco/x", self.auth(), b"x" * 32 * 1024)
            self.net.flush()
            requests.append(self.texts(listener)[-1]["request"])
            sender.transport.loseConnection()  # type: ignore[union-attr]
            self.net.flush()
        return requests

    def test_an_abandoned_request_keeps_no_exchange(self) -> None:
        """The addresses of ended requests hold neither their exchanges nor their bodies."""
        listener = self.listen()
        self.abandon(listener, 50)
        self.assertEqual(len(listener.messages), 2 * 50)  # each request and its body reached the listener
        self.assertEqual(self.gateway.http.exchanges, set())
        tickets = list(self.gateway.hybrid.rendezvous._tickets.values())
        self.assertEqual(len(tickets), 50)
        self.assertEqual([t.context.exchange for t in tickets], [None] * 50)

    def test_a_late_answer_rendezvous_is_accepted_and_closed(self) -> None:
        """hyco-https opens an ended request's address for its large answer: 101, then 1000, not a 403."""
        listener = self.listen()
        (request,) = self.abandon(listener, 1)
        late = self.net.connect(request["address"])
        self.assertEqual(late.status, 101)
        self.assertEqual(late.closed and late.closed[1], 1000)
        self.assertEqual(self.net.connect(request["address"]).status, 403)  # used

    def test_a_senders_tracking_id_does_not_claim_the_late_address(self) -> None:
        """The id a 504 shows its sender cannot open the late answer's address: that needs the listener's key."""
        listener = self.listen()
        sender = self.sender()
        sender.request("GET", "/hyco/slow", self.auth())
        self.net.flush()
        request = self.last_request(listener)
        self.assertIn("&sb-hc-key=", request["address"])
        self.net.advance(TIMEOUT + 1)
        self.assertEqual(sender.reply.status, 504)
        tracking_id = re.search(r"TrackingId:(\S+)", sender.reply.body.decode())
        assert tracking_id is not None
        guess = self.net.connect(
            f"wss://{HOST}/$hc/hyco?sb-hc-action=request&sb-hc-id={tracking_id.group(1)}", source="10.0.0.5"
        )
        self.assertEqual(guess.status, 403)
        late = self.net.connect(request["address"])  # so hyco-https, which has no handler for a 403, lives
        self.assertEqual(late.status, 101)
        self.assertEqual(late.closed and late.closed[1], 1000)

    def test_late_addresses_are_bounded(self) -> None:
        """Past the limit of kept addresses the oldest is withdrawn (403); the newest stay claimable."""
        self.patch(relay.hybrid.http, "MAX_LATE_ADDRESSES", 2)
        listener = self.listen()
        oldest, middle, newest = self.abandon(listener, 3)
        self.assertEqual(len(self.gateway.hybrid.rendezvous), 2)
        self.assertEqual(self.net.connect(oldest["address"]).status, 403)
        self.assertEqual(self.net.connect(middle["address"]).status, 101)
        self.assertEqual(self.net.connect(newest["address"]).status, 101)

    def test_late_addresses_expire(self) -> None:
        """An ended request's address lapses when its response window (request and rendezvous timeouts) does."""
        listener = self.listen()
        (request,) = self.abandon(listener, 1)
        self.net.advance(TIMEOUT + 30 + 1)
        self.assertEqual(len(self.gateway.hybrid.rendezvous), 0)
        self.assertEqual(self.gateway.http._late, {})
        self.assertEqual(self.net.connect(request["address"]).status, 403)

    def test_a_late_address_lapsing_is_not_a_listener_missing(self) -> None:
        """
        The kept address of a request whose sender left, or got its 504, lapses with a debug line saying so.

        It did log, at info level, that no listener came: for every such request, long after its end.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        listener = self.listen()
        (left,) = self.abandon(listener, 1)
        sender = self.sender()
        sender.request("GET", "/hyco/slow", self.auth())
        self.net.flush()
        timed_out = self.last_request(listener)
        self.net.advance(TIMEOUT + 1)
        self.assertEqual(sender.reply.status, 504)
        self.net.advance(30)
        self.assertEqual(len(self.gateway.hybrid.rendezvous), 0)
        lapsed = [
            (e["log_level"], formatEvent(e)) for e in events if "rendezvous" in e.get("log_namespace", "")
        ]
        self.assertEqual(
            lapsed,
            [
                (
                    LogLevel.debug,
                    f"response address of ended request {request['id']} lapsed: no late answer came within 40s",
                )
                for request in (left, timed_out)
            ],
        )


class HostFieldTests(HttpTestCase):
    """The Host rule of RFC 9112 section 3.2, in a namespace served under any host name (the wildcard)."""

    def namespace_hosts(self) -> tuple[str, ...]:
        return ("*",)

    def raw(self, data: bytes, method: str = "GET") -> RawHttpClient:
        sender = self.sender()
        sender.send(data)
        sender.methods.append(method)
        self.net.flush()
        return sender

    def test_http_1_1_needs_one_host(self) -> None:
        """
        An HTTP/1.1 request without Host, or any with two, is a logged 400 and the connection closes.

        Lean GETs and requests twisted.web parses alike; such requests were routed as naming no host.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        listener = self.listen("open")
        cases = {
            "no Host": (b"GET /open/x HTTP/1.1\r\n\r\n", "GET"),
            "no Host, a body": (b"POST /open/x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", "POST"),
            "no Host, absolute form": (b"GET http://relay.test/open/x HTTP/1.1\r\n\r\n", "GET"),
            "two Host fields": (
                b"GET /open/x HTTP/1.1\r\nHost: relay.test\r\nHost: relay.test\r\n\r\n",
                "GET",
            ),
            "two Host fields, 1.0": (b"GET /open/x HTTP/1.0\r\nHost: a.test\r\nhost: b.test\r\n\r\n", "GET"),
        }
        for name, (data, method) in cases.items():
            with self.subTest(name):
                sender = self.raw(data, method)
                self.assertEqual(sender.reply.status, 400)
                self.assertIn(b"Host header field", sender.reply.body)
                self.assertEqual(sender.reply.header("Connection"), "close")
                self.assertIsNotNone(sender.lost)
        self.assertEqual(self.texts(listener), [])
        refusals = [formatEvent(e) for e in events if "Host header field" in formatEvent(e)]
        self.assertEqual(len(refusals), len(cases), refusals)

    def test_host_must_be_a_host_and_port(self) -> None:
        """
        A Host value that is no URI authority (spaces, a comma, user information) is a logged 400.

        It was routed as a host name no namespace has (a 404), or the wildcard namespace relayed it.
        """
        listener = self.listen("open")
        for value in (b"a b", b"a.test, b.test", b"user@a.test", b"a.test:8x", b"[::1", b"caf\xc3\xa9.test"):
            for data in (
                b"GET /open/x HTTP/1.1\r\nHost: %s\r\n\r\n" % value,  # the lean channel's kind
                b"GET /open/x HTTP/1.1\r\nHost: %s\r\nX-A: 1\r\nX-A: 2\r\n\r\n" % value,  # twisted.web's
            ):
                with self.subTest(data=data):
                    sender = self.raw(data)
                    self.assertEqual(sender.reply.status, 400)
                    self.assertIn(b"Host header field", sender.reply.body)
        self.assertEqual(self.texts(listener), [])
        for value in (
            b"relay.test",
            b"relay.test:9080",
            b"127.0.0.1:80",
            b"[::1]:9080",
            b"RELAY.test",
            b"a_b.test",
        ):
            with self.subTest(value=value):
                sender = self.raw(b"GET /open/x HTTP/1.1\r\nHost: %s\r\n\r\n" % value)
                request = self.last_request(listener)
                self.respond(listener, request["id"], body=b"ok")
                self.assertEqual(sender.reply.status, 200)

    def test_absolute_form_host_must_be_a_host_and_port(self) -> None:
        """
        A request target in absolute form whose authority is no host and port is a logged 400.

        Its authority replaces the Host field, so the same rule holds; it was routed as that host (here the
        wildcard namespace relayed it).
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        listener = self.listen("open")
        for authority in (b"a<b.test", b"a.test:8x", b'a"b.test'):
            with self.subTest(authority=authority):
                sender = self.raw(b"GET http://%s/open/x HTTP/1.1\r\nHost: relay.test\r\n\r\n" % authority)
                self.assertEqual(sender.reply.status, 400)
                self.assertIn(b"request target's host", sender.reply.body)
        self.assertEqual(self.texts(listener), [])
        refusals = [formatEvent(e) for e in events if "request target's host" in formatEvent(e)]
        self.assertEqual(len(refusals), 3, refusals)
        sender = self.raw(b"GET http://user@relay.test:9080/open/x HTTP/1.1\r\nHost: relay.test\r\n\r\n")
        request = self.last_request(listener)
        self.assertEqual(request["requestTarget"], "/open/x")
        self.respond(listener, request["id"], body=b"ok")
        self.assertEqual(sender.reply.status, 200)

    def test_http_1_0_may_go_without_host(self) -> None:
        """HTTP/1.0 needs no Host: such a request is relayed (here by the wildcard namespace)."""
        listener = self.listen("open")
        sender = self.raw(b"GET /open/x HTTP/1.0\r\n\r\n")
        request = self.last_request(listener)
        self.assertEqual(request["requestTarget"], "/open/x")
        self.respond(listener, request["id"], body=b"hello")
        self.assertEqual(sender.reply.status, 200)
        self.assertEqual(sender.reply.body, b"hello")


class RequestRulesTests(HttpTestCase):
    """What is refused before any listener is involved, and tokens."""

    def test_oversized_heads(self) -> None:
        """Too many header bytes: 431; a too long request line: 414; garbage: 400 - each with a tracking id."""
        for raw, status in (
            (b"GET /hyco HTTP/1.1\r\nHost: relay.test\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
            (b"GET /hyco HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 600 + b"\r\n", 431),
            (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", 414),
            (b"GET /hyco HTTP/1.1\r\nNo colon here\r\n\r\n", 400),
        ):
            with self.subTest(status=status):
                sender = self.sender()
                sender.send(raw)
                sender.methods.append("GET")
                self.net.flush()
                self.assertEqual(sender.reply.status, status)
                self.assertIn(b"TrackingId:", sender.reply.body)

    def test_refused_methods_and_entities(self) -> None:
        """CONNECT and Upgrade requests are 400; a hybrid connection without HTTP is 404."""
        self.listen()
        cases = [
            ("CONNECT", "/hyco", {}, 400),
            ("GET", "/hyco", {"Upgrade": "websocket", "Connection": "Upgrade"}, 400),
            ("GET", "/off/x", self.auth("off"), 404),
        ]
        for method, target, headers, status in cases:
            with self.subTest(method=method, target=target):
                sender = self.sender()
                sender.request(method, target, {**self.auth(), **headers})
                self.net.flush()
                self.assertEqual(sender.reply.status, status)

    def test_anonymous_and_token_senders(self) -> None:
        """C{open} needs no token and forwards Authorization; C{hyco} needs one and consumes Authorization."""
        listener = self.listen("open")
        sender = self.sender()
        sender.request("GET", "/open/x", {"Authorization": "Bearer app-token"})
        self.net.flush()
        self.assertEqual(self.last_request(listener)["requestHeaders"]["Authorization"], "Bearer app-token")
        hyco = self.listen()
        refused = self.sender()
        refused.request("GET", "/hyco/x")
        self.net.flush()
        self.assertEqual(refused.reply.status, 401)
        with_authorization = self.sender()
        with_authorization.request("GET", "/hyco/x", {"Authorization": self.token()})
        self.net.flush()
        self.assertNotIn("Authorization", self.last_request(hyco)["requestHeaders"])
        bad = self.sender()
        bad.request("GET", "/hyco/x", {"ServiceBusAuthorization": self.token("open")})
        self.net.flush()
        self.assertEqual(bad.reply.status, 403)

    def test_too_many_tokens(self) -> None:
        """Five C{ServiceBusAuthorization} headers are a 401, even when one of them holds a valid token."""
        self.listen()
        sender = self.sender()
        tokens = ["placeholder"] * 4 + [self.token()]
        head = "".join(f"ServiceBusAuthorization: {token}\r\n" for token in tokens)
        sender.methods.append("GET")
        sender.send(f"GET /hyco/x HTTP/1.1\r\nHost: relay.test\r\n{head}\r\n".encode())
        self.net.flush()
        self.assertEqual(sender.reply.status, 401)
        self.assertIn(b"Too many tokens", sender.reply.body)


class RoutingTests(HttpTestCase):
    """Which channel and which listener a request goes to."""

    def test_large_headers_use_a_rendezvous(self) -> None:
        """More than 32 kB of header metadata does not go on the control channel, even without a body."""
        listener = self.listen()
        sender = self.sender()
        sender.request("GET", "/hyco/h", {**self.auth(), "X-Big": "v" * 40000})
        self.net.flush()
        self.assertEqual(set(self.last_request(listener)), {"address", "id"})

    def test_requests_are_spread_over_listeners(self) -> None:
        """Each request (not pinned to a rendezvous) goes to one of the live listeners in turn."""
        first, second = self.listen(), self.listen(source="10.0.0.2")
        for _ in range(4):
            self.sender().request("GET", "/hyco/lb", self.auth())
        self.net.flush()
        self.assertEqual((len(first.messages), len(second.messages)), (2, 2))

    def test_shutdown(self) -> None:
        """Stopping the gateway answers waiting senders 503 and closes rendezvous sockets with 1001."""
        listener = self.listen()
        waiting = self.sender()
        waiting.request("GET", "/hyco/w", self.auth())
        streaming = self.sender()
        streaming.request("POST", "/hyco/up", self.auth(), chunked=True)
        self.net.flush()
        rendezvous = self.net.connect(self.last_request(listener)["address"])
        self.gateway.stopService()
        self.net.flush()
        self.assertEqual(waiting.reply.status, 503)
        self.assertEqual(rendezvous.closed[1], 1001)  # type: ignore[index]
        # no address is kept for a late answer: the stopping gateway takes no rendezvous any more
        self.assertEqual((len(self.gateway.hybrid.rendezvous), self.gateway.http._late), (0, {}))


class DrainTests(HttpTestCase):
    """While a stopping gateway drains, HTTP requests under way may still use rendezvous."""

    def limits(self) -> dict[str, float]:
        """Ten seconds of drain."""
        return {"drain_timeout": 10.0}

    def test_a_large_answer_over_a_rendezvous_opened_after_the_stop(self) -> None:
        """
        A response rendezvous opened after the stop began is let through, and the sender gets the answer.

        The address used to be withdrawn and the upgrade refused with 503.
        """
        listener = self.listen()
        sender = self.sender()
        sender.request("GET", "/hyco/big", self.auth())
        self.net.flush()
        request = self.last_request(listener)
        stopped = self.gateway.stopService()
        self.net.flush()
        rendezvous = self.net.connect(request["address"])
        self.assertEqual(rendezvous.status, 101)
        pieces = [bytes([i]) * 10240 for i in range(10)] + [b""]
        self.stream_response(rendezvous, request["id"], pieces)
        self.assertEqual(sender.reply.body, b"".join(pieces))
        self.net.advance(0.2)
        self.assertEqual(listener.closed and listener.closed[1], 1001)
        self.net.advance(10)
        self.successResultOf(stopped)

    def test_a_large_request_fetched_after_the_stop(self) -> None:
        """A request announced for a rendezvous before the stop can still be fetched and answered."""
        listener = self.listen()
        sender = self.sender()
        sender.request("POST", "/hyco/up", self.auth(), body=b"u" * 100_000)
        self.net.flush()
        announcement = self.last_request(listener)
        self.assertEqual(set(announcement), {"address", "id"})
        stopped = self.gateway.stopService()
        self.net.flush()
        rendezvous = self.net.connect(announcement["address"])
        self.assertEqual(rendezvous.status, 101)
        request = json.loads(rendezvous.messages[0][0])["request"]
        self.respond(rendezvous, request["id"], body=b"done")
        self.assertEqual((sender.reply.status, sender.reply.body), (200, b"done"))
        self.net.advance(10.5)
        self.successResultOf(stopped)

    def test_other_upgrades_are_still_refused(self) -> None:
        """Only rendezvous upgrades pass: a new listener and a new sender get 503 while draining."""
        listener = self.listen()
        sender = self.sender()
        sender.request("GET", "/hyco/slow", self.auth())
        self.net.flush()
        self.gateway.stopService()
        self.net.flush()
        self.assertEqual(self.listen(source="10.0.0.9").status, 503)
        self.assertEqual(self.send().status, 503)
        late = self.sender("10.0.0.10")
        late.request("GET", "/hyco/late", self.auth())
        self.net.flush()
        self.assertEqual(late.reply.status, 503)
        self.assertIsNone(listener.closed)


class HeldUploadTests(HttpTestCase):
    """An idle timeout (5 s) shorter than the hybrid connection's request timeout (10 s)."""

    def limits(self) -> dict[str, float]:
        return {"http_idle_timeout": 5.0}

    def test_a_sender_held_back_by_the_relay_is_not_idle(self) -> None:
        """While the listener holds the upload back, the sender's idle timeout does not end its connection."""
        sender, rendezvous, announcement = self.streamed_upload()
        listener_side = rendezvous.server_transport
        listener_side.producer.pauseProducing()
        self.net.advance(9)  # past the idle timeout, within the listener's request timeout
        self.assertIsNone(sender.lost)
        listener_side.producer.resumeProducing()
        sender.chunk(b"rest")
        sender.chunk(b"")
        self.net.flush()
        self.assertEqual(rendezvous.messages[-1], (b"rest", True))
        self.respond(rendezvous, announcement["id"], body=b"done")
        self.assertEqual(sender.reply.body, b"done")

    def test_a_sender_that_stops_after_a_long_hold_is_still_idle(self) -> None:
        """A hold longer than the idle timeout does not switch the idle timeout off for the rest of the upload."""
        sender, rendezvous, _ = self.streamed_upload()
        listener_side = rendezvous.server_transport
        listener_side.producer.pauseProducing()
        self.net.advance(6)  # past the idle timeout, within the listener's request timeout
        listener_side.producer.resumeProducing()
        sender.chunk(b"more")
        self.net.flush()
        self.net.advance(4)
        self.assertIsNone(sender.lost)
        self.net.advance(2)  # the sender stopped its upload for good: idle
        self.assertIsNotNone(sender.lost)

    def test_a_sender_that_stops_is_still_idle(self) -> None:
        """A sender that stops sending its body while the relay reads is timed out as before."""
        listener = self.listen()
        sender = self.sender()
        sender.request("POST", "/hyco/up", self.auth(), chunked=True)
        self.net.flush()
        self.fetch(listener)
        sender.chunk(b"some")
        self.net.advance(6)
        self.assertIsNotNone(sender.lost)
