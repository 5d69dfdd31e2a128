"""SAS tokens (relay.auth): never raises for client text, and grants only tokens signed with the real key."""

from __future__ import annotations

from relay.auth import (
    Grant,
    Rights,
    SharedAccessRule,
    TokenFormatError,
    parse_token,
    sign_token,
    split_tokens,
    validate_any,
    validate_token,
)

KEY = "q8bXKdh4mDyb1RjbXN0S0+K2BNl1dS1SeZOp6iJs3Cw="
RULES = (
    SharedAccessRule("send", KEY, Rights.SEND),
    SharedAccessRule("listen", "another key", Rights.LISTEN),
)
NOW = 1_800_000_000
_ARGS = {"rules": RULES, "namespace_hosts": ["ns.example.org"], "entity_path": "/hc/a", "needed": Rights.SEND}
# The only token the fuzzer is given a signature for (its seeds are this one, mutated).
VALID = sign_token("sb://ns.example.org/hc", "send", KEY, NOW + 3600)
_SIGNED = parse_token(VALID)


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8", "surrogatepass")  # a renewToken's JSON string may hold lone surrogates
    except UnicodeDecodeError:
        return data.decode("latin-1")


def check(data: bytes) -> None:
    text = _text(data)
    try:
        token = parse_token(text)
    except TokenFormatError:
        token = None
    if token is not None:
        assert token.expiry == int(token.expiry_raw) and token.expiry_raw.isascii() and token.key_name
        token.resource_raw.encode("utf-8")  # what is signed has a UTF-8 form
    for piece in split_tokens(text):
        decision = validate_token(piece, now=NOW, **_ARGS)
        if isinstance(decision, Grant):
            signed = parse_token(piece)
            assert (signed.resource_raw, signed.expiry_raw) == (_SIGNED.resource_raw, _SIGNED.expiry_raw), (
                piece
            )
            assert signed.signature == _SIGNED.signature and decision.key_name == "send"
            assert decision.expiry > NOW
    decision = validate_any(split_tokens(text), now=NOW, **_ARGS)
    if isinstance(decision, Grant):
        assert any(isinstance(validate_token(p, now=NOW, **_ARGS), Grant) for p in split_tokens(text))
