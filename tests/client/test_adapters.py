"""Tests for L{relay.client.adapters}: the address the sender used, and answers the relay would refuse."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from relay.client.adapters import _environ, _server_address, _WsgiInput, resource_app, wsgi_app
from relay.client.commands import parse_command
from relay.client.errors import ConnectionClosedError
from relay.client.headers import Headers
from relay.client.http import HttpApp, HttpListener, _RequestChannel
from relay.client.httprequest import RelayedRequest, RequestBody
from relay.client.httpresponse import RelayedResponse

from .test_http import FakeControl
from .test_http_abandon import FakeListener, FakeRendezvous, request_message, send_request


def request_with(headers: dict[str, str]) -> RelayedRequest:
    return RelayedRequest(
        id="r1",
        method="GET",
        target="/hyco/",
        path="/",
        query="",
        headers=Headers(headers),
        remote_endpoint=None,
        body=RequestBody.whole(None),
    )


class ServerAddressTests(SynchronousTestCase):
    """The host, port and scheme a WSGI or twisted.web application is told it was reached at."""

    def test_host_and_port(self) -> None:
        """C{Host} names both; C{X-Forwarded-Proto} says whether TLS was used."""
        self.assertEqual(
            _server_address(request_with({"Host": "relay.example:8443", "X-Forwarded-Proto": "https"})),
            ("relay.example", 8443, True),
        )

    def test_default_ports(self) -> None:
        """Without a port, the scheme's default."""
        self.assertEqual(
            _server_address(request_with({"Host": "relay.example"})), ("relay.example", 80, False)
        )
        self.assertEqual(
            _server_address(request_with({"Host": "relay.example", "X-Forwarded-Proto": "https"})),
            ("relay.example", 443, True),
        )

    def test_a_port_that_is_not_ascii_digits(self) -> None:
        """
        A port of other digits (C{"²"} passes C{str.isdigit}, C{int} refuses it) is no port: the default.

        It used to raise C{ValueError} while the request was being adapted.
        """
        for port in ("\u00b2", "\u0663", "https"):
            with self.subTest(port=port):
                self.assertEqual(
                    _server_address(request_with({"Host": f"relay.example:{port}"})),
                    ("relay.example", 80, False),
                )


class InlineReactor(MemoryReactorClock):
    """A reactor whose thread is every thread: calls from a "worker" run at once."""

    def callFromThread(self, f: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class InlinePool:
    """A thread pool that runs each call at once, in the caller's thread."""

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, object], object], f: Callable[..., object], *args: Any, **kwargs: Any
    ) -> None:
        try:
            result = f(*args, **kwargs)
        except Exception:
            on_result(False, Failure())
        else:
            on_result(True, result)


class AdaptedAppTestCase:
    """Serves one relayed request to an adapted application, with the log observed."""

    def setUp(self) -> None:
        self.reactor = InlineReactor()
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def serve(self, app: HttpApp) -> dict[str, Any]:
        """Relay one small GET to C{app}; the C{response} head and the body it sent on the control channel."""
        listener = FakeListener()
        control = FakeControl()
        listener.control_channel = control
        HttpListener(listener, app, reactor=self.reactor)
        command = parse_command(request_message("GET", "/hyco/x"))
        listener.request_handler(command, None)
        self.reactor.advance(0)
        head = json.loads(control.sent[0][0])["response"]
        head["payload"] = b"".join(payload for payload, binary in control.sent[1:] if binary)
        return dict(head)


class StatusTests(AdaptedAppTestCase, SynchronousTestCase):
    """
    An adapted application that answers with a status the relay would refuse sends a 500 instead.

    The relay takes 200-599 as a final status (it answers anything else 502 and blames the listener), and
    L{relay.client.httpresponse.RelayedResponse} now refuses other statuses when they are set.
    """

    def test_twisted_web_resource(self) -> None:
        """
        A resource's status out of range: a 500 with the resource's headers and body, and a logged error.

        twisted.web has started writing when it hands over the status, so its own error page would go out
        under the default 200.
        """

        class Odd(Resource):
            isLeaf = True

            def render_GET(self, request: Request) -> bytes:
                request.setResponseCode(999)
                request.setHeader(b"X-Odd", b"1")
                return b"odd"

        head = self.serve(resource_app(Odd(), reactor=self.reactor))
        self.assertEqual((head["statusCode"], head["statusDescription"]), (500, "Internal Server Error"))
        self.assertEqual((head["responseHeaders"]["X-Odd"], head["payload"]), ("1", b"odd"))
        [error] = [e for e in self.observer if "the resource's response" in e["log_format"]]
        self.assertIn("status code 999 is out of range", error["error"])

    def test_wsgi_app(self) -> None:
        """A WSGI application's status out of range fails it before anything is sent: the listener's 500."""

        def application(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            start_response("600 Beyond", [("X-Odd", "1")])
            return [b"odd"]

        head = self.serve(wsgi_app(application, reactor=self.reactor, threadpool=InlinePool()))
        self.assertEqual(head["statusCode"], 500)
        self.assertNotIn("X-Odd", head["responseHeaders"])
        self.assertTrue(head["payload"].startswith(b"The listener failed."), head["payload"])
        [failure] = [e for e in self.observer if "log_failure" in e]
        self.assertIsInstance(failure["log_failure"].value, ValueError)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class HeaderTests(AdaptedAppTestCase, SynchronousTestCase):
    """A WSGI application's header that the relay would refuse fails it before anything is sent: a 500."""

    def test_wsgi_app(self) -> None:
        """A header name that is no token is refused as it is applied: the listener's 500, not the relay's 502."""

        def application(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            start_response("200 OK", [("X(1)", "odd")])
            return [b"body"]

        head = self.serve(wsgi_app(application, reactor=self.reactor, threadpool=InlinePool()))
        self.assertEqual(head["statusCode"], 500)
        self.assertNotIn("X(1)", head["responseHeaders"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class WsgiEnvironTests(SynchronousTestCase):
    """The WSGI environ a relayed request's headers make."""

    def test_names_with_underscores_are_dropped(self) -> None:
        """
        A header named with an underscore is dropped: in the environ it would pass for another.

        C{X_Forwarded_Proto: https} becomes C{HTTP_X_FORWARDED_PROTO} as C{X-Forwarded-Proto} does, so a
        sender that put it after the relay's own replaced it (Django's C{SECURE_PROXY_SSL_HEADER} and
        Werkzeug's C{ProxyFix} read it), and C{Content_Type} replaced C{CONTENT_TYPE}. Django's, gunicorn's
        and waitress's servers drop such headers too.
        """
        environ = _environ(
            request_with(
                {
                    "X-Forwarded-Proto": "http",
                    "X_Forwarded_Proto": "https",
                    "X-Forwarded-For": "192.0.2.1",
                    "x_forwarded_for": "127.0.0.1",
                    "Content-Type": "text/plain",
                    "Content_Type": "application/json",
                    "X-App": "1",
                }
            ),
            MemoryReactorClock(),
        )
        self.assertEqual(environ["HTTP_X_FORWARDED_PROTO"], "http")
        self.assertEqual(environ["HTTP_X_FORWARDED_FOR"], "192.0.2.1")
        self.assertEqual(environ["CONTENT_TYPE"], "text/plain")
        self.assertEqual(environ["HTTP_X_APP"], "1")
        self.assertEqual(environ["wsgi.url_scheme"], "http")

    def test_values_are_native_strings(self) -> None:
        """
        Header values and the query hold their UTF-8 bytes as latin-1 characters (PEP 3333's native strings).

        A value past U+00FF made C{.encode("latin-1")} fail in the application, and C{é} came back as the
        one byte E9 instead of its UTF-8.
        """
        request = replace(request_with({"X-Name": "caf\u00e9 \u4e2d", "X-Plain": "ascii"}), query="q=\u00e9")
        environ = _environ(request, MemoryReactorClock())
        self.assertEqual(environ["HTTP_X_NAME"].encode("latin-1").decode("utf-8"), "caf\u00e9 \u4e2d")
        self.assertEqual(environ["QUERY_STRING"].encode("latin-1"), "q=\u00e9".encode())
        self.assertEqual(environ["HTTP_X_PLAIN"], "ascii")


class WsgiInputTests(SynchronousTestCase):
    """C{wsgi.input} over a streamed body: reads and lines across the pieces the body arrived in."""

    def input_over(self, *pieces: bytes) -> _WsgiInput:
        body = RequestBody()
        for piece in pieces:
            body.feed(piece)
        body.end()
        return _WsgiInput(body, InlineReactor())

    def test_lines_across_pieces(self) -> None:
        """Lines end at newlines whatever the pieces; the last line may have none."""
        stream = self.input_over(b"ab", b"c\nd", b"e\n\nf", b"g")
        self.assertEqual(list(stream), [b"abc\n", b"de\n", b"\n", b"fg"])
        self.assertEqual(stream.read(), b"")

    def test_sized_reads_and_lines(self) -> None:
        """A size caps a line or a read; what is left is read next."""
        stream = self.input_over(b"one\ntw", b"o\nthr", b"ee")
        self.assertEqual(stream.readline(2), b"on")
        self.assertEqual(stream.readline(), b"e\n")
        self.assertEqual(stream.read(3), b"two")
        self.assertEqual(stream.readline(10), b"\n")
        self.assertEqual(stream.readline(4), b"thre")
        self.assertEqual(stream.read(10), b"e")
        self.assertEqual((stream.read(10), stream.readline()), (b"", b""))

    def test_whole_read_of_many_pieces(self) -> None:
        """C{read()} gives every piece once, in order, after a line was taken from the first."""
        pieces = [b"%06d\n" % i for i in range(5000)]
        stream = self.input_over(*pieces)
        self.assertEqual(stream.readline(), pieces[0])
        self.assertEqual(stream.read(), b"".join(pieces[1:]))
        self.assertEqual(stream.read(), b"")

    def test_a_long_line(self) -> None:
        """A line longer than many pieces comes whole; C{readlines} gives the rest."""
        stream = self.input_over(*([b"x" * 1000] * 300), b"\nlast")
        self.assertEqual(stream.readline(), b"x" * 300_000 + b"\n")
        self.assertEqual(stream.readlines(), [b"last"])


class FailedAppTests(AdaptedAppTestCase, SynchronousTestCase):
    """An application that fails before anything left: the listener's 500, alone and with its length."""

    def test_written_part_is_dropped(self) -> None:
        """What the application wrote before failing (still buffered) does not precede the 500's text."""

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            response.headers["X-Partial"] = "1"
            await response.write(b"partial ")
            raise RuntimeError("broken")

        head = self.serve(app)
        self.assertEqual(head["statusCode"], 500)
        self.assertTrue(head["payload"].startswith(b"The listener failed."), head["payload"])
        self.assertEqual(head["responseHeaders"].get("Content-Length"), str(len(head["payload"])))
        self.assertNotIn("X-Partial", head["responseHeaders"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_reason_phrase_that_cannot_be_sent(self) -> None:
        """
        A reason phrase with a lone surrogate is refused when it is set: the application fails, a 500.

        It used to be taken, and the response head could then not be encoded: the response was marked as
        started before that, so nothing at all was sent and the sender waited for the relay's 504.
        """

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            response.status_description = "Fine \udcff"
            await response.finish(b"ok")

        head = self.serve(app)
        self.assertEqual(head["statusCode"], 500)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_cancelled_work_is_a_failure(self) -> None:
        """
        An application whose own awaited work was cancelled answers 500, with a logged failure.

        Nothing cancels the task that runs an application, so a L{CancelledError} out of it is the
        application's own. It was taken for the listener stopping: nothing was sent or logged, and the
        sender waited for the relay's C{request_timeout} (a minute), then got its 504.
        """

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            work: Deferred[None] = Deferred()
            work.cancel()
            await work

        head = self.serve(app)
        self.assertEqual(head["statusCode"], 500)
        self.assertTrue(head["payload"].startswith(b"The listener failed."), head["payload"])
        self.assertEqual(len(self.flushLoggedErrors(CancelledError)), 1)

    def test_closed_connection_of_its_own_is_a_failure(self) -> None:
        """
        A L{ConnectionClosedError} the application raises while its response can still go is a 500.

        It comes from a connection of the application's own (a hybrid connection it sends to, say): the
        exchange with the relay is intact. It was taken for that exchange being lost: nothing was sent,
        and the sender waited for the relay's 504.
        """

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            raise ConnectionClosedError("connection upstream-1 is closed")

        head = self.serve(app)
        self.assertEqual(head["statusCode"], 500)
        self.assertEqual(len(self.flushLoggedErrors(ConnectionClosedError)), 1)

    def test_lost_exchange_is_not_answered(self) -> None:
        """A L{ConnectionClosedError} from the response itself (the relay gave up): nothing more is sent."""
        listener = FakeListener()
        control = FakeControl()
        control.open = False  # the control channel closed before the answer could go
        listener.control_channel = control
        errors: list[BaseException] = []

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            try:
                await response.finish(b"late")
            except ConnectionClosedError as e:
                errors.append(e)
                raise

        HttpListener(listener, app, reactor=self.reactor)
        listener.request_handler(parse_command(request_message("GET", "/hyco/x")), None)
        self.reactor.advance(0)
        self.assertEqual(len(errors), 1)
        self.assertEqual(control.sent, [])
        self.assertEqual(self.flushLoggedErrors(), [])


class LostResourceResponseTests(SynchronousTestCase):
    """A twisted.web resource learns, as twisted.web tells it, that the relay gave up on its response."""

    def test_long_poll_hears_of_the_lost_exchange(self) -> None:
        """
        A resource waiting for an event (C{NOT_DONE_YET}, nothing written) whose rendezvous closes.

        Its C{notifyFinish()} fails, as it does when a twisted.web client disconnects, and the request
        no longer counts against C{max_concurrent}. The resource was never told: it kept waiting, and
        the request held one of the listener's slots for good.
        """
        gone: list[Failure] = []

        class LongPoll(Resource):
            isLeaf = True

            def render_GET(self, request: Request) -> int:
                request.notifyFinish().addErrback(gone.append)
                return NOT_DONE_YET

        reactor = MemoryReactorClock()
        http = HttpListener(FakeListener(), resource_app(LongPoll(), reactor=reactor), reactor=reactor)
        channel = _RequestChannel(http, FakeRendezvous())  # type: ignore[arg-type]
        send_request(channel, "GET", "/hyco/poll")
        reactor.advance(0)
        self.assertEqual((gone, http.active), ([], 1))
        channel.connection_closed(False, 1006, None)
        reactor.advance(0)
        self.assertEqual(len(gone), 1)
        self.assertEqual(http.active, 0)

    def test_exchange_lost_before_the_resource_runs(self) -> None:
        """A response lost while the body was spooled: the resource is not run, and nothing is logged."""
        rendered: list[Request] = []

        class Hello(Resource):
            isLeaf = True

            def render_GET(self, request: Request) -> bytes:
                rendered.append(request)
                return b"hi"

        reactor = MemoryReactorClock()
        response = RelayedResponse("r1", reactor=reactor, control=None)
        response.abort(ConnectionClosedError("the relay gave up"))
        app = resource_app(Hello(), reactor=reactor)
        self.successResultOf(Deferred.fromCoroutine(app(request_with({}), response)))  # type: ignore[arg-type]
        self.assertEqual(rendered, [])
        self.assertEqual(self.flushLoggedErrors(), [])
