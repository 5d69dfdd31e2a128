"""
L{HybridConnectionClient}: open WebSocket connections to a hybrid connection's listeners.

Modelled on .NET's C{HybridConnectionClient}. Every connection gets a tracking id (C{sb-hc-id}),
generated unless the caller brings one, so the sender, the relay and the listener log the same id.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, cast

from twisted.internet.defer import Deferred

from relay.client.address import Query, parse_address
from relay.client.connection import HybridWebSocket
from relay.client.errors import ConnectError
from relay.client.options import WebSocketOptions
from relay.client.protocol import RelayClientProtocol, open_websocket
from relay.client.tokens import ITokenProvider, fetch_token, token_provider_from_connection_string
from relay.hybrid.headers import forwardable_value, is_token
from relay.logger import Logger

# Headers the WebSocket handshake owns; letting callers set them would produce duplicates.
HANDSHAKE_HEADERS = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "servicebusauthorization",
    }
)


def _check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    checked = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not is_token(name):
            raise ValueError(f"header name {name!r:.60} is not an HTTP token (RFC 9110)")
        if name.lower() in HANDSHAKE_HEADERS:
            raise ValueError(f"header {name!r} is set by the client itself")
        # A lone surrogate cannot be encoded: the handshake would never be sent.
        if not isinstance(value, str) or not forwardable_value(value):
            raise ValueError(
                f"header {name!r} needs a string value without control characters (the tab aside) "
                "or lone surrogates"
            )
        checked[name] = value
    return checked


def _check_subprotocols(subprotocols: Sequence[str]) -> list[str]:
    for subprotocol in subprotocols:
        if not isinstance(subprotocol, str) or not is_token(subprotocol):
            raise ValueError(f"subprotocol {subprotocol!r:.60} is not an HTTP token (RFC 6455)")
    return list(subprotocols)


class HybridConnectionClient:
    """
    A sender for one hybrid connection.

    @ivar address: the hybrid connection.
    @ivar token_provider: where tokens come from; C{None} connects anonymously (for hybrid connections
        that do not require client authorization).
    """

    log = Logger()

    def __init__(
        self,
        endpoint_or_connection_string: str,
        path: str | None = None,
        token_provider: ITokenProvider | None = None,
        *,
        reactor: Any = None,
        options: WebSocketOptions | None = None,
        token_ttl: float = 3600.0,
    ) -> None:
        """
        Configure the sender; nothing is dialled before L{connect}.

        @param endpoint_or_connection_string: a connection string or endpoint URI (see
            L{relay.client.address.parse_address}).
        @param path: the hybrid connection, unless the first argument names it.
        @param token_provider: overrides the connection string's credentials; with neither, the client
            is anonymous.
        @param reactor: the reactor (the global one by default).
        @param token_ttl: the token lifetime requested from the provider, in seconds.
        """
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.address, cs = parse_address(endpoint_or_connection_string, path)
        if token_provider is None and cs is not None:
            token_provider = token_provider_from_connection_string(cs)
        self.token_provider = token_provider
        self._reactor = reactor
        self._options = options or WebSocketOptions()
        self._token_ttl = token_ttl

    def __repr__(self) -> str:
        return f"<HybridConnectionClient {self.address.base}/{self.address.path}>"

    def connect(
        self,
        suffix: str = "",
        query: Query | None = None,
        headers: Mapping[str, str] | None = None,
        subprotocols: Sequence[str] = (),
        connection_id: str | None = None,
    ) -> Deferred[HybridWebSocket]:
        """
        Connect to a listener.

        @param suffix: a path below the hybrid connection, shown to the listener (C{"/chat"}).
        @param query: application query parameters, shown to the listener; C{sb-hc-*} names are refused.
        @param headers: extra upgrade headers, forwarded to the listener in C{connectHeaders}; a
            C{User-Agent} replaces the client's own (L{WebSocketOptions.user_agent}).
        @param subprotocols: subprotocols to offer, in order of preference.
        @param connection_id: the tracking id to use; a new GUID by default.
        @return: a L{Deferred} firing with the open connection, or failing with L{ConnectError} carrying
            the status: 404 (no listener online, or no such hybrid connection), 401/403 (token), 504
            (no listener accepted in time), or whatever status a listener rejected the sender with.
            Cancelling it abandons the attempt.
        @raise ValueError: for reserved query parameters or headers the handshake owns, header names
            that are not HTTP tokens, values with a control character (the tab aside) or a lone
            surrogate, and subprotocols that are not tokens.
        """
        connection_id = connection_id or str(uuid.uuid4())
        url = self.address.connect_url(connection_id, suffix, query)
        extra = _check_headers(headers or {})
        offered = _check_subprotocols(subprotocols)
        return Deferred.fromCoroutine(self._connect(url, connection_id, extra, offered))

    async def _connect(
        self, url: str, connection_id: str, headers: dict[str, str], subprotocols: list[str]
    ) -> HybridWebSocket:
        if self.token_provider is not None:
            headers["ServiceBusAuthorization"] = await fetch_token(
                self.token_provider,
                self.address.audience,
                self._token_ttl,
                clock=self._reactor,
                timeout=self._options.open_timeout,  # a provider that never answers fails the connect
            )
        self.log.info("connecting {connection_id} to {url}", connection_id=connection_id, url=url)

        def make_connection(protocol: RelayClientProtocol) -> HybridWebSocket:
            return HybridWebSocket(protocol, tracking_id=connection_id, options=self._options)

        try:
            connection = await open_websocket(
                self._reactor,
                url,
                options=self._options,
                make_receiver=make_connection,
                headers=headers,
                subprotocols=subprotocols,
            )
        except ConnectError as e:
            self.log.info(
                "connection {connection_id} refused: {error}", connection_id=connection_id, error=str(e)
            )
            raise
        self.log.info("connected {connection_id}", connection_id=connection_id)
        return cast(HybridWebSocket, connection)
