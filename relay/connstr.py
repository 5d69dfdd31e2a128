"""
Connection strings in Azure's format: C{Endpoint=sb://HOST/;SharedAccessKeyName=...;SharedAccessKey=...}.

C{UseDevelopmentEmulator=true} (the convention of Azure's Service Bus emulator) says the endpoint speaks
plain C{ws://}/C{http://} instead of TLS; our development gateway prints it when it serves without TLS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_KNOWN = {
    "endpoint": "Endpoint",
    "entitypath": "EntityPath",
    "sharedaccesskeyname": "SharedAccessKeyName",
    "sharedaccesskey": "SharedAccessKey",
    "sharedaccesssignature": "SharedAccessSignature",
    "usedevelopmentemulator": "UseDevelopmentEmulator",
    "operationtimeout": "OperationTimeout",
}


_SHOWN_NAME = 30
"""The longest key an error quotes; a key with more letters, or with other characters, is not quoted."""


class ConnectionStringError(ValueError):
    """A connection string is malformed or incomplete."""


@dataclass(frozen=True, slots=True)
class ConnectionString:
    """
    A parsed connection string.

    @ivar endpoint: the C{Endpoint} URI as written (C{sb://host[:port]/}).
    @ivar key_name: C{SharedAccessKeyName}, if given.
    @ivar key: C{SharedAccessKey}; never shown in reprs.
    @ivar signature: a ready-made C{SharedAccessSignature} token instead of a key.
    @ivar entity_path: C{EntityPath}, the hybrid connection name, if given.
    @ivar plain: C{UseDevelopmentEmulator=true}: use C{ws://} and C{http://}.
    """

    endpoint: str
    key_name: str | None = None
    key: str | None = field(default=None, repr=False)
    signature: str | None = field(default=None, repr=False)
    entity_path: str | None = None
    plain: bool = False

    @property
    def host(self) -> str:
        """The endpoint's host name, without port."""
        return urlsplit(self.endpoint).hostname or ""

    @property
    def netloc(self) -> str:
        """The endpoint's host and port as written."""
        return urlsplit(self.endpoint).netloc

    @property
    def websocket_base(self) -> str:
        """The C{wss://} (or, for the emulator, C{ws://}) base URL."""
        return f"{'ws' if self.plain else 'wss'}://{self.netloc}"

    @property
    def http_base(self) -> str:
        """The C{https://} (or C{http://}) base URL."""
        return f"{'http' if self.plain else 'https'}://{self.netloc}"

    def format(self) -> str:
        """Render in the canonical key order."""
        parts = [f"Endpoint={self.endpoint}"]
        if self.key_name is not None:
            parts.append(f"SharedAccessKeyName={self.key_name}")
        if self.key is not None:
            parts.append(f"SharedAccessKey={self.key}")
        if self.signature is not None:
            parts.append(f"SharedAccessSignature={self.signature}")
        if self.entity_path is not None:
            parts.append(f"EntityPath={self.entity_path}")
        if self.plain:
            parts.append("UseDevelopmentEmulator=true")
        return ";".join(parts)


def _part(position: int, name: str, *, whole: bool = False) -> str:
    """
    How an error names a malformed part: its position, and its key if that is one word of letters.

    A part with a mistyped C{=} (C{SharedAccessKey:q8bX...}) holds the key's value: of such a part only
    the known key it starts with is shown.

    @param whole: C{name} is the whole part (it has no C{=}): it may be a key pasted alone, so it is
        shown only when it is a known key's name.
    """
    name = name.strip()
    shown = name.lower() in _KNOWN if whole else name.isascii() and name.isalpha()
    if shown and len(name) <= _SHOWN_NAME:
        return f"{position} ({name!r})"
    known = [canonical for key, canonical in _KNOWN.items() if name.lower().startswith(key)]
    return f"{position} ({max(known, key=len) + '...'!r})" if known else str(position)


def _shown_endpoint(endpoint: str) -> str:
    """The C{Endpoint} value as an error quotes it: up to a space, C{,} or C{=} (where a mistyped C{;} was)."""
    head = re.split(r"[\s,=]", endpoint, maxsplit=1)[0]
    return repr(head) + ("..." if head != endpoint else "")


def parse_connection_string(text: str) -> ConnectionString:
    """
    Parse C{Key=Value;...} pairs (keys case-insensitive, unknown keys rejected).

    @raise ConnectionStringError: when a pair is malformed, a key is unknown or the endpoint is missing;
        the message never quotes a key.
    """
    values: dict[str, str] = {}
    for position, part in enumerate(text.strip().split(";"), 1):
        if not part.strip():
            continue
        name, eq, value = part.partition("=")
        if not eq:
            raise ConnectionStringError(
                f"connection string part {_part(position, name, whole=True)} has no '='"
            )
        canonical = _KNOWN.get(name.strip().lower())
        if canonical is None:
            raise ConnectionStringError(f"connection string part {_part(position, name)} has an unknown key")
        values[canonical] = value.strip()
    endpoint = values.get("Endpoint")
    if not endpoint:
        raise ConnectionStringError("connection string has no Endpoint")
    try:
        parts = urlsplit(endpoint)
    except ValueError:  # an unclosed IPv6 bracket: "sb://[::1/"
        parts = None
    if parts is None or not parts.scheme or not parts.hostname:
        raise ConnectionStringError(
            f"Endpoint {_shown_endpoint(endpoint)} is not an absolute URI such as sb://host/"
        )
    has_key = "SharedAccessKeyName" in values and "SharedAccessKey" in values
    if not has_key and "SharedAccessSignature" not in values:
        raise ConnectionStringError("connection string needs SharedAccessKeyName and SharedAccessKey")
    return ConnectionString(
        endpoint=endpoint,
        key_name=values.get("SharedAccessKeyName"),
        key=values.get("SharedAccessKey"),
        signature=values.get("SharedAccessSignature"),
        entity_path=values.get("EntityPath"),
        plain=values.get("UseDevelopmentEmulator", "").lower() == "true",
    )
