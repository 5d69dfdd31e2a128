"""
The service registry over plain HTTP (spec 13): the Atom feed of the names at a namespace root or below a prefix.

L{RegistryFeed} lists the public names without a token, and the private ones too for a Manage token.
Whether a prefix has names below it is looked up in the name table's index, and a rendered feed is kept
until the registry changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from typing_extensions import override

from bindings.faultcodes import RelayFault, RelayFaultError
from bindings.httpsoap import header_value, is_sas, token_header
from bindings.names import prefix_segments
from bindings.registry import ATOM_MEDIA_TYPE, RegistryEntry, build_feed
from relay.auth import Rights, split_tokens
from relay.entities import Namespace
from relay.errors import ErrorKind, RelayError
from relay.logger import Logger
from relay.resource import ErrorResource, request_host

if TYPE_CHECKING:
    from bindings.gateway import BindingsGateway

_FEED_CACHE_SIZE: Final = 64
"""Rendered registry feeds kept (per namespace, prefix and Manage reader) until the registry changes."""


class RegistryResourceFactory:
    """The L{relay.resource.GatewayRoot} namespace-root factory: the Atom registry for GET and HEAD."""

    def __init__(self, gateway: BindingsGateway) -> None:
        self.gateway = gateway
        self.feeds: dict[tuple[str, str, bool, str], tuple[int, bytes]] = {}

    def __call__(self, request: IRequest, namespace: Namespace, path: str) -> IResource | None:
        """The feed at C{/}, or at a prefix below which binding names exist; C{None} otherwise."""
        if request.method not in (b"GET", b"HEAD"):
            return None
        prefix = "/".join(prefix_segments(path))
        if not prefix:
            return RegistryFeed(self.gateway, namespace, prefix, feeds=self.feeds)
        count, public = self.gateway.names.names_below(namespace, prefix)
        if not count:
            return None
        # A prefix with only private names below it is a feed for Manage readers and, for anyone else,
        # the same 404 as a prefix with nothing below it: its existence is not public either.
        return RegistryFeed(self.gateway, namespace, prefix, hidden=not public, feeds=self.feeds)


class RegistryFeed(Resource):
    """
    The service registry (spec 13): public names without a token, private ones too with a Manage token.
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        gateway: BindingsGateway,
        namespace: Namespace,
        prefix: str,
        *,
        hidden: bool = False,
        feeds: dict[tuple[str, str, bool, str], tuple[int, bytes]] | None = None,
    ) -> None:
        """
        The feed of the names below C{prefix} (lower case, as names are matched).

        @param feeds: rendered feeds by namespace, prefix, Manage reader and public URL, with the registry
            version they were rendered at (shared by the feeds of one gateway).
        """
        super().__init__()
        self.gateway = gateway
        self.namespace = namespace
        self.prefix = prefix
        self.hidden = hidden  # only private names below the prefix
        self.feeds = feeds if feeds is not None else {}

    @override
    def render(self, request: IRequest) -> bytes:
        """Write the feed; a presented token must be a valid Manage token (no silent downgrade)."""
        names = self.gateway.names
        authorization = header_value(request, b"authorization")
        token = token_header(request) or (authorization if is_sas(authorization) else None)
        manage = False
        if token:
            try:
                names.authorize(
                    self.namespace, self.prefix, (), request_host(request), split_tokens(token), Rights.MANAGE
                )
            except RelayFaultError as e:
                kind = ErrorKind.FORBIDDEN if e.kind is RelayFault.FORBIDDEN else ErrorKind.UNAUTHORIZED
                return ErrorResource(RelayError(kind, e.message)).render(request)
            manage = True
        if self.hidden and not manage:
            return ErrorResource(RelayError(ErrorKind.NOT_FOUND, "No entity with this name")).render(request)
        feed = self._feed(manage)
        request.setHeader(b"content-type", f"{ATOM_MEDIA_TYPE}; charset=utf-8".encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        if request.method == b"HEAD":
            request.setHeader(b"content-length", str(len(feed)).encode("ascii"))
            return b""
        return feed

    def _feed(self, manage: bool) -> bytes:
        """The feed document, rendered again only when the registry changed since it last was."""
        names = self.gateway.names
        version, changed = names.registry_version(self.namespace)
        base = names.public_url(self.namespace, self.prefix).rstrip("/") + "/"
        key = (self.namespace.name, self.prefix, manage, base)
        cached = self.feeds.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        entries = [
            RegistryEntry(url=item.url, display_name=item.display_name, updated=item.updated, kind=item.kind)
            for item in names.listings(self.namespace, self.prefix)
            if item.public or manage
        ]
        feed = build_feed(
            entries, feed_url=base, title=f"{self.namespace.name}/{self.prefix}".rstrip("/"), updated=changed
        )
        if key not in self.feeds and len(self.feeds) >= _FEED_CACHE_SIZE:
            self.feeds.clear()
        self.feeds[key] = (version, feed)
        return feed
