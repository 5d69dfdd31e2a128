"""
L{TokenRenewal}: send a listener's next token as C{renewToken} before the current one expires.

Kept apart from L{relay.client.listener} so that the listener's life cycle (dialling, reconnecting,
accepting) and the timing of its tokens each fit one small module. It reads the listener's provider,
channel and logger when it needs them, so its log events keep the listener's namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IDelayedCall

from relay.client.tokens import fetch_token, token_expiry

if TYPE_CHECKING:
    from relay.client.listener import HybridConnectionListener

_MIN_RENEW_DELAY = 1.0
_RENEW_RETRY_DELAY = 10.0


class TokenRenewal:
    """
    The renewal schedule of a listener's token on its current control channel.

    @ivar token: the token the relay holds for the current control channel, C{None} before the first
        connect; the listener sets it on every connect.
    """

    def __init__(
        self,
        listener: HybridConnectionListener,
        reactor: Any,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        *,
        token_ttl: float,
        renew_fraction: float,
    ) -> None:
        """
        Set up the schedule; nothing is scheduled before L{schedule}.

        @param listener: whose token to renew, on its current control channel.
        @param spawn: runs a renewal as one of the listener's tracked tasks.
        @param token_ttl: the token lifetime requested from the provider, in seconds.
        @param renew_fraction: renew when this fraction of a token's remaining lifetime has passed.
        """
        self.token: str | None = None
        self._listener = listener
        self._reactor = reactor
        self._spawn = spawn
        self._token_ttl = token_ttl
        self._renew_fraction = renew_fraction
        self._call: IDelayedCall | None = None
        self._warned_unchanged = False

    def schedule(self, delay: float | None = None) -> None:
        """
        Renew after C{delay} seconds, replacing any renewal scheduled before.

        @param delay: by default, when C{renew_fraction} of the token's remaining lifetime has passed (but
            not sooner than 1 s).
        """
        self.cancel()
        if delay is None:  # a new token (connected or renewed): it may warn again
            self._warned_unchanged = False
            expiry = token_expiry(self.token) if self.token is not None else None
            remaining = self._token_ttl if expiry is None else expiry - self._reactor.seconds()
            if remaining <= 0:
                # The relay took a token this machine's clock says has lapsed: one clock is wrong. Each
                # new token would look lapsed too, and renewing every second would not help either.
                self._listener.log.warn(
                    "listener {listener_id}: this machine's clock is past its token's expiry; renewing "
                    "after {fraction:g} of the requested lifetime instead (check the clock)",
                    listener_id=self._listener.listener_id,
                    fraction=self._renew_fraction,
                )
                remaining = self._token_ttl
            delay = max(remaining * self._renew_fraction, _MIN_RENEW_DELAY)
        self._call = self._reactor.callLater(delay, self._due)

    def cancel(self) -> None:
        """Drop the scheduled renewal, if any."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    async def fetch(self) -> str:
        """
        A token from the listener's provider, for a connect or a renewal alike.

        @raise TimeoutError: when the provider did not answer within the listener's C{open_timeout}.
        """
        listener = self._listener
        return await fetch_token(
            listener.token_provider,
            listener.address.audience,
            self._token_ttl,
            clock=self._reactor,
            timeout=listener.options.open_timeout,
        )

    def _due(self) -> None:
        self._call = None
        self._spawn(self._renew())

    async def _renew(self) -> None:
        listener = self._listener
        channel = listener.control_channel
        if channel is None:
            return
        try:
            token = await self.fetch()
        except CancelledError:
            raise
        except Exception:
            listener.log.failure(
                "listener {listener_id} could not get a token to renew", listener_id=listener.listener_id
            )
            if channel is listener.control_channel:
                self.schedule(_RENEW_RETRY_DELAY)
            return
        if channel is not listener.control_channel:
            return
        if token == self.token:
            self._unchanged()
            return
        if channel.send_renew_token(token):
            self.token = token
            listener.log.info("listener {listener_id} renewed its token", listener_id=listener.listener_id)
            self.schedule()

    def _unchanged(self) -> None:
        """
        The provider handed back the current token: ask again while it has time left.

        A caching provider renews its token only shortly before expiry (often later than our renewal
        point); giving up here would let the relay close the control channel (1008) at expiry.
        """
        listener = self._listener
        if not self._warned_unchanged:
            self._warned_unchanged = True
            listener.log.warn(
                "listener {listener_id} cannot renew yet: the token provider returned the current token; "
                "asking again until it expires, when the relay closes the control channel",
                listener_id=listener.listener_id,
            )
        expiry = token_expiry(self.token) if self.token is not None else None
        if expiry is None:
            return
        delay = min(_RENEW_RETRY_DELAY, (expiry - self._reactor.seconds()) / 2)
        if delay >= _MIN_RENEW_DELAY:
            self.schedule(delay)
