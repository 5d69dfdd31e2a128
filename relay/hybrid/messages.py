"""
Control-channel messages: single JSON objects in WebSocket text messages.

The relay sends C{accept} and C{request}; listeners send C{renewToken} and C{response}. Every outgoing
message is one JSON object (the Node listeners C{JSON.parse} everything they receive). Incoming messages
with unknown top-level keys are reported, not refused, because later protocol versions may add some.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_ANNOUNCEMENT = 64 * 1024
"""
The largest control-channel text message the relay sends (bytes): the .NET listener reads each into a
64 kB buffer it never grows, and one larger stalls its control channel for good.
"""


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


# json.dumps builds a new encoder on every call made with options; these are built once.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _compact_text_encoder() -> Callable[[Any], str]:
    """
    C{_ENCODER.encode}, with the C encoder made once instead of on every call.

    C{JSONEncoder.encode} makes a C encoder and a dict for spotting circular references on every call,
    a quarter of the time of encoding a relayed request's message. Control messages are built by the
    relay from strings, numbers and dicts of them, never circular; without the C encoder (another
    Python), C{_ENCODER.encode} serves.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _ENCODER.encode
    chunks = make(None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)

    def text(obj: Any) -> str:
        return "".join(chunks(obj, 0))

    return text


_compact_text = _compact_text_encoder()


def encode(obj: Mapping[str, Any]) -> bytes:
    """
    Serialise a control message compactly as UTF-8.

    Text that UTF-8 cannot hold (a lone surrogate, which a peer's JSON may carry in an id the answer
    echoes) is written as JSON escapes, which read back as the same string.
    """
    text = _compact_text(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _ASCII_ENCODER.encode(obj).encode("ascii")


def decode_object(payload: bytes) -> dict[str, Any]:
    """
    Decode one control-message text payload into a JSON object.

    @raise ControlMessageError: when it is not UTF-8 JSON or not an object.
    """
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # RecursionError: "[[[[..." nested deep
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


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """
    An HTTP request for a listener, in full: on the control channel (small requests) or on a rendezvous.

    C{method} and an explicit C{body} are always present: the Node listener tells the full form from the
    rendezvous-only form by C{method}, the .NET listener by C{body}.

    @ivar address: the rendezvous address of this request (where a large response may be sent).
    @ivar id: the request id, echoed as C{requestId}.
    @ivar request_target: path and query as forwarded (reserved parameters removed).
    @ivar method: the request method.
    @ivar remote_endpoint: the sender's address.
    @ivar request_headers: the forwarded headers.
    @ivar body: whether one binary message with the body follows.
    """

    address: str
    id: str
    request_target: str
    method: str
    remote_endpoint: RemoteEndpoint
    request_headers: Mapping[str, str]
    body: bool

    def encode(self) -> bytes:
        """The UTF-8 JSON text of the message."""
        return encode(
            {
                "request": {
                    "address": self.address,
                    "id": self.id,
                    "requestTarget": self.request_target,
                    "method": self.method,
                    "remoteEndpoint": self.remote_endpoint.to_json(),
                    "requestHeaders": dict(self.request_headers),
                    "body": self.body,
                }
            }
        )


@dataclass(frozen=True, slots=True)
class RendezvousRequest:
    """Ask a listener to open a rendezvous at C{address} and receive the request there (only two keys)."""

    address: str
    id: str

    def encode(self) -> bytes:
        """The UTF-8 JSON text of the message."""
        return encode({"request": {"address": self.address, "id": self.id}})


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """
    A listener's answer to one request.

    @ivar request_id: the C{id} of the request it answers.
    @ivar status_code: the status (C{statusCode} may come as a number or a numeric string).
    @ivar status_description: the reason phrase, when the listener gave one.
    @ivar response_headers: the raw C{responseHeaders} object (checked by L{relay.hybrid.headers}).
    @ivar body: whether one binary message with the body follows.
    """

    request_id: str
    status_code: int
    status_description: str | None
    response_headers: Any
    body: bool


def parse_response(body: Any) -> HttpResponse:
    """
    Read the body of a C{response} message.

    @raise ControlMessageError: when C{requestId} is missing, C{statusCode} is not a number from 100 to
        599, or C{body} is not a boolean.
    """
    if not isinstance(body, dict):
        raise ControlMessageError("response must be a JSON object")
    request_id = body.get("requestId")
    if not isinstance(request_id, str) or not request_id:
        raise ControlMessageError("response lacks a string 'requestId'")
    raw_status = body.get("statusCode")
    status: int | None = None
    if isinstance(raw_status, int) and not isinstance(raw_status, bool):
        status = raw_status
    elif (
        isinstance(raw_status, str)
        and raw_status.isascii()
        and raw_status.strip().isdigit()
        and len(raw_status) < 6
    ):
        status = int(raw_status)
    if status is None or not 100 <= status <= 599:
        raise ControlMessageError(
            f"response {request_id[:64]} has an invalid statusCode {str(raw_status)[:20]!r}"
        )
    description = body.get("statusDescription")
    has_body = body.get("body", False)
    if not isinstance(has_body, bool):
        raise ControlMessageError(f"response {request_id[:64]} has a non-boolean 'body'")
    return HttpResponse(
        request_id=request_id,
        status_code=status,
        status_description=description if isinstance(description, str) else None,
        response_headers=body.get("responseHeaders"),
        body=has_body,
    )
