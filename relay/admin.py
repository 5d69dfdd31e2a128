"""
The admin endpoint: C{GET /metrics} (Prometheus text format), C{/healthz} and C{/readyz}, on a Site of its own.

It is served only when asked for (C{--admin ENDPOINT} or C{admin} in the file), on an endpoint separate
from the relay's, so that scraping needs no relay token and the relay's ports expose nothing operational.
Bind it to loopback or a management network: it needs no credentials and names every entity.

Its pages take no request body, so the Site buffers none: a body above L{MAX_BODY} bytes is answered 413
before it is read (twisted.web would otherwise spool any body, of any size, to a temporary file before the
405), and request heads are bounded as on the relay's own ports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Site
from typing_extensions import override

from relay.metrics import CONTENT_TYPE, Registry
from relay.web import RelaySite

_ALLOWED = b"GET, HEAD"

MAX_BODY = 4096
"""The largest request body the admin Site reads (and drops); larger ones get 413 unread."""

IDLE_TIMEOUT = 60.0
"""Seconds an admin connection may stay silent (twisted.web's default)."""


class _Page(Resource):
    """One read-only document; anything but GET and HEAD is 405."""

    isLeaf = True

    def __init__(self, content_type: str) -> None:
        super().__init__()
        self._content_type = content_type.encode("ascii")

    def body(self) -> bytes:
        """The document."""
        raise NotImplementedError

    @override
    def render(self, request: IRequest) -> bytes:
        """Answer GET and HEAD; refuse other methods with 405 and C{Allow}."""
        request.setHeader(b"cache-control", b"no-store")
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", _ALLOWED)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"method not allowed\n"
        request.setHeader(b"content-type", self._content_type)
        body = self.body()
        request.setHeader(b"content-length", b"%d" % len(body))
        return b"" if request.method == b"HEAD" else body


class MetricsPage(_Page):
    """C{/metrics}: the registry rendered at each scrape."""

    def __init__(self, registry: Registry) -> None:
        super().__init__(CONTENT_TYPE)
        self.registry = registry

    @override
    def body(self) -> bytes:
        """The registry in the text exposition format."""
        return self.registry.exposition()


class HealthPage(_Page):
    """C{/healthz}: the process answers, so its reactor turns."""

    def __init__(self) -> None:
        super().__init__("text/plain; charset=utf-8")

    @override
    def body(self) -> bytes:
        """Always C{ok}."""
        return b"ok\n"


class ReadyPage(_Page):
    """C{/readyz}: 200 while the gateway takes new work, 503 once it stops (drains), for load balancers."""

    def __init__(self, ready: Callable[[], bool]) -> None:
        super().__init__("text/plain; charset=utf-8")
        self._ready = ready

    @override
    def render(self, request: IRequest) -> bytes:
        """503 while stopping, so that a balancer sends new clients elsewhere."""
        if not self._ready():
            request.setResponseCode(503)
        return super().render(request)

    @override
    def body(self) -> bytes:
        """C{ready}, or C{stopping}."""
        return b"ready\n" if self._ready() else b"stopping\n"


class NotFound(Resource):
    """Every other path: 404."""

    isLeaf = True

    @override
    def render(self, request: IRequest) -> bytes:
        """Say there is nothing here."""
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"not found; try /metrics, /healthz or /readyz\n"


class AdminRoot(Resource):
    """Dispatches C{/metrics}, C{/healthz} and C{/readyz}; everything else is 404."""

    def __init__(self, registry: Registry, ready: Callable[[], bool] = lambda: True) -> None:
        super().__init__()
        self._pages: dict[bytes, Resource] = {
            b"metrics": MetricsPage(registry),
            b"healthz": HealthPage(),
            b"readyz": ReadyPage(ready),
        }
        self._missing = NotFound()

    @override
    def getChild(self, path: bytes, request: IRequest) -> Resource:
        """The page named by the first segment, if it is the whole path."""
        page = self._pages.get(path)
        if page is None or request.postpath:  # type: ignore[attr-defined]
            return self._missing
        return page

    @override
    def render(self, request: IRequest) -> bytes:
        """C{/} itself is not a page."""
        return self._missing.render(request)


def admin_site(registry: Registry, reactor: Any = None, ready: Callable[[], bool] = lambda: True) -> Site:
    """
    The admin endpoint's Site (no access log: scrapes every few seconds would drown the relay's).

    A L{RelaySite}, for its limits: bodies above L{MAX_BODY} are refused unread (413, chunked ones as soon
    as they pass it), oversized heads get 414 or 431, and it says C{Server: relay} like the relay's site.
    """
    site = RelaySite(
        AdminRoot(registry, ready), reactor=reactor, timeout=IDLE_TIMEOUT, max_buffered_body=MAX_BODY
    )
    site.log = lambda request: None  # type: ignore[method-assign]
    return site
