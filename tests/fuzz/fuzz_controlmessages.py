"""A listener's control message (relay.hybrid.messages, relay.hybrid.headers): only the documented errors, safe heads."""

from __future__ import annotations

import json
from typing import Any

from relay.httphead import connection_options
from relay.hybrid import headers as hdr
from relay.hybrid.messages import (
    ControlMessageError,
    decode_object,
    encode,
    parse_renew_token,
    parse_response,
)

_VIA = "1.1 relay.example.org"
_FORBIDDEN = ("\r", "\n", "\0")


def _round_trip(obj: dict[str, Any]) -> None:
    """What decodes encodes again, and decodes to the same."""
    text = json.dumps(obj, ensure_ascii=True)
    assert json.dumps(decode_object(text.encode()), ensure_ascii=True) == text
    try:
        encoded = encode(obj)
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape: the relay never re-encodes these
        return
    assert json.dumps(decode_object(encoded), ensure_ascii=True) == text


def _check_head(fields: Any) -> None:
    try:
        head = hdr.response_head(fields, via=_VIA)
    except hdr.HeaderError:
        return
    assert head.content_length is None or head.content_length >= 0
    for name, value in head.headers:
        assert hdr.is_token(name), name
        assert name.lower() not in ("content-length", "transfer-encoding", "connection"), name
        assert not any(c in value for c in _FORBIDDEN), value
        (f"{name}: {value}\r\n").encode()  # as RelayRequest.add_fields writes it
    assert head.headers[-1][0].lower() == "via" and head.headers[-1][1].endswith(_VIA)
    if isinstance(fields, dict) and all(type(v) is str for v in fields.values()):
        # the one-pass check for the usual answer agrees with the field-by-field one
        assert [(n, v) for _, n, v in hdr._checked_lines(fields)] == [
            (n, v.strip(" \t")) for n, v in fields.items()
        ]


def _check_forwarded(fields: dict[str, Any]) -> None:
    """The same object's string fields as a sender's request headers: what reaches the listener."""
    pairs = [(name, value) for name, value in fields.items() if isinstance(value, str)]
    connection = connection_options(v for n, v in pairs if n.lower() == "connection")
    out = hdr.forward_request_headers(
        pairs, strip_authorization=True, via="1.1 relay", client_address="10.0.0.1", scheme="https"
    )
    sent = {name for name, _ in pairs} | {"Via", "X-Forwarded-For", "X-Forwarded-Proto"}
    assert set(out) <= sent, (out, pairs)
    assert out["X-Forwarded-Proto"] == "https" and len({n.lower() for n in out}) == len(out)
    ours = {"via": "1.1 relay", "x-forwarded-for": "10.0.0.1", "x-forwarded-proto": "https"}
    for name, value in out.items():
        key = name.lower()
        if key in ours:  # the relay's own entry is added even when the sender's hop dropped the field
            assert value.endswith(ours[key]) and (key not in connection or value == ours[key]), (name, value)
            continue
        assert key not in connection and key not in (hdr.TOKEN_HEADER, hdr.AUTHORIZATION, hdr.TYPE_HINT), name
        assert key not in hdr.HOP_BY_HOP and key not in ("content-length", "expect"), name


def check(data: bytes) -> None:
    try:
        obj = decode_object(data)
    except ControlMessageError:
        return
    _round_trip(obj)
    for key, body in obj.items():
        try:
            if key == "renewToken":
                assert isinstance(parse_renew_token(body).token, str)
                continue
            if key != "response":
                continue
            response = parse_response(body)
        except ControlMessageError:
            continue
        assert 100 <= response.status_code <= 599 and response.request_id
        assert isinstance(response.body, bool)
        hdr.reason_phrase(response.status_code, response.status_description).encode("ascii")
        _check_head(response.response_headers)
        if isinstance(response.response_headers, dict):
            _check_forwarded(response.response_headers)
