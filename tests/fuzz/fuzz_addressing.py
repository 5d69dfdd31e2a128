"""Request targets (relay.hybrid.addressing): reserved sb-hc-* pairs taken out, the rest passed on as sent, tokens hidden in logs."""

from __future__ import annotations

from relay.hybrid.addressing import (
    SHOWN_NAMES,
    AddressError,
    hc_path,
    hide_reserved_values,
    reserved_name,
    split_target,
)


def check(data: bytes) -> None:
    raw = data.decode("latin-1")  # as the relay reads request.uri
    hidden = hide_reserved_values(data)
    path, question, query = hidden.partition(b"?")
    assert path == data.partition(b"?")[0]
    if question:
        for pair in query.split(b"&"):
            name = reserved_name(pair.decode("latin-1"), ("sb-hc-", "sb-wcf-"))
            assert name is None or name in SHOWN_NAMES or pair.endswith(b"=(hidden)"), (data, hidden)
    try:
        target = split_target(raw)
    except AddressError:
        pairs = raw.partition("?")[2].split("&")
        actions = [pair for pair in pairs if reserved_name(pair) == "sb-hc-action"]
        assert not raw.startswith("/") or "#" in raw or len(actions) >= 2
        return
    assert target.path == raw.partition("?")[0]
    assert all(name.startswith("sb-hc-") and name == name.lower() for name in target.relay_params)
    kept = [pair for pair in raw.partition("?")[2].split("&") if reserved_name(pair) is None]
    assert target.query == ("&".join(kept) if raw.partition("?")[2] else ""), (raw, target)
    again = split_target(target.target)
    assert again.relay_params == {} and again.target == target.target, (target, again)
    rest = hc_path(target.path)
    assert rest is None or rest.startswith("/")
