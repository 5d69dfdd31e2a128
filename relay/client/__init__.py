"""
A Python client for Hybrid Connections, compatible with Azure Relay and with this project's gateway.

Built on Twisted and Autobahn; every operation returns a L{Deferred}, so it can be awaited in
C{async def} code driven by C{Deferred.fromCoroutine} (or C{task.react}) or used with callbacks::

    async def serve(reactor):
        listener = HybridConnectionListener(connection_string, "hyco", reactor=reactor)
        await listener.open()
        while (connection := await listener.accept_connection()) is not None:
            async for message in connection:
                await connection.send(message)

    async def talk(reactor):
        client = HybridConnectionClient(connection_string, "hyco", reactor=reactor)
        connection = await client.connect(suffix="/chat", subprotocols=["chat"])
        await connection.send("hello")
        reply = await connection.receive()
        await connection.close()

HTTP requests relayed to a listener are served by an application (see L{relay.client.http}), or by an
existing twisted.web resource or WSGI app (L{resource_app}, L{wsgi_app})::

    HttpListener(listener, wsgi_app(flask_app))

Only the public relay protocol is spoken, so the same code works against Azure Relay.
"""

from relay.client.accepting import Accept, AcceptContext, AcceptHandler, Reject
from relay.client.adapters import resource_app, wsgi_app
from relay.client.address import HybridConnectionAddress, parse_address
from relay.client.backoff import Backoff
from relay.client.commands import RequestCommand
from relay.client.connection import HybridWebSocket, Message
from relay.client.errors import (
    AuthorizationError,
    ConnectError,
    ConnectionClosedError,
    ControlChannelLost,
    EndpointNotFoundError,
    HybridConnectionError,
)
from relay.client.headers import Headers
from relay.client.http import HttpApp, HttpListener
from relay.client.httprequest import BodyTooLarge, RelayedRequest, RequestBody
from relay.client.httpresponse import RelayedResponse, ResponseHeaders
from relay.client.listener import HybridConnectionListener, ListenerState, RequestHandler
from relay.client.options import WebSocketOptions
from relay.client.sender import HybridConnectionClient
from relay.client.tokens import (
    ITokenProvider,
    SharedAccessKeyTokenProvider,
    SharedAccessSignatureTokenProvider,
    token_provider_from_connection_string,
)

__all__ = [
    "Accept",
    "AcceptContext",
    "AcceptHandler",
    "AuthorizationError",
    "Backoff",
    "BodyTooLarge",
    "ConnectError",
    "ConnectionClosedError",
    "ControlChannelLost",
    "EndpointNotFoundError",
    "Headers",
    "HttpApp",
    "HttpListener",
    "HybridConnectionAddress",
    "HybridConnectionClient",
    "HybridConnectionError",
    "HybridConnectionListener",
    "HybridWebSocket",
    "ITokenProvider",
    "ListenerState",
    "Message",
    "Reject",
    "RelayedRequest",
    "RelayedResponse",
    "RequestBody",
    "RequestCommand",
    "RequestHandler",
    "ResponseHeaders",
    "SharedAccessKeyTokenProvider",
    "SharedAccessSignatureTokenProvider",
    "WebSocketOptions",
    "parse_address",
    "resource_app",
    "token_provider_from_connection_string",
    "wsgi_app",
]
