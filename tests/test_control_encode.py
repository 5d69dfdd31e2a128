"""L{relay.hybrid.messages.encode} writes what C{json.dumps} would, compactly, as UTF-8."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.hybrid import messages

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
_messages = st.dictionaries(st.text(), _values, max_size=5)


def _expected(obj: Any) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


@given(_messages)
def test_same_bytes_as_json_dumps(obj: dict[str, Any]) -> None:
    assert messages.encode(obj) == _expected(obj)


def test_a_relayed_requests_message() -> None:
    obj = {
        "request": {
            "address": "sb://127.0.0.1/web?sb-hc-action=request&sb-hc-id=1",
            "id": "e3b0c442-98fc-4c14-9afb-f4c8996fb924",
            "requestTarget": "/web/héllo?x=1",
            "method": "GET",
            "remoteEndpoint": {"address": "127.0.0.1", "port": 40000},
            "requestHeaders": {"Host": "127.0.0.1:8080", "Via": "1.1 127.0.0.1:8080"},
            "body": False,
        }
    }
    assert messages.encode(obj) == _expected(obj)
    assert json.loads(messages.encode(obj)) == obj


def test_lone_surrogates_are_escaped() -> None:
    obj = {"id": "lone \ud800 surrogate"}
    assert messages.encode(obj) == b'{"id":"lone \\ud800 surrogate"}'


def test_non_finite_numbers_as_json_dumps_writes_them() -> None:
    assert messages.encode({"x": math.inf, "y": -math.inf}) == b'{"x":Infinity,"y":-Infinity}'


def test_without_the_c_encoder_the_python_one_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    text = messages._compact_text_encoder()
    assert text == messages._ENCODER.encode
    assert text({"a": [1, "é"]}) == '{"a":[1,"é"]}'


def test_values_json_cannot_write_are_refused_as_before() -> None:
    with pytest.raises(TypeError):
        messages.encode({"x": object()})
