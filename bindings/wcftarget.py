"""
The target of a C{$wcf} WebSocket upgrade: C{/$wcf/{path}?sb-wcf-action=listen|send&sb-wcf-token=...}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

WCF_SEGMENT: Final = "$wcf"
PARAM_PREFIX: Final = "sb-wcf-"
_MAX_REASON: Final = 200


class TargetError(ValueError):
    """A C{$wcf} URL is malformed (400)."""


@dataclass(frozen=True, slots=True)
class WcfTarget:
    """
    A C{$wcf} request target.

    @ivar path: the name (decoded, without C{$wcf}).
    @ivar action: C{sb-wcf-action}.
    @ivar token: C{sb-wcf-token}, if given.
    @ivar client_id: C{sb-wcf-id}, the client's tracking id, if given.
    """

    path: str
    action: str | None
    token: str | None
    client_id: str | None


def parse_target(uri: str) -> WcfTarget:
    """
    Split a C{/$wcf/{path}?sb-wcf-...} request target.

    @raise TargetError: when the path is not under C{$wcf} or a parameter is given twice.
    """
    parts = urlsplit(uri)
    segments = parts.path.split("/", 2)
    if len(segments) < 2 or unquote(segments[1]).lower() != WCF_SEGMENT:
        raise TargetError("the path must start with /$wcf/")
    params: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        key = name.lower()
        if key.startswith(PARAM_PREFIX):
            if key in params:
                raise TargetError(f"{key} is given more than once")
            params[key] = value
    return WcfTarget(
        path=unquote(segments[2]) if len(segments) > 2 else "",
        action=params.get("sb-wcf-action"),
        token=params.get("sb-wcf-token") or None,
        client_id=params.get("sb-wcf-id") or None,
    )


def safe_reason(text: str) -> str:
    """C{text} as printable ASCII of at most 200 characters (a close or refusal reason)."""
    return "".join(c if 32 <= ord(c) < 127 else " " for c in text)[:_MAX_REASON]
