"""
Stopping: refuse what arrives, wait for what is under way, then end the rest.

A stopping gateway answers every request it reads with 503 (L{refuse_requests}), on connections it had
accepted already and, while it drains, on new ones too. With C{drain_timeout} above 0 it waits
(L{wait_until_idle}) for its relayed pairs, HTTP requests and SOAP work to end before it tells listeners
to go away.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource, getChildForRequest
from typing_extensions import override

from relay.errors import ErrorKind, RelayError
from relay.hybrid.direct import DirectUpgrades
from relay.resource import ErrorResource
from relay.web import RelaySite

SHUTTING_DOWN = RelayError(ErrorKind.SHUTTING_DOWN, "Server shutting down")
"""What a stopping gateway answers new requests and waiting senders."""

POLL_INTERVAL = 0.1
"""Seconds between two looks at what is still under way while draining."""


class ShuttingDownResource(ErrorResource):
    """
    The answer to every request a stopping gateway reads: 503, and the connection is closed after it.

    Connections stay open while the gateway drains and closes: a keep-alive HTTP connection can send
    another request, a WebSocket upgrade included, and while it drains the ports still accept new ones.
    Such a request must not reach the routers: a listener would be admitted again, a sender told "no
    listener" (404, 502) instead of "shutting down" (503).

    The one exception is a listener's rendezvous upgrade (C{sb-hc-action=accept} or C{request}) while
    the gateway drains: it serves an HTTP request under way (its large answer, or fetching a large
    request), so it goes to L{passthrough}. It can only claim an address that is still pending; waiting
    WebSocket senders' addresses were withdrawn when the stop began.

    @ivar passthrough: the site's own resource, for rendezvous upgrades; C{None} refuses them too.
    """

    def __init__(self, passthrough: Resource | None = None) -> None:
        super().__init__(SHUTTING_DOWN)
        self.passthrough = passthrough

    @override
    def render(self, request: IRequest) -> bytes:
        """Refuse with 503 and say, and make sure, that the connection ends with this answer."""
        if self.passthrough is not None and _rendezvous_upgrade(request):
            return getChildForRequest(self.passthrough, request).render(request)  # type: ignore[no-any-return]
        request.setHeader(b"connection", b"close")
        channel = getattr(request, "channel", None)
        if channel is not None:
            channel.persistent = False
        return super().render(request)


def _rendezvous_upgrade(request: IRequest) -> bool:
    """Whether C{request} is a listener's upgrade to a rendezvous address (C{$hc}, accept or request)."""
    path = request.path  # type: ignore[attr-defined]
    if not path.startswith(b"/$hc/"):
        return False
    action = (request.args or {}).get(b"sb-hc-action", [b""])  # type: ignore[attr-defined]
    return action[:1] in ([b"accept"], [b"request"])


_SERVING = ("resource", "stream_policy", "unrouted", "head_taker", "lean_handler")
"""The site's attributes L{refuse_requests} replaces."""


class _NoHeads:
    """A head taker that takes nothing, so a stopping gateway's first requests reach twisted.web too."""

    target_prefix = DirectUpgrades.target_prefix

    def take_head(self, channel: Any, head: Any) -> bool:
        """Decline: L{ShuttingDownResource} answers."""
        return False


def refuse_requests(site: Any, *, rendezvous: bool = False) -> dict[str, Any]:
    """
    Make C{site} answer every request it reads from now on with 503 (L{ShuttingDownResource}).

    @param rendezvous: let listeners' rendezvous upgrades through to the site's resource (a drain).
    @return: what it served with, for L{restore_requests}.
    """
    gate = ShuttingDownResource(site.resource if rendezvous else None)
    serving = {name: getattr(site, name) for name in _SERVING if hasattr(site, name)}
    site.resource = gate
    if isinstance(site, RelaySite):
        site.stream_policy = None
        site.unrouted = lambda request: gate.error
        if site.head_taker is not None:
            site.head_taker = _NoHeads()
        site.lean_handler = None  # lean channels hand their next request to twisted.web
    return serving


def restore_requests(site: Any, serving: dict[str, Any] | None) -> None:
    """Serve with what L{refuse_requests} replaced (a stopped gateway started anew)."""
    for name, value in (serving or {}).items():
        setattr(site, name, value)


def wait_until_idle(clock: IReactorTime, in_flight: Any, timeout: float) -> Deferred[bool]:
    """
    Fire with C{True} once C{in_flight()} is 0, or with C{False} after C{timeout} seconds or when cancelled.

    It looks every L{POLL_INTERVAL} seconds: a drain happens once per process, so a look that costs a few
    set sizes is simpler than a notification from every place that ends a pair or a request.
    """
    deadline = clock.seconds() + timeout
    pending: list[IDelayedCall] = []

    def hurry(waiting: Deferred[bool]) -> None:  # cancelled: as if the timeout had passed
        for call in pending:
            call.cancel()
        pending.clear()
        waiting.callback(False)

    done: Deferred[bool] = Deferred(hurry)

    def look() -> None:
        pending.clear()
        if not in_flight():
            done.callback(True)
        elif clock.seconds() >= deadline:
            done.callback(False)
        else:
            pending.append(clock.callLater(min(POLL_INTERVAL, deadline - clock.seconds()), look))

    look()
    return done
