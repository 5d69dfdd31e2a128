"""Connection strings (relay.connstr): only ConnectionStringError, a parsed one formats and parses back the same, errors never quote a key."""

from __future__ import annotations

from relay.connstr import ConnectionStringError, parse_connection_string


def _keys(text: str) -> list[str]:
    """The values of the C{SharedAccessKey} parts, as written (secrets an error must not show)."""
    keys = []
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq and name.strip().lower() in ("sharedaccesskey", "sharedaccesssignature"):
            keys.append(value.strip())
    return keys


def check(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        parsed = parse_connection_string(text)
    except ConnectionStringError as error:
        message = str(error)
        for key in _keys(text):
            if len(key) >= 8 and text.count(key) == 1:
                assert key not in message, (message, key)
        return
    assert parse_connection_string(parsed.format()) == parsed, parsed
    assert parsed.host and parsed.websocket_base.startswith(("ws://", "wss://"))
    assert parsed.http_base.startswith(("http://", "https://"))
