"""
Control-channel messages: single JSON objects in WebSocket text messages.

The relay sends C{accept} and C{request}; listeners send C{renewToken} and C{response}. Every outgoing
message is one JSON object (the Node listeners C{JSON.parse} everything they receive). Incoming messages
with unknown top-level keys are reported, not refused, because later protocol versions may add some.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class ControlMessageError(ValueError):
    """A message from a listener is not valid JSON or has the wrong shape."""


@dataclass(frozen=True, slots=True)
class RemoteEndpoint:
    """The sender's address and port as the relay saw them."""

    address: str
    port: int

    def to_json(self) -> dict[str, Any]:
        """The C{remoteEndpoint} object."""
        return {"address": self.address, "port": self.port}


@dataclass(frozen=True, slots=True)
class Accept:
    """
    Tell a listener that a WebSocket sender waits at a one-time address.

    @ivar address: where the listener upgrades to accept (or reject) the sender.
    @ivar id: the connection id (the sender's C{sb-hc-id} when it gave one).
    @ivar connect_headers: the sender's upgrade headers, one string per name.
    @ivar remote_endpoint: the sender's address.
    """

    address: str
    id: str
    connect_headers: Mapping[str, str]
    remote_endpoint: RemoteEndpoint

    def encode(self) -> bytes:
        """The UTF-8 JSON text of the message."""
        return encode(
            {
                "accept": {
                    "address": self.address,
                    "id": self.id,
                    "connectHeaders": dict(self.connect_headers),
                    "remoteEndpoint": self.remote_endpoint.to_json(),
                }
            }
        )


@dataclass(frozen=True, slots=True)
class RenewToken:
    """A listener replaces the token of its control channel."""

    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A JSON object whose top-level keys the relay does not know; logged and ignored."""

    keys: tuple[str, ...]


def encode(obj: Mapping[str, Any]) -> bytes:
    """Serialise a control message compactly as UTF-8."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_object(payload: bytes) -> dict[str, Any]:
    """
    Decode one control-message text payload into a JSON object.

    @raise ControlMessageError: when it is not UTF-8 JSON or not an object.
    """
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ControlMessageError(f"not a JSON text: {e}") from None
    if not isinstance(obj, dict):
        raise ControlMessageError("a control message must be a JSON object")
    return obj


def parse_renew_token(body: Any) -> RenewToken:
    """
    Read the body of a C{renewToken} message.

    @raise ControlMessageError: when C{token} is missing or not a string.
    """
    if not isinstance(body, dict) or not isinstance(body.get("token"), str):
        raise ControlMessageError("renewToken must carry a string 'token'")
    return RenewToken(token=body["token"])
