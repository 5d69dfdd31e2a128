"""End-to-end tests of the Python SDK's HTTP side: an app, a twisted.web resource and a WSGI app behind the relay."""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from relay.client import HybridConnectionListener
from relay.client.adapters import resource_app, wsgi_app
from relay.client.http import HttpApp, HttpListener
from relay.client.httprequest import RelayedRequest
from relay.client.httpresponse import RelayedResponse

from ..httpharness import RawHttpClient
from . import localapp
from .gateway import RunningGateway, start_gateway
from .senders import Bulk, Curl, Requests, Treq, dumps, sha
from .test_http_node import CONFIG

MB = 1024 * 1024


class PythonListenerTests(TestCase):
    """L{HttpListener} with apps and adapters, behind a real gateway, with real senders."""

    timeout = 120

    async def serve(self, app: HttpApp, path: str = "hyco") -> RunningGateway:
        gateway = await start_gateway(self, CONFIG)
        listener = HybridConnectionListener(gateway.connection_string, path, reactor=reactor)
        HttpListener(listener, app, reactor=reactor)
        await listener.open()
        self.addCleanup(listener.close)
        return gateway

    def auth(self, gateway: RunningGateway) -> dict[str, str]:
        return {"ServiceBusAuthorization": gateway.token("hyco")}

    async def test_native_app(self) -> None:
        """The app sees method, path below the name, query, headers and the streamed body; its answer returns."""
        seen: list[RelayedRequest] = []

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            seen.append(request)
            digest = hashlib.sha256()
            async for chunk in request.body:
                digest.update(chunk)
            response.status_code = 201
            response.headers["X-Digest"] = digest.hexdigest()
            response.headers.add("Set-Cookie", "a=1")
            response.headers.add("Set-Cookie", "b=2")
            await response.write(b"created")

        gateway = await self.serve(app)
        body = Bulk(5 * MB)
        outcome = await Requests(self).send(
            f"{gateway.http_url}/hyco/items/7?x=1", "POST", {**self.auth(gateway), "X-App": "v"}, body
        )
        self.assertEqual((outcome.status, outcome.head), (201, b"created"), dumps(outcome))
        self.assertEqual(outcome.header("x-digest"), body.sha256())
        self.assertEqual(outcome.header("set-cookie"), "a=1, b=2")
        (request,) = seen
        self.assertEqual((request.method, request.path, request.query), ("POST", "/items/7", "x=1"))
        self.assertEqual(request.target, "/hyco/items/7?x=1")
        self.assertEqual(request.headers["x-app"], "v")

    async def test_large_and_small_responses(self) -> None:
        """Up to 64 kB a complete response uses the control channel; larger ones stream over a rendezvous."""

        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            size = int(request.path.strip("/"))
            for chunk in Bulk(size).chunks(16384):
                await response.write(chunk)

        gateway = await self.serve(app)
        for size in (0, 65536, 65537, 30 * MB):
            outcome = await Treq(self).send(f"{gateway.http_url}/hyco/{size}", headers=self.auth(gateway))
            self.assertEqual((outcome.status, outcome.length), (200, size), dumps(outcome))
            self.assertEqual(outcome.sha256, Bulk(size).sha256())

    async def test_app_failure(self) -> None:
        """An app that raises before answering gives the sender a 500 naming the tracking id."""

        def app(request: RelayedRequest, response: RelayedResponse) -> None:
            raise ValueError("boom")

        gateway = await self.serve(app)
        outcome = await Curl(self).send(f"{gateway.http_url}/hyco/x", headers=self.auth(gateway))
        self.assertEqual(outcome.status, 500)
        self.assertIn(b"TrackingId:", outcome.head)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    async def test_twisted_web_resource(self) -> None:
        """A twisted.web resource: methods, bodies, a producer-driven 50 MB download, a failure."""
        gateway = await self.serve(resource_app(localapp.local_app(), reactor=reactor))
        auth = self.auth(gateway)
        for method in ("GET", "POST", "PUT", "DELETE", "HEAD"):
            body = method.encode() if method in ("POST", "PUT") else None
            outcome = await Treq(self).send(f"{gateway.http_url}/hyco/echo/a?b=c", method, auth, body)
            self.assertEqual((outcome.status, outcome.sha256), (200, sha(body)), dumps(outcome))
            self.assertEqual(outcome.header("x-seen-uri"), "/echo/a?b=c")
            self.assertEqual(outcome.header("x-seen-method"), method)
        upload = Bulk(20 * MB)
        outcome = await Curl(self).send(f"{gateway.http_url}/hyco/sink", "POST", auth, upload)
        self.assertEqual(outcome.head.decode(), f"{upload.length} {upload.sha256()}")
        outcome = await Requests(self).send(f"{gateway.http_url}/hyco/bulk/{50 * MB}", headers=auth)
        self.assertEqual((outcome.length, outcome.sha256), (50 * MB, Bulk(50 * MB).sha256()))
        self.assertEqual(outcome.header("content-length"), str(50 * MB))
        failed = await Treq(self).send(f"{gateway.http_url}/hyco/fail", headers=auth)
        self.assertEqual(failed.status, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_wsgi_app(self) -> None:
        """A WSGI app in threads: streamed upload and download, scheme, 404, failure, 20 requests at once."""
        gateway = await self.serve(wsgi_app(localapp.wsgi_app, reactor=reactor))
        auth = self.auth(gateway)
        outcome = await Requests(self).send(f"{gateway.http_url}/hyco/echo?q=1", "PUT", auth, b"wsgi body")
        self.assertEqual((outcome.status, outcome.head), (200, b"wsgi body"), dumps(outcome))
        self.assertEqual(
            (outcome.header("x-seen-uri"), outcome.header("x-seen-scheme")), ("/echo?q=1", "http")
        )
        upload = Bulk(20 * MB)
        outcome = await Treq(self).send(f"{gateway.http_url}/hyco/sink", "POST", auth, upload)
        self.assertEqual(outcome.head.decode(), f"{upload.length} {upload.sha256()}")
        outcome = await Curl(self).send(f"{gateway.http_url}/hyco/bulk/{30 * MB}", headers=auth)
        self.assertEqual((outcome.length, outcome.sha256), (30 * MB, Bulk(30 * MB).sha256()))
        self.assertEqual((await Curl(self).send(f"{gateway.http_url}/hyco/none", headers=auth)).status, 404)
        self.assertEqual((await Curl(self).send(f"{gateway.http_url}/hyco/fail", headers=auth)).status, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        sender = Treq(self)
        outcomes: list[Any] = await gatherResults(
            [
                Deferred.fromCoroutine(sender.send(f"{gateway.http_url}/hyco/echo", "POST", auth, b"%d" % i))
                for i in range(20)
            ]
        )
        self.assertEqual([o.head for o in outcomes], [b"%d" % i for i in range(20)])

    async def test_wsgi_app_told_the_length_of_a_streamed_body(self) -> None:
        """
        A streamed body is spooled so that C{CONTENT_LENGTH} is set: an app reading that many gets it all.

        Django reads only C{CONTENT_LENGTH} bytes. The relay does not pass C{Content-Length} on, and such
        a body used to reach the application without C{CONTENT_LENGTH}: Django read it as empty.
        """
        gateway = await self.serve(wsgi_app(localapp.wsgi_app, reactor=reactor, spool_size=MB))
        auth = self.auth(gateway)
        for upload in (Bulk(100), Bulk(200 * 1024), Bulk(5 * MB)):
            outcome = await Requests(self).send(f"{gateway.http_url}/hyco/sized", "POST", auth, upload)
            self.assertEqual(outcome.head.decode(), f"{upload.length} {upload.sha256()}", dumps(outcome))

    async def test_wsgi_app_streaming_input(self) -> None:
        """
        With C{stream_input}, a large body arrives as it comes, without C{CONTENT_LENGTH}.

        Read whole (C{read()}) or in pieces, all of it arrives.
        """
        gateway = await self.serve(wsgi_app(localapp.wsgi_app, reactor=reactor, stream_input=True))
        auth = self.auth(gateway)
        upload = Bulk(5 * MB)
        outcome = await Requests(self).send(f"{gateway.http_url}/hyco/sized", "POST", auth, upload)
        self.assertEqual(outcome.head.decode(), f"- {sha(b'')}", dumps(outcome))
        outcome = await Treq(self).send(f"{gateway.http_url}/hyco/echo", "POST", auth, upload)
        self.assertEqual((outcome.length, outcome.sha256), (upload.length, upload.sha256()), dumps(outcome))
        outcome = await Curl(self).send(f"{gateway.http_url}/hyco/sink", "POST", auth, upload)
        self.assertEqual(outcome.head.decode(), f"{upload.length} {upload.sha256()}", dumps(outcome))


class LeanChannelTests(TestCase):
    """One real keep-alive connection: plain GETs on the lean channel, then twisted.web's from a POST on."""

    timeout = 60

    async def test_one_connection(self) -> None:
        async def app(request: RelayedRequest, response: RelayedResponse) -> None:
            body = await request.body.read_all()
            await response.write(f"{request.method} {request.path} {len(body)}".encode())

        gateway = await start_gateway(self, CONFIG)
        listener = HybridConnectionListener(gateway.connection_string, "hyco", reactor=reactor)
        HttpListener(listener, app, reactor=reactor)
        await listener.open()
        self.addCleanup(listener.close)
        client = RawHttpClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, gateway.host, gateway.port), client)
        self.addCleanup(client.transport.loseConnection)  # type: ignore[union-attr]
        auth = {"ServiceBusAuthorization": gateway.token("hyco")}

        async def replies(count: int) -> list[Any]:
            for _ in range(500):
                if len(client.replies) >= count and client.replies[count - 1].complete:
                    return client.replies
                await deferLater(reactor, 0.01)
            self.fail(f"{count} replies did not come: {client.data[-300:]!r}")

        client.request("GET", "/hyco/a", auth, host=gateway.netloc)
        await replies(1)
        client.request("GET", "/hyco/b", auth, host=gateway.netloc)
        await replies(2)
        client.request("POST", "/hyco/c", auth, b"12345", host=gateway.netloc)
        await replies(3)
        client.request("GET", "/hyco/d", auth, host=gateway.netloc)
        done = await replies(4)
        self.assertEqual(
            [(r.status, r.body) for r in done],
            [(200, b"GET /a 0"), (200, b"GET /b 0"), (200, b"POST /c 5"), (200, b"GET /d 0")],
        )
        self.assertIsNone(client.lost)
