"""The listener's reading of relay-sent addresses (split_accept_address, split_request_target): no exception, no sb-hc- pair kept, round trips of connect_url."""

from __future__ import annotations

from relay.client.address import (
    HybridConnectionAddress,
    encode_query,
    normalize_suffix,
    split_accept_address,
    split_request_target,
)
from relay.hybrid.addressing import is_reserved

_PATHS = ("hyco", "team/app", "a%20b", "Hyco")


def _answer(suffix: str, query: str) -> None:
    assert suffix == "" or suffix.startswith("/"), suffix
    assert "?" not in suffix and "#" not in suffix, suffix
    assert not any(is_reserved(pair) for pair in query.split("&")), query


def check(data: bytes) -> None:
    path = _PATHS[data[0] % len(_PATHS)] if data else "hyco"
    text = data[1:].decode("utf-8", "replace")
    # What a relay may send: any accept address, any requestTarget. A ValueError here would reach no
    # one who handles it (the sender would wait for the relay's timeout).
    _answer(*split_accept_address(text, path))
    _answer(*split_request_target(text, path))
    # What our own connect_url writes must come back from the accept address the relay builds from it.
    suffix_text, _, query_text = text.partition("\x00")
    try:
        suffix = normalize_suffix(suffix_text)
        query = encode_query(query_text)
    except ValueError:
        return  # refused to the caller ('?' or '#' in a suffix, a reserved parameter)
    if "#" in query or any(not "!" <= c <= "~" for c in query):
        return  # raw query text is the application's to get right: a fragment or a tab would be lost
    address = HybridConnectionAddress("wss", "ns.example", path)
    url = address.connect_url("id", suffix_text, query_text)
    accept = url.replace("sb-hc-action=connect", "sb-hc-action=accept")
    got = split_accept_address(accept, path)
    assert got == (suffix, query), (url, got, (suffix, query))
