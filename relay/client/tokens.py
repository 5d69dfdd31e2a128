"""
Token providers: where a listener or sender gets the SAS token it presents to the relay.

The relay needs a token on every listen and connect upgrade and, for a listener, again before the
current one expires (C{renewToken}). A provider is asked for a token for an audience (the resource URI
the token is scoped to) and a lifetime; it may answer at once or asynchronously, which leaves room for
providers that fetch tokens from a vault or a token service.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer

from relay.auth import TokenFormatError, make_token, parse_token
from relay.connstr import ConnectionString

TokenResult = str | Deferred[str] | Awaitable[str]
"""What L{ITokenProvider.get_token} may return: a token now, or later."""


class ITokenProvider(Interface):
    """A source of SAS tokens for the relay."""

    def get_token(audience: str, ttl: float) -> TokenResult:
        """
        Produce a token for C{audience}.

        @param audience: the resource URI the token must cover (e.g. C{http://ns/hyco/}); the relay
            ignores scheme and port when checking it.
        @param ttl: the lifetime the caller would like, in seconds. Providers of fixed tokens ignore it.
        @return: the token text (C{SharedAccessSignature sr=...}), a L{Deferred} or an awaitable of it.
        """


@implementer(ITokenProvider)
class SharedAccessKeyTokenProvider:
    """
    Sign fresh tokens with a shared access key (C{SharedAccessKeyName}/C{SharedAccessKey}).

    @ivar key_name: the rule name, safe to log.
    """

    def __init__(self, key_name: str, key: str, *, clock: IReactorTime | None = None) -> None:
        """
        Sign with C{key}, the secret of rule C{key_name}.

        @param clock: where "now" comes from when computing expiry; wall-clock time by default. Tests
            pass a L{twisted.internet.task.Clock}.
        """
        if not key_name or not key:
            raise ValueError("a shared access key provider needs a key name and a key")
        self.key_name = key_name
        self._key = key
        self._clock = clock

    def __repr__(self) -> str:
        return f"SharedAccessKeyTokenProvider(key_name={self.key_name!r})"

    def get_token(self, audience: str, ttl: float) -> str:
        """Sign a token for C{audience} valid for C{ttl} seconds from now."""
        now = None if self._clock is None else self._clock.seconds()
        return make_token(audience, self.key_name, self._key, ttl, now=now)


@implementer(ITokenProvider)
class SharedAccessSignatureTokenProvider:
    """
    Hand out one ready-made token, whatever the audience.

    Such a token cannot be renewed (a listener notices that asking again yields the same text and sends
    no C{renewToken}); the relay drops the listener (close code 1008) when it expires, and reconnecting
    is then refused with 401. Prefer a key for long-running listeners.
    """

    def __init__(self, token: str) -> None:
        if not token.strip():
            raise ValueError("empty token")
        self._token = token.strip()

    def __repr__(self) -> str:
        return "SharedAccessSignatureTokenProvider(<token>)"

    def get_token(self, audience: str, ttl: float) -> str:
        """Return the fixed token."""
        return self._token


def token_provider_from_connection_string(cs: ConnectionString) -> ITokenProvider:
    """
    The provider a connection string describes: a key if it has one, otherwise its fixed signature.

    @raise ValueError: when the connection string carries neither.
    """
    if cs.key_name and cs.key:
        return SharedAccessKeyTokenProvider(cs.key_name, cs.key)
    if cs.signature:
        return SharedAccessSignatureTokenProvider(cs.signature)
    raise ValueError("connection string has neither a shared access key nor a signature")


async def fetch_token(
    provider: ITokenProvider,
    audience: str,
    ttl: float,
    *,
    clock: IReactorTime | None = None,
    timeout: float | None = None,
) -> str:
    """
    Ask C{provider} for a token and wait for it, whatever kind of result it gives.

    @param clock: with C{timeout}, bounds the wait for a provider that answers asynchronously.
    @param timeout: seconds the provider has to answer; then its result is cancelled, so a provider
        that never answers cannot stall a (re)connect or a renewal for good.
    @raise TypeError: when the provider produces something other than a string.
    @raise TimeoutError: when the provider did not answer within C{timeout}.
    """
    result = provider.get_token(audience, ttl)
    if isinstance(result, Deferred) or inspect.isawaitable(result):
        if clock is not None and timeout is not None:
            result = await _within(cast(Awaitable[str], result), clock, timeout)
        else:
            result = await cast(Awaitable[str], result)
    if not isinstance(result, str):
        raise TypeError(f"token provider returned {type(result).__name__}, not str")
    return result


def _within(result: Awaitable[str], clock: IReactorTime, timeout: float) -> Deferred[str]:
    """C{result} as a L{Deferred} that is cancelled and fails with L{TimeoutError} after C{timeout}."""

    async def wait() -> str:
        return await result

    def timed_out(_result: object, _timeout: float) -> str:
        raise TimeoutError(f"the token provider did not answer within {timeout:g} s")

    return Deferred.fromCoroutine(wait()).addTimeout(timeout, clock, onTimeoutCancel=timed_out)


def token_expiry(token: str) -> float | None:
    """The Unix time a SAS token lapses (its C{se} field), or C{None} for tokens we cannot read."""
    try:
        return float(parse_token(token).expiry)
    except TokenFormatError:
        return None
