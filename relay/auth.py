"""
Shared access signature (SAS) tokens: parse, sign and validate, as Azure Relay defines them.

A token reads C{SharedAccessSignature sr=<enc uri>&sig=<enc base64>&se=<unix time>&skn=<rule>}. The
signature is HMAC-SHA256 keyed with the UTF-8 bytes of the rule's key string (not base64-decoded) over the
C{sr} value exactly as it appears in the token, a newline, and C{se}, also as it appears. Validation
returns a L{Grant} or a L{Denial} value; nothing here raises for bad client input, so callers can turn a
decision into a status code without exception plumbing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Flag, auto
from urllib.parse import quote, unquote, urlsplit

from relay.errors import ErrorKind

TOKEN_PREFIX = "SharedAccessSignature"  # noqa: S105 - a scheme name, not a secret
MAX_TOKENS = 4
"""Tokens one request may present; more are refused before any signature is checked (L{validate_any})."""
_RIGHT_NAMES = frozenset({"LISTEN", "SEND", "MANAGE"})
"""The right names rules may use: C{Rights["NONE"]} exists too, but a rule granting nothing is a mistake."""


class Rights(Flag):
    """The rights a shared access rule can carry; C{MANAGE} implies the other two."""

    NONE = 0
    LISTEN = auto()
    SEND = auto()
    MANAGE = auto()

    @classmethod
    def parse(cls, names: Iterable[str]) -> Rights:
        """
        Turn rule right names (C{"Listen"}, C{"Send"}, C{"Manage"}; any case) into a flag set.

        @raise ValueError: for an unknown name, C{"None"} included.
        """
        rights = cls.NONE
        for name in names:
            key = name.strip().upper()
            if key not in _RIGHT_NAMES:
                raise ValueError(f"unknown right {name!r} (expected Listen, Send or Manage)")
            rights |= cls[key]
        return rights

    def allows(self, needed: Rights) -> bool:
        """Tell whether these rights cover C{needed}, counting Manage as Listen and Send as well."""
        effective = self
        if self & Rights.MANAGE:
            effective |= Rights.LISTEN | Rights.SEND
        return (effective & needed) == needed

    def names(self) -> list[str]:
        """Rule right names in Azure's spelling, for display and configuration files."""
        return [
            r.name.capitalize() for r in (Rights.LISTEN, Rights.SEND, Rights.MANAGE) if r & self and r.name
        ]


@dataclass(frozen=True, slots=True)
class SharedAccessRule:
    """
    A named key with rights, defined on a namespace or on one entity.

    @ivar name: the key name clients put in C{skn}.
    @ivar key: the key string; never shown in reprs or logs.
    @ivar rights: what a token signed with this key may do.
    """

    name: str
    key: str = field(repr=False)
    rights: Rights


@dataclass(frozen=True, slots=True)
class SasToken:
    """
    A parsed token, before its signature or scope has been checked.

    @ivar resource_raw: the C{sr} field exactly as written (still percent-encoded): what was signed.
    @ivar resource: C{sr} percent-decoded: the URI the token is scoped to.
    @ivar signature: the decoded HMAC bytes.
    @ivar expiry: Unix time after which the token is void.
    @ivar key_name: the rule name from C{skn}.
    @ivar expiry_raw: the C{se} field exactly as written (C{01800000000} keeps its zero): what was signed.
    """

    resource_raw: str
    resource: str
    signature: bytes = field(repr=False)
    expiry: int
    key_name: str
    expiry_raw: str


class TokenFormatError(ValueError):
    """The text is not a well-formed SAS token."""


def parse_token(text: str) -> SasToken:
    """
    Parse a token string without checking its signature.

    @raise TokenFormatError: when a field is missing, repeated or malformed.
    """
    text = text.strip()
    prefix, sep, body = text.partition(" ")
    if not sep or prefix.lower() != TOKEN_PREFIX.lower():
        raise TokenFormatError("token does not start with 'SharedAccessSignature '")
    fields: dict[str, str] = {}
    for part in body.strip().split("&"):
        name, eq, value = part.partition("=")
        if not eq:
            raise TokenFormatError(f"token field {name[:20]!r} has no value")
        if name in fields:
            raise TokenFormatError(f"token field {name!r} appears twice")
        fields[name] = value
    missing = [f for f in ("sr", "sig", "se", "skn") if f not in fields]
    if missing:
        raise TokenFormatError(f"token lacks field(s) {', '.join(missing)}")
    se = fields["se"]
    if not (se.isascii() and se.isdigit()) or len(se) > 12:  # isdigit alone takes "²"
        raise TokenFormatError("token expiry 'se' is not a Unix time in seconds")
    try:
        fields["sr"].encode("utf-8")  # signed as UTF-8: a lone surrogate (a JSON escape) has no such form
    except UnicodeEncodeError:
        raise TokenFormatError("token resource 'sr' is not valid text") from None
    try:
        signature = base64.b64decode(unquote(fields["sig"]), validate=True)
    except (binascii.Error, ValueError):
        raise TokenFormatError("token signature 'sig' is not base64") from None
    key_name = unquote(fields["skn"])
    if not key_name:
        raise TokenFormatError("token key name 'skn' is empty")
    return SasToken(
        resource_raw=fields["sr"],
        resource=unquote(fields["sr"]),
        signature=signature,
        expiry=int(se),
        key_name=key_name,
        expiry_raw=se,
    )


_NO_RULE = (SharedAccessRule(name="", key=secrets.token_urlsafe(32), rights=Rights(0)),)
"""What an unknown key name is checked against: a key nobody knows, so that it takes as long as a known one."""


def _signature(key: str, resource_raw: str, expiry_raw: str) -> bytes:
    """The HMAC over C{sr} and C{se} as the token writes them (spec 3.1), neither decoded nor normalised."""
    return hmac.new(key.encode("utf-8"), f"{resource_raw}\n{expiry_raw}".encode(), hashlib.sha256).digest()


def sign_token(resource_uri: str, key_name: str, key: str, expiry: int) -> str:
    """
    Make a token for C{resource_uri}, encoded as the official Node and .NET helpers do (upper-case escapes).

    @param expiry: absolute Unix time in seconds.
    """
    sr = quote(resource_uri, safe="")
    sig = base64.b64encode(_signature(key, sr, str(expiry))).decode("ascii")
    return f"{TOKEN_PREFIX} sr={sr}&sig={quote(sig, safe='')}&se={expiry}&skn={quote(key_name, safe='')}"


def make_token(
    resource_uri: str, key_name: str, key: str, ttl: float = 3600.0, now: float | None = None
) -> str:
    """
    Make a token valid for at least C{ttl} seconds from C{now} (default: the current time).

    The expiry is rounded up to whole seconds: rounded down, C{ttl=0.5} made a token already expired.
    """
    issued = time.time() if now is None else now
    return sign_token(resource_uri, key_name, key, math.ceil(issued + ttl))


@dataclass(frozen=True, slots=True)
class Grant:
    """
    A validated token: who signed it, until when it holds, and what it allows.

    @ivar key_name: the rule that signed the token (safe to log).
    @ivar expiry: Unix time when the token lapses.
    @ivar rights: the rule's rights.
    """

    key_name: str
    expiry: int
    rights: Rights


@dataclass(frozen=True, slots=True)
class Denial:
    """
    A refused token, with the table row that tells the status code and a secret-free reason.
    """

    kind: ErrorKind
    reason: str


Decision = Grant | Denial


def _path_segments(path: str) -> list[str]:
    segments = [s.lower() for s in path.split("/") if s]
    if segments and segments[0] == "$hc":
        segments = segments[1:]
    return segments


def scope_covers(resource: str, namespace_hosts: Sequence[str], entity_path: str) -> bool:
    """
    Tell whether a token's decoded C{sr} covers an entity.

    The host is compared case-insensitively; scheme and port are ignored, because official clients produce
    C{http://ns:443/hc}, C{sb://ns/}, C{https://ns/hc/} and so on for the same entity. The path must be a
    segment-wise, case-insensitive prefix of the entity path, ignoring trailing slashes and a leading C{$hc}.
    """
    if "://" not in resource:
        resource = "sb://" + resource
    try:
        parts = urlsplit(resource)
        host = (parts.hostname or "").lower()
    except ValueError:
        return False
    if host not in {h.lower() for h in namespace_hosts}:
        return False
    scope = _path_segments(parts.path)
    target = _path_segments(entity_path)
    return target[: len(scope)] == scope


def validate_token(
    text: str,
    *,
    rules: Sequence[SharedAccessRule],
    namespace_hosts: Sequence[str],
    entity_path: str,
    needed: Rights,
    now: float,
) -> Decision:
    """
    Decide whether a token lets its bearer do C{needed} on the entity at C{entity_path}.

    @param rules: the namespace's rules followed by the entity's own rules.
    @param namespace_hosts: host names under which the namespace is reached (the request's host for a
        wildcard namespace).
    @return: a L{Grant}, or a L{Denial} whose kind gives 401 (bad token) or 403 (scope or rights).
    """
    try:
        token = parse_token(text)
    except TokenFormatError as e:
        return Denial(ErrorKind.UNAUTHORIZED, f"Malformed token: {e}")
    candidates = [r for r in rules if r.name == token.key_name]
    matching = None
    for rule in candidates or _NO_RULE:
        # An unknown key name costs the same signature check and gets the same answer as a wrong key:
        # neither the text nor the time of the refusal tells a prober which key names exist.
        expected = _signature(rule.key, token.resource_raw, token.expiry_raw)
        if hmac.compare_digest(expected, token.signature) and candidates:
            matching = rule
    if matching is None:
        return Denial(ErrorKind.UNAUTHORIZED, "Invalid token signature")
    if token.expiry <= now:
        return Denial(ErrorKind.UNAUTHORIZED, "Token expired")
    if not scope_covers(token.resource, namespace_hosts, entity_path):
        return Denial(ErrorKind.FORBIDDEN, "Token audience does not cover this entity")
    if not matching.rights.allows(needed):
        return Denial(ErrorKind.FORBIDDEN, f"Token lacks the {needed.names()[0]} right")
    return Grant(key_name=matching.name, expiry=token.expiry, rights=matching.rights)


def split_tokens(value: str) -> list[str]:
    """
    The tokens one header value presents: a repeated header reaches the gateway joined with C{", "}.

    Autobahn joins the values of a field given twice; SAS tokens hold no comma (C{sr}, C{sig} and C{skn}
    are percent-encoded, C{se} is digits), so every comma separates two tokens. Empty pieces are dropped.
    """
    return [token for token in (piece.strip() for piece in value.split(",")) if token]


def validate_any(
    texts: Sequence[str],
    *,
    rules: Sequence[SharedAccessRule],
    namespace_hosts: Sequence[str],
    entity_path: str,
    needed: Rights,
    now: float,
) -> Decision:
    """
    Validate several presented tokens and accept when any of them holds.

    Some client setups send a placeholder header and a real query token; the first L{Grant} wins. With no
    grant, the most telling denial is returned (403 beats 401, since it proves the token was genuine).
    More than L{MAX_TOKENS} are refused (401) unchecked: each costs an HMAC, and a header of commas would
    make one anonymous request cost a thousand.
    """
    if not texts:
        return Denial(ErrorKind.UNAUTHORIZED, "No token presented")
    if len(texts) > MAX_TOKENS:
        return Denial(ErrorKind.UNAUTHORIZED, f"Too many tokens presented (at most {MAX_TOKENS})")
    denials: list[Denial] = []
    for text in texts:
        decision = validate_token(
            text,
            rules=rules,
            namespace_hosts=namespace_hosts,
            entity_path=entity_path,
            needed=needed,
            now=now,
        )
        if isinstance(decision, Grant):
            return decision
        denials.append(decision)
    denials.sort(key=lambda d: d.kind is not ErrorKind.FORBIDDEN)
    return denials[0]


def generate_key() -> str:
    """Make a new random key in the format Azure uses (44 characters of base64 for 256 bits)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")
