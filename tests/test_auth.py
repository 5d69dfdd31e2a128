"""Tests for L{relay.auth}: SAS token parsing, signing, scope and rights."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from relay import auth
from relay.auth import (
    Denial,
    Grant,
    Rights,
    SharedAccessRule,
    TokenFormatError,
    generate_key,
    make_token,
    parse_token,
    scope_covers,
    sign_token,
    split_tokens,
    validate_any,
    validate_token,
)
from relay.errors import ErrorKind

KEY = "0123456789abcdefghijKLMNOPQRSTUV+/=="
NOW = 1_700_000_000.0
ROOT = SharedAccessRule("root", KEY, Rights.LISTEN | Rights.SEND | Rights.MANAGE)
SEND_ONLY = SharedAccessRule("sender", "send-key-send-key-send-key", Rights.SEND)
LISTEN_ONLY = SharedAccessRule("listener", "listen-key-listen-key-xx", Rights.LISTEN)


def check(
    token: str, needed: Rights = Rights.LISTEN, path: str = "hyco", rules=(ROOT, SEND_ONLY, LISTEN_ONLY)
):
    return validate_token(
        token, rules=rules, namespace_hosts=("ns.example",), entity_path=path, needed=needed, now=NOW
    )


def count_signatures(case: SynchronousTestCase) -> list[str]:
    """Record the key of every signature check for the rest of C{case} (a list that grows as they happen)."""
    calls: list[str] = []
    signature = auth._signature

    def counting(key: str, resource_raw: str, expiry_raw: str) -> bytes:
        calls.append(key)
        return signature(key, resource_raw, expiry_raw)

    case.patch(auth, "_signature", counting)
    return calls


class ParseTokenTests(SynchronousTestCase):
    """The token text format."""

    def test_round_trip(self) -> None:
        """A signed token parses back into its fields, with C{sr} kept raw for the signature."""
        token = sign_token("http://ns.example/hyco", "root", KEY, 1_800_000_000)
        parsed = parse_token(token)
        self.assertEqual(parsed.resource, "http://ns.example/hyco")
        self.assertEqual(parsed.resource_raw, "http%3A%2F%2Fns.example%2Fhyco")
        self.assertEqual(parsed.expiry, 1_800_000_000)
        self.assertEqual(parsed.key_name, "root")

    def test_fields_in_any_order(self) -> None:
        """The SAS documentation puts C{sig} first; code samples put C{sr} first. Both parse."""
        token = sign_token("http://ns.example/hyco", "root", KEY, 1_800_000_000)
        fields = token.split(" ", 1)[1].split("&")
        reordered = "SharedAccessSignature " + "&".join(reversed(fields))
        self.assertIsInstance(check(reordered), Grant)

    def test_malformed(self) -> None:
        """Missing, repeated or malformed fields are refused with a reason."""
        cases = {
            "": "does not start",
            "Bearer abc": "does not start",
            "SharedAccessSignature sr=a&sig=AAAA&se=1": "lacks",
            "SharedAccessSignature sr=a&sr=b&sig=AAAA&se=1&skn=k": "twice",
            "SharedAccessSignature sr=a&sig=AAAA&se=soon&skn=k": "Unix time",
            "SharedAccessSignature sr=a&sig=AAAA&se=\u00b2&skn=k": "Unix time",  # "²" passes str.isdigit
            "SharedAccessSignature sr=a&sig=AAAA&se=\u0661\u0662&skn=k": "Unix time",  # Arabic-Indic digits
            "SharedAccessSignature sr=a&sig=***&se=1&skn=k": "base64",
            "SharedAccessSignature sr=a&sig&se=1&skn=k": "no value",
            "SharedAccessSignature sr=a&sig=AAAA&se=1&skn=": "empty",
        }
        for text, reason in cases.items():
            with self.subTest(text=text):
                with self.assertRaises(TokenFormatError) as ctx:
                    parse_token(text)
                self.assertIn(reason, str(ctx.exception))

    @given(st.text(max_size=200))
    def test_garbage_never_crashes(self, text: str) -> None:
        """Arbitrary text either parses or raises the codec's single error type."""
        try:
            parse_token(text)
        except TokenFormatError:
            pass


class SignatureTests(SynchronousTestCase):
    """The HMAC construction of spec section 3.1."""

    def test_signature_is_over_raw_sr(self) -> None:
        """The signature covers C{sr} as written: lower-case escapes (legacy .NET) still verify."""
        sr = "http%3a%2f%2fns.example%2fhyco"
        se = 1_800_000_000
        digest = hmac.new(KEY.encode("utf-8"), f"{sr}\n{se}".encode(), hashlib.sha256).digest()
        sig = quote(base64.b64encode(digest).decode(), safe="")
        token = f"SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn=root"
        self.assertIsInstance(check(token), Grant)

    def test_signature_covers_se_as_written(self) -> None:
        """The signature covers C{se} as written (a leading zero), not the number it denotes."""
        sr = quote("http://ns.example/hyco", safe="")
        se = "01800000000"
        digest = hmac.new(KEY.encode("utf-8"), f"{sr}\n{se}".encode(), hashlib.sha256).digest()
        sig = quote(base64.b64encode(digest).decode(), safe="")
        decision = check(f"SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn=root")
        self.assertEqual(decision, Grant("root", 1_800_000_000, ROOT.rights))
        self.assertIsInstance(check(f"SharedAccessSignature sr={sr}&sig={sig}&se={se[1:]}&skn=root"), Denial)

    def test_key_is_not_base64_decoded(self) -> None:
        """The key string's UTF-8 bytes are the HMAC key, as in the Node, .NET and Python samples."""
        se = 1_800_000_000
        sr = quote("http://ns.example/hyco", safe="")
        wrong = hmac.new(
            base64.b64decode(KEY + "=="[: (4 - len(KEY) % 4) % 4]), f"{sr}\n{se}".encode(), hashlib.sha256
        )
        token = f"SharedAccessSignature sr={sr}&sig={quote(base64.b64encode(wrong.digest()).decode(), safe='')}&se={se}&skn=root"
        denial = check(token)
        self.assertIsInstance(denial, Denial)
        self.assertEqual(denial.kind, ErrorKind.UNAUTHORIZED)

    def test_unencoded_signature_with_slash(self) -> None:
        """A C{sig} with raw C{/} and C{+} (Python's C{quote} default) still verifies; C{+} is not a space."""
        se = 1_800_000_000
        for attempt in range(200):
            resource = f"http://ns.example/hyco/{attempt}"
            sr = quote(resource, safe="")
            digest = base64.b64encode(
                hmac.new(KEY.encode(), f"{sr}\n{se}".encode(), hashlib.sha256).digest()
            ).decode()
            if "+" in digest and "/" in digest:
                break
        for sig in (quote(digest), digest):
            token = f"SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn=root"
            self.assertIn("/", token.split("&sig=")[1])
            decision = validate_token(
                token,
                rules=(ROOT,),
                namespace_hosts=("ns.example",),
                entity_path=f"hyco/{attempt}",
                needed=Rights.SEND,
                now=NOW,
            )
            self.assertIsInstance(decision, Grant)

    def test_tampered_signature(self) -> None:
        """Changing the expiry after signing breaks the signature."""
        token = sign_token("http://ns.example/hyco", "root", KEY, 1_800_000_000)
        forged = token.replace("se=1800000000", "se=1900000000")
        self.assertEqual(check(forged), Denial(ErrorKind.UNAUTHORIZED, "Invalid token signature"))

    def test_lone_surrogate_in_sr(self) -> None:
        """A C{sr} with a lone surrogate (a JSON C{renewToken} can carry one) is refused, not an encoding error."""
        token = "SharedAccessSignature sr=\ud800&sig=AAAA&se=1800000000&skn=root"
        denial = check(token)
        self.assertIsInstance(denial, Denial)
        self.assertEqual(denial.kind, ErrorKind.UNAUTHORIZED)
        self.assertIn("'sr'", denial.reason)  # type: ignore[union-attr]


class ValidateTests(SynchronousTestCase):
    """Expiry, key names, scope and rights (spec 3.3)."""

    def test_expired(self) -> None:
        """A token whose C{se} has passed is refused with 401."""
        token = sign_token("http://ns.example/hyco", "root", KEY, int(NOW) - 1)
        self.assertEqual(check(token), Denial(ErrorKind.UNAUTHORIZED, "Token expired"))

    def test_expiry_boundary(self) -> None:
        """A token is void from the second its C{se} names: one second earlier it still holds."""
        at_now = sign_token("http://ns.example/hyco", "root", KEY, int(NOW))
        self.assertEqual(check(at_now), Denial(ErrorKind.UNAUTHORIZED, "Token expired"))
        self.assertIsInstance(check(sign_token("http://ns.example/hyco", "root", KEY, int(NOW) + 1)), Grant)

    def test_unknown_key_name(self) -> None:
        """
        An unknown C{skn} is refused with 401, in the same words as a wrong key.

        The answer used to name the unknown key, so a prober could tell which key names exist.
        """
        unknown = check(sign_token("http://ns.example/hyco", "nobody", KEY, 1_800_000_000))
        wrong_key = check(sign_token("http://ns.example/hyco", "root", "not-the-key", 1_800_000_000))
        self.assertEqual(unknown, Denial(ErrorKind.UNAUTHORIZED, "Invalid token signature"))
        self.assertEqual(unknown, wrong_key)

    def test_unknown_key_name_is_checked_like_a_known_one(self) -> None:
        """An unknown C{skn} still costs one signature check, so the refusal's timing does not tell either."""
        calls: list[str] = []
        original = auth._signature

        def counting(key: str, resource_raw: str, expiry: int) -> bytes:
            calls.append(key)
            return original(key, resource_raw, expiry)

        wrong_key = sign_token("http://ns.example/hyco", "root", "not-the-key", 1_800_000_000)
        unknown = sign_token("http://ns.example/hyco", "nobody", KEY, 1_800_000_000)
        self.patch(auth, "_signature", counting)
        check(wrong_key)
        check(unknown)
        self.assertEqual(len(calls), 2)
        self.assertEqual(calls[0], KEY)
        self.assertNotIn(calls[1], (KEY, SEND_ONLY.key, LISTEN_ONLY.key))

    def test_a_signature_for_the_unknown_key_rule_is_refused(self) -> None:
        """The stand-in rule an unknown name is checked against never grants anything."""
        stand_in = auth._NO_RULE[0]
        token = sign_token("http://ns.example/hyco", "nobody", stand_in.key, 1_800_000_000)
        self.assertEqual(check(token), Denial(ErrorKind.UNAUTHORIZED, "Invalid token signature"))

    def test_scope_forms_that_must_pass(self) -> None:
        """Every C{sr} form the official clients produce covers HC C{hyco} on namespace C{ns.example}."""
        for resource in [
            "http://ns.example/",
            "https://ns.example/",
            "sb://ns.example/",
            "http://ns.example/hyco",
            "http://ns.example/hyco/",
            "http://ns.example:443/hyco",
            "http://ns.example:9443/hyco",
            "https://NS.EXAMPLE/HYCO",
            "http://ns.example/$hc/hyco",
            "ns.example/hyco",
        ]:
            with self.subTest(resource=resource):
                token = sign_token(resource, "root", KEY, 1_800_000_000)
                self.assertIsInstance(check(token), Grant)

    def test_scope_forms_that_must_fail(self) -> None:
        """Another host, another entity, or a longer path is outside the token's audience: 403."""
        for resource in [
            "http://other.example/hyco",
            "http://ns.example/hyco2",
            "http://ns.example/hyco/sub",
            "http://ns.example/other",
            "http://ns.example.evil/hyco",
        ]:
            with self.subTest(resource=resource):
                token = sign_token(resource, "root", KEY, 1_800_000_000)
                denial = check(token)
                self.assertIsInstance(denial, Denial)
                self.assertEqual(denial.kind, ErrorKind.FORBIDDEN)

    def test_rights(self) -> None:
        """Listen needs Listen, sending needs Send, and Manage implies both."""
        send = make_token("http://ns.example/hyco", "sender", SEND_ONLY.key, now=NOW)
        listen = make_token("http://ns.example/hyco", "listener", LISTEN_ONLY.key, now=NOW)
        root = make_token("http://ns.example/hyco", "root", KEY, now=NOW)
        self.assertIsInstance(check(send, Rights.SEND), Grant)
        self.assertEqual(check(send, Rights.LISTEN).kind, ErrorKind.FORBIDDEN)  # type: ignore[union-attr]
        self.assertIsInstance(check(listen, Rights.LISTEN), Grant)
        self.assertEqual(check(listen, Rights.SEND).kind, ErrorKind.FORBIDDEN)  # type: ignore[union-attr]
        self.assertIsInstance(check(root, Rights.SEND), Grant)
        self.assertIsInstance(check(root, Rights.LISTEN), Grant)

    def test_manage_implies_listen_and_send(self) -> None:
        """A rule with Manage alone grants Listen and Send (spec 3.3, step 6)."""
        manage = SharedAccessRule("admin", "manage-key-manage-key-xx", Rights.parse(["Manage"]))
        token = make_token("http://ns.example/hyco", "admin", manage.key, now=NOW)
        for needed in (Rights.LISTEN, Rights.SEND, Rights.MANAGE, Rights.LISTEN | Rights.SEND):
            with self.subTest(needed=needed):
                self.assertEqual(
                    check(token, needed, rules=(manage,)), Grant("admin", NOW + 3600, Rights.MANAGE)
                )
        self.assertFalse(Rights.SEND.allows(Rights.MANAGE))
        self.assertFalse((Rights.LISTEN | Rights.SEND).allows(Rights.MANAGE))

    def test_hc_segment_is_not_an_entity(self) -> None:
        """Only a leading C{$hc} is skipped: C{$hc/hyco} covers C{hyco} and nothing beside it."""
        token = make_token("http://ns.example/$hc/hyco", "root", KEY, now=NOW)
        self.assertIsInstance(check(token), Grant)
        self.assertEqual(check(token, path="other").kind, ErrorKind.FORBIDDEN)  # type: ignore[union-attr]
        self.assertEqual(check(token, path="$hc/other").kind, ErrorKind.FORBIDDEN)  # type: ignore[union-attr]

    def test_multi_segment_entity(self) -> None:
        """A token for C{team} covers C{team/app}; one for C{team/app} does not cover C{team}."""
        token = make_token("http://ns.example/team", "root", KEY, now=NOW)
        self.assertIsInstance(check(token, path="team/app"), Grant)
        narrow = make_token("http://ns.example/team/app", "root", KEY, now=NOW)
        self.assertEqual(check(narrow, path="team").kind, ErrorKind.FORBIDDEN)  # type: ignore[union-attr]

    def test_any_of_several(self) -> None:
        """With a placeholder and a real token, the real one wins; with two bad ones, 403 beats 401."""
        good = make_token("http://ns.example/hyco", "root", KEY, now=NOW)
        wrong_scope = make_token("http://ns.example/other", "root", KEY, now=NOW)
        kwargs = {"rules": (ROOT,), "namespace_hosts": ("ns.example",), "entity_path": "hyco", "now": NOW}
        self.assertIsInstance(validate_any(["placeholder", good], needed=Rights.SEND, **kwargs), Grant)
        self.assertEqual(
            validate_any(["placeholder", wrong_scope], needed=Rights.SEND, **kwargs).kind,  # type: ignore[union-attr]
            ErrorKind.FORBIDDEN,
        )
        self.assertEqual(
            validate_any([], needed=Rights.SEND, **kwargs),
            Denial(ErrorKind.UNAUTHORIZED, "No token presented"),
        )

    def test_too_many_tokens_are_refused_unchecked(self) -> None:
        """More than four tokens are a 401 before any signature is checked, even with a good one among them."""
        calls = count_signatures(self)
        good = make_token("http://ns.example/hyco", "root", KEY, now=NOW)
        kwargs = {"rules": (ROOT,), "namespace_hosts": ("ns.example",), "entity_path": "hyco", "now": NOW}
        self.assertIsInstance(validate_any(["placeholder"] * 3 + [good], needed=Rights.SEND, **kwargs), Grant)
        calls.clear()
        self.assertEqual(
            validate_any(["placeholder"] * 4 + [good], needed=Rights.SEND, **kwargs),
            Denial(ErrorKind.UNAUTHORIZED, "Too many tokens presented (at most 4)"),
        )
        self.assertEqual(calls, [])

    def test_expiry_rounds_up(self) -> None:
        """A token lives at least its C{ttl}: the expiry is rounded up to whole seconds, never down."""
        self.assertEqual(
            parse_token(make_token("http://ns/hyco", "root", KEY, ttl=0.5, now=NOW + 0.2)).expiry, NOW + 1
        )
        self.assertEqual(
            parse_token(make_token("http://ns/hyco", "root", KEY, ttl=60, now=NOW)).expiry, NOW + 60
        )

    def test_default_lifetime(self) -> None:
        """Without a C{ttl}, a token is valid for an hour."""
        self.assertEqual(parse_token(make_token("http://ns/hyco", "root", KEY, now=NOW)).expiry, NOW + 3600)

    def test_surrounding_whitespace(self) -> None:
        """Blanks around the token or after its prefix (a header value as typed) do not make it malformed."""
        token = make_token("http://ns.example/hyco", "root", KEY, now=NOW)
        prefix, body = token.split(" ", 1)
        self.assertIsInstance(check(f"  {token}\t"), Grant)
        self.assertIsInstance(check(f"{prefix}   {body} "), Grant)

    def test_expiry_length(self) -> None:
        """An C{se} of twelve digits parses; thirteen are refused before any arithmetic on them."""
        self.assertEqual(
            parse_token("SharedAccessSignature sr=a&sig=AAAA&se=999999999999&skn=k").expiry, 10**12 - 1
        )
        with self.assertRaises(TokenFormatError):
            parse_token("SharedAccessSignature sr=a&sig=AAAA&se=1000000000000&skn=k")

    def test_split_tokens(self) -> None:
        """A header value given twice (joined with C{", "}) presents each token; empty pieces are none."""
        token = make_token("http://ns/hyco", "root", KEY, now=NOW)
        self.assertEqual(split_tokens(f"placeholder, {token}"), ["placeholder", token])
        self.assertEqual(split_tokens(token), [token])
        self.assertEqual(split_tokens(" , ,"), [])

    def test_rule_repr_hides_key(self) -> None:
        """Keys never appear in reprs, so they cannot leak into logs."""
        self.assertNotIn(KEY, repr(ROOT))

    @given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=16, max_size=64))
    def test_any_key_round_trips(self, key: str) -> None:
        """Any key string (non-ASCII included: UTF-8 bytes are the key) signs tokens that validate."""
        rule = SharedAccessRule("k", key, Rights.SEND)
        token = make_token("sb://ns.example/hyco", "k", key, now=NOW)
        self.assertIsInstance(check(token, Rights.SEND, rules=(rule,)), Grant)


class KeyTests(SynchronousTestCase):
    """L{generate_key}."""

    def test_generated_keys(self) -> None:
        """A new key is 44 characters of base64 for 32 random bytes, different every time."""
        keys = {generate_key() for _ in range(8)}
        self.assertEqual(len(keys), 8)
        for key in keys:
            self.assertEqual((len(key), len(base64.b64decode(key, validate=True))), (44, 32))


class ScopeTests(SynchronousTestCase):
    """L{scope_covers} on its own."""

    def test_host_list(self) -> None:
        """Any of the namespace's host names (aliases) is accepted, case-insensitively."""
        self.assertTrue(scope_covers("http://Alias.Example/x", ("ns.example", "alias.example"), "x"))
        self.assertFalse(scope_covers("http://ns.example/x", (), "x"))
        self.assertTrue(scope_covers("http://ns.example/x", ("NS.Example",), "x"))

    def test_unparsable_resource(self) -> None:
        """A C{sr} that is no URL (an unclosed IPv6 bracket) covers nothing."""
        self.assertIs(scope_covers("http://[ns.example/x", ("ns.example", "[ns.example"), "x"), False)
        self.assertIs(scope_covers("[ns.example", ("ns.example",), ""), False)

    def test_rights_parse(self) -> None:
        """Right names are case-insensitive; unknown ones are an error."""
        self.assertEqual(Rights.parse(["listen", "SEND"]), Rights.LISTEN | Rights.SEND)
        self.assertEqual(Rights.parse([" Listen ", "manage"]), Rights.LISTEN | Rights.MANAGE)
        self.assertRaises(ValueError, Rights.parse, ["Read"])
        self.assertEqual((Rights.LISTEN | Rights.MANAGE).names(), ["Listen", "Manage"])

    def test_none_is_not_a_right(self) -> None:
        """Only Listen, Send and Manage are right names: C{None} (the empty flag) is refused like C{Read}."""
        for names in (["None"], ["none"], ["Send", " NONE "]):
            with self.subTest(names=names):
                self.assertRaises(ValueError, Rights.parse, names)
