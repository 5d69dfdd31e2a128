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

Only the public relay protocol is spoken, so the same code works against Azure Relay.
"""

from relay.client.accepting import Accept, AcceptContext, AcceptHandler, Reject
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
    "ConnectError",
    "ConnectionClosedError",
    "ControlChannelLost",
    "EndpointNotFoundError",
    "Headers",
    "HybridConnectionAddress",
    "HybridConnectionClient",
    "HybridConnectionError",
    "HybridConnectionListener",
    "HybridWebSocket",
    "ITokenProvider",
    "ListenerState",
    "Message",
    "Reject",
    "RequestCommand",
    "RequestHandler",
    "SharedAccessKeyTokenProvider",
    "SharedAccessSignatureTokenProvider",
    "WebSocketOptions",
    "parse_address",
    "token_provider_from_connection_string",
]
