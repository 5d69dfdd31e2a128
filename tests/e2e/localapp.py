"""
A small local web application for end-to-end tests of C{relay expose} and the Python HTTP adapters.

As a twisted.web resource (served on a loopback port, or through L{relay.client.adapters.resource_app}):

  - C{/echo...}: answers with the method, the body, and what it saw in C{X-Seen-*} headers;
  - C{/sink}: hashes the body, answers C{<length> <sha256>};
  - C{/bulk/N}: streams N bytes of the bulk payload with a push producer that honours pauses;
  - C{/never}: never answers;
  - C{/fail}: raises;
  - C{/ws}: a WebSocket echo (text stays text, binary stays binary), choosing the first offered subprotocol.

And the same routes, minus C{/ws} and C{/never}, as a WSGI application (L{wsgi_app}), which also has
C{/sized}: reads C{CONTENT_LENGTH} bytes as Django does (none without it), answers C{<CONTENT_LENGTH> <sha256>}.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import cooperate
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from .nodeharness import bulk_chunks


class Echo(Resource):
    """Echo the body; report method, path and forwarding headers in C{X-Seen-*} headers."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        body = request.content.read()
        request.setHeader(b"content-type", request.getHeader(b"content-type") or b"application/octet-stream")
        request.setHeader(b"x-seen-method", request.method)
        request.setHeader(b"x-seen-uri", request.uri)
        request.setHeader(b"x-seen-host", request.getHeader(b"host") or b"")
        for name in (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"via", b"authorization"):
            request.setHeader(b"x-seen-" + name, request.getHeader(name) or b"-")
        return body  # type: ignore[no-any-return]


class Sink(Resource):
    """Hash the body, a piece at a time."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        digest = hashlib.sha256()
        length = 0
        while chunk := request.content.read(1024 * 1024):
            digest.update(chunk)
            length += len(chunk)
        request.setHeader(b"content-type", b"text/plain")
        return f"{length} {digest.hexdigest()}".encode()


@implementer(IPushProducer)
class BulkProducer:
    """Writes the bulk payload, a chunk per cooperator step, while not paused."""

    def __init__(self, request: Any, length: int) -> None:
        self.request = request
        self.paused = False
        self.chunks = bulk_chunks(length)
        self.task = cooperate(self._steps())
        self.task.whenDone().addCallbacks(self._done, lambda _: None)

    def _steps(self) -> Iterator[None]:
        for chunk in self.chunks:
            self.request.write(chunk)
            yield None

    def _done(self, _: object) -> None:
        self.request.unregisterProducer()
        self.request.finish()

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self.task.pause()

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self.task.resume()

    def stopProducing(self) -> None:
        self.task.stop()


class Bulk(Resource):
    """C{/bulk/N}: N bytes of the bulk payload, with Content-Length; C{on_start} is called for each."""

    isLeaf = True

    def __init__(self, on_start: Callable[[], object] | None = None) -> None:
        super().__init__()
        self.on_start = on_start

    def render(self, request: Any) -> int:
        if self.on_start is not None:
            self.on_start()
        length = int(request.postpath[0])
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", b"%d" % length)
        request.registerProducer(BulkProducer(request, length), True)
        return NOT_DONE_YET


class Never(Resource):
    """Never answers."""

    isLeaf = True

    def render(self, request: Any) -> int:
        return NOT_DONE_YET


class Fail(Resource):
    """Raises."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        raise RuntimeError("the local application failed on purpose")


class WebSocketEcho(WebSocketServerProtocol):
    """Echo every message with its type."""

    def onConnect(self, request: Any) -> str | None:
        return request.protocols[0] if request.protocols else None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


def local_app(on_bulk: Callable[[], object] | None = None) -> Resource:
    """The resource tree described above; C{on_bulk} is called whenever a C{/bulk} download starts."""
    root = Resource()
    root.putChild(b"echo", Echo())
    root.putChild(b"sink", Sink())
    root.putChild(b"bulk", Bulk(on_bulk))
    root.putChild(b"never", Never())
    root.putChild(b"fail", Fail())
    factory = WebSocketServerFactory()
    factory.protocol = WebSocketEcho
    root.putChild(b"ws", WebSocketResource(factory))
    return root


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The same routes as a WSGI application."""
    path = environ["PATH_INFO"]
    if path.startswith("/echo"):
        body = environ["wsgi.input"].read()
        start_response(
            "200 OK",
            [
                ("Content-Type", environ.get("CONTENT_TYPE") or "application/octet-stream"),
                ("X-Seen-Method", environ["REQUEST_METHOD"]),
                ("X-Seen-Uri", path + ("?" + environ["QUERY_STRING"] if environ["QUERY_STRING"] else "")),
                ("X-Seen-Scheme", environ["wsgi.url_scheme"]),
            ],
        )
        return [body]
    if path == "/sink":
        digest = hashlib.sha256()
        length = 0
        stream = environ["wsgi.input"]
        while chunk := stream.read(65536):
            digest.update(chunk)
            length += len(chunk)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{length} {digest.hexdigest()}".encode()]
    if path == "/sized":  # as Django reads: CONTENT_LENGTH bytes, none without it
        declared = environ.get("CONTENT_LENGTH") or "-"
        stream = environ["wsgi.input"]
        digest = hashlib.sha256()
        remaining = int(declared) if declared.isdigit() else 0
        while remaining and (chunk := stream.read(min(remaining, 65536))):
            digest.update(chunk)
            remaining -= len(chunk)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{declared} {digest.hexdigest()}".encode()]
    if path.startswith("/bulk/"):
        length = int(path.rsplit("/", 1)[1])
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(length))]
        )
        return bulk_chunks(length)
    if path == "/fail":
        raise RuntimeError("the WSGI application failed on purpose")
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no such page\n"]
