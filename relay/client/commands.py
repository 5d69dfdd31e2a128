"""
Control-channel commands as the listener reads and writes them.

The server-side codec (L{relay.hybrid.messages}) is strict about what the gateway emits; a client must
instead be lenient about what any relay sends, because it also talks to Azure: missing optional fields
(C{remoteEndpoint}, C{connectHeaders}) are tolerated and unknown commands are reported, not fatal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from relay.hybrid.messages import ControlMessageError, RemoteEndpoint, decode_object, encode


@dataclass(frozen=True, slots=True)
class AcceptCommand:
    """
    A WebSocket sender waits; upgrade to C{address} to accept it (or reject it there).

    @ivar address: the one-time rendezvous URL; a credential, so it is kept out of the repr.
    @ivar id: the connection id (the tracking id shared with the sender).
    @ivar connect_headers: the sender's upgrade headers.
    @ivar remote_endpoint: the sender's address as the relay saw it, when the relay says.
    """

    address: str = field(repr=False)
    id: str
    connect_headers: Mapping[str, str]
    remote_endpoint: RemoteEndpoint | None


@dataclass(frozen=True, slots=True)
class RequestCommand:
    """
    An HTTP request relayed to the listener.

    The small form carries the request in full, the rendezvous-only form just C{address} and C{id}.

    @ivar address: the rendezvous URL for this request; kept out of the repr.
    @ivar id: the request id, echoed as C{requestId} in the response.
    @ivar has_body: C{True} when one binary message with the body follows on the same channel.
    @ivar fields: the whole C{request} object, for the HTTP layer to interpret.
    """

    address: str = field(repr=False)
    id: str
    has_body: bool
    fields: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class UnknownCommand:
    """A JSON object with no command the client knows; logged and ignored."""

    keys: tuple[str, ...]


Command = AcceptCommand | RequestCommand | UnknownCommand


def remote_endpoint(value: Any) -> RemoteEndpoint | None:
    """A C{remoteEndpoint} object as the relay sent it; a port that is not a number is 0, no address is C{None}."""
    if not isinstance(value, dict):
        return None
    address, port = value.get("address"), value.get("port")
    if not isinstance(address, str):
        return None
    try:
        return RemoteEndpoint(address=address, port=int(port if port is not None else 0))
    except (TypeError, ValueError, OverflowError):  # OverflowError: JSON's Infinity, or 1e400
        return RemoteEndpoint(address=address, port=0)


def _string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items()}


def parse_command(payload: bytes) -> Command:
    """
    Read one control-channel text message.

    @raise ControlMessageError: when it is not a JSON object, or a known command lacks C{address} or
        C{id}.
    """
    obj = decode_object(payload)
    if "accept" in obj:
        body = obj["accept"]
        if not isinstance(body, dict) or not isinstance(body.get("address"), str):
            raise ControlMessageError("accept lacks a string 'address'")
        return AcceptCommand(
            address=body["address"],
            id=str(body.get("id") or ""),
            connect_headers=_string_map(body.get("connectHeaders")),
            remote_endpoint=remote_endpoint(body.get("remoteEndpoint")),
        )
    if "request" in obj:
        body = obj["request"]
        if not isinstance(body, dict) or not isinstance(body.get("address"), str):
            raise ControlMessageError("request lacks a string 'address'")
        return RequestCommand(
            address=body["address"],
            id=str(body.get("id") or ""),
            has_body=body.get("body") is True,
            fields=body,
        )
    return UnknownCommand(keys=tuple(sorted(obj)))


def renew_token_message(token: str) -> bytes:
    """The C{renewToken} message text."""
    return encode({"renewToken": {"token": token}})
