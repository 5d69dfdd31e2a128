"""
The root web resource: one C{Site} for WebSocket upgrades and plain HTTP, dispatched by path.

Reserved first segments (C{$hc}, C{$wcf}) go to the resource their layer registered; any other path is
resolved to a namespace (by C{Host}) and an entity (longest name match) and handed to the resource factory
registered for that entity's kind. Layers register here; this module imports none of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import unquote

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from typing_extensions import override

from relay.entities import EntityMatch, Namespace
from relay.errors import ErrorKind, RelayError, new_tracking_id
from relay.httphead import RequestHead, host_name
from relay.logger import Logger
from relay.store import IGatewayStore

if TYPE_CHECKING:
    from relay.leanchannel import LeanRequest

_NOT_IN_REASON = re.compile(r"[\x00-\x1f\x7f]+")
"""Control characters, which a reason phrase must not hold (RFC 9112 section 4: CR or LF would end it)."""

EntityResourceFactory = Callable[[IRequest, Namespace, EntityMatch], IResource]
NamespaceResourceFactory = Callable[[IRequest, Namespace, str], IResource | None]


def request_host(request: IRequest) -> str:
    """
    The C{Host} header's host name, lower-cased, without port (IPv6 brackets removed): L{host_name}.

    Kept on the request once read: routing, admission and both C{Via} entries of a relayed request ask.
    """
    known: str | None = getattr(request, "relay_host", None)
    if known is not None:
        return known
    host = host_name((request.getHeader(b"host") or b"").decode("latin-1"))
    request.relay_host = host  # type: ignore[attr-defined]
    return host


def _first_segment(path: str) -> str:
    """A path's first segment as prefixes are registered: percent-decoded, lower-cased."""
    return unquote(path.lstrip("/").split("/", 1)[0]).lower()


class LeanRoute(NamedTuple):
    """Where L{GatewayRoot.lean_route} sends a plain head: the entity's resource factory and its arguments."""

    factory: EntityResourceFactory
    namespace: Namespace
    match: EntityMatch
    host: str


def tracking_id_of(request: IRequest) -> str:
    """The tracking id of a request, made on first use and kept on the request."""
    tracking_id: str | None = getattr(request, "relay_tracking_id", None)
    if tracking_id is None:
        tracking_id = new_tracking_id()
        request.relay_tracking_id = tracking_id  # type: ignore[attr-defined]
    return tracking_id


class ErrorResource(Resource):
    """
    A plain-text error answer whose body names the cause and the tracking id.

    Used for every refusal the relay itself produces on plain HTTP, so callers can tell relay errors
    (no C{Via} header) from the listener's.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, error: RelayError) -> None:
        super().__init__()
        self.error = error

    @override
    def render(self, request: IRequest) -> bytes:
        """Write status, reason and a short text body."""
        tracking_id = tracking_id_of(request)
        text = self.error.describe(tracking_id)
        self.log.info(
            "refused {method} {path}: {kind} {reason}",
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1")[:200],
            kind=self.error.kind.name,
            reason=self.error.message,
            tracking_id=tracking_id,
        )
        # The message may quote a listener's words (a close reason): in the status line, without line breaks.
        phrase = _NOT_IN_REASON.sub(" ", text).encode("latin-1", errors="replace")[:200]
        request.setResponseCode(self.error.status, phrase)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        body = (text + "\n").encode("utf-8")
        if request.method == b"HEAD":
            request.setHeader(b"content-length", str(len(body)).encode())
            return b""
        return body


class GatewayRoot(Resource):
    """
    Dispatch every request to the layer that owns its path.

    @ivar store: where namespaces and entities are looked up.
    """

    isLeaf = True

    def __init__(self, store: IGatewayStore) -> None:
        super().__init__()
        self.store = store
        self._prefixes: dict[str, IResource] = {}
        self._kinds: dict[str, EntityResourceFactory] = {}
        self._streaming_kinds: set[str] = set()
        self._namespace_root: NamespaceResourceFactory | None = None
        self._lean_kinds: set[str] = set()

    def register_prefix(self, segment: str, resource: IResource) -> None:
        """Route paths whose first segment is C{segment} (such as C{$hc}) to C{resource}."""
        self._prefixes[segment.lower()] = resource

    def register_kind(self, kind: str, factory: EntityResourceFactory, *, streams_body: bool = False) -> None:
        """
        Route requests on entities of C{kind} to the resource C{factory} returns.

        @param streams_body: the resource reads large request bodies as a stream (see L{relay.web}); it is
            then rendered as soon as the headers are in.
        """
        self._kinds[kind] = factory
        if streams_body:
            self._streaming_kinds.add(kind)

    def streams_body(self, request: IRequest) -> bool:
        """Whether the resource for C{request} reads its body as a stream (the site's stream policy)."""
        if not self._streaming_kinds:
            return False
        found = self._entity_at(request.path.decode("latin-1"), request_host(request))
        return found is not None and found[1].entity.kind in self._streaming_kinds

    def register_namespace_root(self, factory: NamespaceResourceFactory) -> None:
        """Serve paths that name no entity (such as the service registry at C{/}) with C{factory}."""
        self._namespace_root = factory

    def unrouted(self, request: IRequest) -> RelayError | None:
        """The refusal L{route} gives a request nothing serves (unknown host or name), else C{None}."""
        resource = self.route(request)
        return resource.error if isinstance(resource, ErrorResource) else None

    def lean_route(self, head: RequestHead) -> LeanRoute | None:
        """
        The entity resource a plain head would get from L{route}, when its kind may use the lean channel.

        C{None} for anything else (a reserved prefix, an unknown host or name, the namespace root, a kind
        not offered lean): twisted.web then routes the request as usual, refusals included.
        """
        if not self._lean_kinds:
            return None
        host = host_name(
            next((values[0] for name, values in head.headers if name == b"host"), b"").decode("latin-1")
        )
        found = self._entity_at(head.target.partition(b"?")[0].decode("latin-1"), host)
        if found is None or found[1].entity.kind not in self._lean_kinds:
            return None
        namespace, match = found
        return LeanRoute(self._kinds[match.entity.kind], namespace, match, host)

    def _entity_at(self, path: str, host: str) -> tuple[Namespace, EntityMatch] | None:
        """The namespace and entity C{path} names under C{host}; C{None} for a reserved prefix or no entity."""
        if _first_segment(path) in self._prefixes:
            return None
        namespace = self.store.namespace_for_host(host)
        if namespace is None:
            return None
        match = self.store.match(namespace, path)
        return None if match is None else (namespace, match)

    def offer_lean(self, kind: str) -> None:
        """Let plain C{GET}s on entities of C{kind} take the lean channel (L{relay.leanchannel})."""
        if kind in self._kinds:
            self._lean_kinds.add(kind)

    def answer(self, request: LeanRequest, route: LeanRoute) -> None:
        """Render a lean request's entity resource, as twisted.web's C{process} would (the lean handler)."""
        request.relay_host = route.host  # type: ignore[attr-defined]
        request.render(route.factory(request, route.namespace, route.match))

    def route(self, request: IRequest) -> IResource:
        """Find the resource for a request."""
        path = request.path.decode("latin-1")
        prefixed = self._prefixes.get(_first_segment(path))
        if prefixed is not None:
            return prefixed
        namespace = self.store.namespace_for_host(request_host(request))
        if namespace is None:
            return ErrorResource(
                RelayError(ErrorKind.NOT_FOUND, "No namespace is served under this host name")
            )
        match = self.store.match(namespace, path)
        if match is not None:
            factory = self._kinds.get(match.entity.kind)
            if factory is not None:
                return factory(request, namespace, match)
            return ErrorResource(
                RelayError(ErrorKind.NOT_FOUND, f"Entity {match.entity.name!r} is not served over plain HTTP")
            )
        if self._namespace_root is not None:
            resource = self._namespace_root(request, namespace, path)
            if resource is not None:
                return resource
        return ErrorResource(RelayError(ErrorKind.NOT_FOUND, "No entity with this name"))

    @override
    def render(self, request: IRequest) -> bytes | int:
        """Hand the request to the resource that owns it."""
        return self.route(request).render(request)  # type: ignore[no-any-return]
