"""
Exceptions raised by the hybrid connection client.

A failed WebSocket upgrade carries the HTTP status and reason phrase the relay (or, for a rejected
sender, the listener) answered with, so callers can tell "no listener" (404) from "bad token" (401) or
"listener said no" (whatever status it chose) without parsing text.
"""

from __future__ import annotations


class HybridConnectionError(Exception):
    """Base class of every error raised by L{relay.client}."""


class ConnectError(HybridConnectionError):
    """
    A WebSocket upgrade (listen, connect, accept) did not succeed.

    @ivar status_code: the HTTP status of the refused upgrade, or C{None} when the connection failed
        before a status arrived (dropped, timed out, bad handshake).
    @ivar reason: the reason phrase or a description of the failure; Azure puts a tracking id in it.
    """

    def __init__(self, status_code: int | None, reason: str) -> None:
        super().__init__(status_code, reason)
        self.status_code = status_code
        self.reason = reason

    def __str__(self) -> str:
        if self.status_code is None:
            return self.reason
        return f"{self.status_code} {self.reason}".rstrip()

    @classmethod
    def from_status(cls, status_code: int | None, reason: str) -> ConnectError:
        """
        Build the most specific subclass for a status, so callers can catch what they care about.

        @return: an L{EndpointNotFoundError} for 404, an L{AuthorizationError} for 401 and 403, a plain
            L{ConnectError} otherwise.
        """
        if status_code == 404:
            return EndpointNotFoundError(status_code, reason)
        if status_code in (401, 403):
            return AuthorizationError(status_code, reason)
        return ConnectError(status_code, reason)


class EndpointNotFoundError(ConnectError):
    """
    404: the hybrid connection does not exist or, for a sender, no listener is online.

    A listener that gets this stops reconnecting, as the .NET client does: retrying cannot help until
    someone creates the entity.
    """


class AuthorizationError(ConnectError):
    """401 or 403: the token is missing, invalid, expired, or lacks the right for this entity."""


class ConnectionClosedError(HybridConnectionError):
    """The WebSocket connection is closed (or closing), so nothing more can be sent on it."""


class ControlChannelLost(HybridConnectionError):
    """
    The listener's control channel closed while the listener was online.

    @ivar code: the WebSocket close code (1006 when the connection dropped without a close frame).
    @ivar reason: the close reason text, which from Azure carries a tracking id.
    """

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"control channel closed ({self.code}): {self.reason or ''}".rstrip(": ")
