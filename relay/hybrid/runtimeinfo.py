"""
A hybrid connection's runtime information, as the .NET client's C{GetRuntimeInformationAsync} reads it.

C{HybridConnectionListener.GetRuntimeInformationAsync} and C{HybridConnectionClient.GetRuntimeInformationAsync}
(NuGet C{Microsoft.Azure.Relay}) send C{GET https://HOST/NAME?api-version=2016-07} with the header
C{X-PROCESS-AT: ServiceBus} and their token in C{Authorization}, and read an Atom entry whose content is a
C{HybridConnectionDescription} (members in their data contract's order). Such a request is answered by the
gateway, never relayed to a listener.
"""

from __future__ import annotations

import time
from typing import Any
from xml.sax.saxutils import escape

from relay.entities import EntityMatch

CONTENT_TYPE = b"application/atom+xml;type=entry;charset=utf-8"
_ATOM_NS = "http://www.w3.org/2005/Atom"
_CONNECT_NS = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"


def is_runtime_info_request(request: Any, match: EntityMatch) -> bool:
    """
    Whether a request is the .NET client's runtime information query.

    A C{GET} of the hybrid connection's own name (no suffix) with an C{api-version} query parameter and
    C{X-PROCESS-AT: ServiceBus}: all three, so an application's own requests are still relayed.
    """
    if request.method != b"GET" or match.suffix not in ("", "/"):
        return False
    if (request.getHeader(b"x-process-at") or b"").strip().lower() != b"servicebus":
        return False
    query = request.uri.partition(b"?")[2]
    return any(pair.partition(b"=")[0].lower() == b"api-version" for pair in query.split(b"&"))


def runtime_info_entry(
    address: str, name: str, *, requires_authorization: bool, listeners: int, now: float
) -> bytes:
    """
    The Atom entry describing a hybrid connection.

    @param address: the entity's C{https://} URL (the entry's id).
    @param now: the Unix time of the answer (the entry's C{updated}).
    """
    updated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<entry xmlns="{_ATOM_NS}">'
        f"<id>{escape(address)}</id>"
        f'<title type="text">{escape(name)}</title>'
        f"<updated>{updated}</updated>"
        '<content type="application/xml">'
        f'<HybridConnectionDescription xmlns="{_CONNECT_NS}" '
        'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
        f"<RequiresClientAuthorization>{'true' if requires_authorization else 'false'}"
        "</RequiresClientAuthorization>"
        f"<ListenerCount>{listeners}</ListenerCount>"
        "</HybridConnectionDescription>"
        "</content>"
        "</entry>"
    ).encode()
