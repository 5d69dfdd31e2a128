"""
The one table that maps relay failures to HTTP status codes and WebSocket close codes.

Transports never write status or close-code literals; they raise or look up a L{RelayError} and let this
table decide, so that every path that refuses a client says the same thing for the same cause.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from relay.entropy import random16


class CloseCode(int, Enum):
    """WebSocket close codes the relay sends (RFC 6455 section 7.4)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011


class ErrorKind(Enum):
    """
    Every reason the relay refuses or ends a conversation, with its HTTP status and close code.

    @ivar status: the HTTP status of an upgrade or request refused for this reason.
    @ivar close_code: the WebSocket close code when this reason ends an open socket.
    """

    BAD_REQUEST = (400, CloseCode.PROTOCOL_ERROR)
    UNAUTHORIZED = (401, CloseCode.POLICY_VIOLATION)
    FORBIDDEN = (403, CloseCode.POLICY_VIOLATION)
    QUOTA_EXCEEDED = (403, CloseCode.POLICY_VIOLATION)
    RENDEZVOUS_UNKNOWN = (403, CloseCode.POLICY_VIOLATION)
    NOT_FOUND = (404, CloseCode.GOING_AWAY)
    NO_LISTENER = (404, CloseCode.GOING_AWAY)
    METHOD_NOT_ALLOWED = (405, CloseCode.PROTOCOL_ERROR)
    REJECT_DELIVERED = (410, CloseCode.NORMAL)
    PAYLOAD_TOO_LARGE = (413, CloseCode.MESSAGE_TOO_BIG)
    URI_TOO_LONG = (414, CloseCode.PROTOCOL_ERROR)
    HEADERS_TOO_LARGE = (431, CloseCode.POLICY_VIOLATION)
    INTERNAL = (500, CloseCode.INTERNAL_ERROR)
    BAD_GATEWAY = (502, CloseCode.GOING_AWAY)
    SERVICE_UNAVAILABLE = (503, CloseCode.GOING_AWAY)
    LISTENER_TIMEOUT = (504, CloseCode.GOING_AWAY)
    TOKEN_EXPIRED = (401, CloseCode.POLICY_VIOLATION)
    MALFORMED_CONTROL = (400, CloseCode.POLICY_VIOLATION)
    SHUTTING_DOWN = (503, CloseCode.GOING_AWAY)

    def __init__(self, status: int, close_code: CloseCode) -> None:
        self.status = status
        self.close_code = close_code


def new_tracking_id() -> str:
    """
    Make a tracking id the way Azure does: a GUID, which the .NET client also accepts as an activity id.

    A random (version 4) UUID from the kernel's CSPRNG (L{relay.entropy.random16}), as C{uuid.uuid4()}
    makes it, written without the C{UUID} object (every relayed request needs one).
    """
    h = random16().hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


_VARIANT = "89ab"  # RFC 9562 variant bits 10xx in the clock sequence's first digit


@dataclass(frozen=True, slots=True)
class RelayError(Exception):
    """
    A refusal with a cause the client can read.

    @ivar kind: which row of the table applies.
    @ivar message: a short, secret-free description of the cause.
    """

    kind: ErrorKind
    message: str

    @property
    def status(self) -> int:
        """The HTTP status code for this refusal."""
        return self.kind.status

    @property
    def close_code(self) -> int:
        """The WebSocket close code for this refusal."""
        return int(self.kind.close_code)

    def describe(self, tracking_id: str) -> str:
        """
        Render the text used as reason phrase, close reason and error body.

        Azure appends the tracking id to every error so that operators can find the log line; we do the same.
        """
        return f"{self.message}. TrackingId:{tracking_id}"

    def __str__(self) -> str:
        return f"{self.kind.name}: {self.message}"


def close_reason(text: str, limit: int = 123) -> str:
    """
    Clip a close reason to what fits in a close frame (125 bytes minus the 2-byte code), on a UTF-8 boundary.
    """
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")


def tracked_close_reason(reason: str, tracking_id: str, limit: int = 123) -> str:
    """
    C{reason} and the tracking id (C{"<reason>. TrackingId:<id>"}) in a close frame's room.

    A long reason is shortened before the tracking id rather than the tracking id cut short, since the id
    is what finds the gateway's log lines; only an id too long to leave a reason some room is clipped.
    """
    suffix = f". TrackingId:{tracking_id}"
    room = limit - len(suffix.encode("utf-8"))
    if room < 16:
        return close_reason(reason + suffix, limit)
    return close_reason(reason, room) + suffix
