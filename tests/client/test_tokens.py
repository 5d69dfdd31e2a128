"""Tests for L{relay.client.tokens}."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from relay.auth import Grant, Rights, SharedAccessRule, make_token, validate_token
from relay.client.tokens import (
    ITokenProvider,
    SharedAccessKeyTokenProvider,
    SharedAccessSignatureTokenProvider,
    fetch_token,
    token_expiry,
    token_provider_from_connection_string,
)
from relay.connstr import parse_connection_string

RULE = SharedAccessRule("listen-rule", "k3y", Rights.LISTEN)


@implementer(ITokenProvider)
class DeferredTokens:
    """A provider that answers asynchronously, as one fetching tokens from a service would."""

    def __init__(self) -> None:
        self.pending: list[Deferred[str]] = []

    def get_token(self, audience: str, ttl: float) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        self.pending.append(d)
        return d


class ProviderTests(SynchronousTestCase):
    def test_interfaces(self) -> None:
        """Both providers and the asynchronous test provider implement L{ITokenProvider}."""
        verifyObject(ITokenProvider, SharedAccessKeyTokenProvider("n", "k"))
        verifyObject(
            ITokenProvider, SharedAccessSignatureTokenProvider("SharedAccessSignature sr=a&sig=b&se=1&skn=c")
        )
        verifyObject(ITokenProvider, DeferredTokens())

    def test_key_provider_signs_for_the_audience(self) -> None:
        """A signed token validates for the audience's entity and expires C{ttl} after the clock's now."""
        clock = Clock()
        clock.advance(1_000)
        token = SharedAccessKeyTokenProvider("listen-rule", "k3y", clock=clock).get_token(
            "http://ns/hyco/", 600
        )
        decision = validate_token(
            token, rules=[RULE], namespace_hosts=["ns"], entity_path="hyco", needed=Rights.LISTEN, now=1_001
        )
        self.assertEqual(decision, Grant("listen-rule", 1_600, Rights.LISTEN))
        self.assertEqual(token_expiry(token), 1_600.0)

    def test_key_stays_out_of_repr(self) -> None:
        """The key never shows in a repr (which may end up in logs)."""
        self.assertNotIn("k3y", repr(SharedAccessKeyTokenProvider("listen-rule", "k3y")))
        self.assertNotIn("sig=", repr(SharedAccessSignatureTokenProvider("SharedAccessSignature sr=a&sig=b")))

    def test_signature_provider_is_fixed(self) -> None:
        """A fixed token is returned whatever audience and lifetime are asked for."""
        token = make_token("http://ns/", "listen-rule", "k3y", now=0)
        provider = SharedAccessSignatureTokenProvider(f"  {token} ")
        self.assertEqual(provider.get_token("http://other/x/", 5), token)

    def test_empty_credentials_are_refused(self) -> None:
        """Providers refuse missing key names, keys and tokens at construction."""
        self.assertRaises(ValueError, SharedAccessKeyTokenProvider, "", "k")
        self.assertRaises(ValueError, SharedAccessKeyTokenProvider, "n", "")
        self.assertRaises(ValueError, SharedAccessSignatureTokenProvider, " ")

    def test_from_connection_string(self) -> None:
        """A key in the connection string gives a signing provider, a signature a fixed one."""
        keyed = token_provider_from_connection_string(
            parse_connection_string("Endpoint=sb://ns/;SharedAccessKeyName=listen-rule;SharedAccessKey=k3y")
        )
        self.assertIsInstance(keyed, SharedAccessKeyTokenProvider)
        fixed = token_provider_from_connection_string(
            parse_connection_string(
                "Endpoint=sb://ns/;SharedAccessSignature=SharedAccessSignature sr=a&sig=b&se=1&skn=c"
            )
        )
        self.assertEqual(fixed.get_token("x", 1), "SharedAccessSignature sr=a&sig=b&se=1&skn=c")

    def test_token_expiry_of_unreadable_tokens(self) -> None:
        """Tokens that are not SAS tokens (say, a JWT) have no known expiry."""
        self.assertIsNone(token_expiry("Bearer abc"))


class FetchTokenTests(SynchronousTestCase):
    def test_plain_string(self) -> None:
        """A provider answering at once is awaited without delay."""
        provider = SharedAccessSignatureTokenProvider("SharedAccessSignature sr=a&sig=b&se=1&skn=c")
        d = Deferred.fromCoroutine(fetch_token(provider, "aud", 60))
        self.assertEqual(self.successResultOf(d), "SharedAccessSignature sr=a&sig=b&se=1&skn=c")

    def test_deferred(self) -> None:
        """A L{Deferred} answer is waited for."""
        provider = DeferredTokens()
        d = Deferred.fromCoroutine(fetch_token(provider, "aud", 60))
        self.assertNoResult(d)
        provider.pending[0].callback("tok")
        self.assertEqual(self.successResultOf(d), "tok")

    def test_coroutine(self) -> None:
        """A provider written as C{async def} works as well."""

        @implementer(ITokenProvider)
        class AsyncTokens:
            async def get_token(self, audience: str, ttl: float) -> str:
                return await succeed(f"for {audience} {ttl}")

        d = Deferred.fromCoroutine(fetch_token(AsyncTokens(), "aud", 60))
        self.assertEqual(self.successResultOf(d), "for aud 60")

    def test_wrong_type(self) -> None:
        """A provider returning something other than text is reported clearly."""

        @implementer(ITokenProvider)
        class Broken:
            def get_token(self, audience: str, ttl: float) -> object:
                return 42

        d = Deferred.fromCoroutine(fetch_token(Broken(), "aud", 60))  # type: ignore[arg-type]
        self.failureResultOf(d, TypeError)
