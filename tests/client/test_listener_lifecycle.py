"""Tests for L{relay.client.listener}: token renewal, reconnecting, closing."""

from __future__ import annotations

from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from relay.auth import make_token
from relay.client import (
    AuthorizationError,
    Backoff,
    ControlChannelLost,
    EndpointNotFoundError,
    HttpListener,
    HybridConnectionListener,
    ListenerState,
    RelayedRequest,
    RelayedResponse,
    SharedAccessSignatureTokenProvider,
    WebSocketOptions,
)
from relay.client.tokens import token_expiry

from .fakes import ROOT_KEY, ROOT_KEY_NAME
from .test_listener import ListenerTestCase
from .test_listener_flow import FlowTestCase


class RecordingListenerTestCase(ListenerTestCase):
    """Records the listener's events as strings, for asserting their order."""

    def recorded(self, **kwargs: Any) -> tuple[HybridConnectionListener, list[str]]:
        events: list[str] = []

        def offline(reason: BaseException | None) -> None:
            events.append(f"offline:{type(reason).__name__ if reason else None}")

        listener = self.open_listener(
            on_connecting=lambda: events.append("connecting"),
            on_online=lambda: events.append("online"),
            on_offline=offline,
            **kwargs,
        )
        return listener, events

    def listen_times(self) -> list[float]:
        return [u.time for u in self.relay.upgrades if u.action == "listen"]


class RenewalTests(RecordingListenerTestCase, SynchronousTestCase):
    def test_renews_at_the_configured_fraction(self) -> None:
        """A fresh token goes out as C{renewToken} at 90% of the lifetime, and again for the next one."""
        listener = self.open_listener(token_ttl=100)
        self.network.advance(89.5, step=0.5)
        self.assertEqual(self.relay.control_messages, [])
        self.network.advance(0.5)
        [message] = self.relay.control_messages
        self.assertEqual(list(message), ["renewToken"])
        self.assertEqual(self.relay.listeners[0].renewals, [message["renewToken"]["token"]])
        self.network.advance(110)
        self.assertTrue(listener.is_online, "the relay adopted the renewed tokens")
        self.assertEqual(len(self.relay.listeners[0].renewals), 2)
        self.assertEqual(len(self.listen_times()), 1)

    def test_renew_fraction_is_configurable(self) -> None:
        """C{renew_fraction} moves the renewal point."""
        self.open_listener(token_ttl=100, renew_fraction=0.5)
        self.network.advance(49)
        self.assertEqual(self.relay.control_messages, [])
        self.network.advance(1)
        self.assertEqual(len(self.relay.control_messages), 1)

    def test_fixed_token_cannot_be_renewed(self) -> None:
        """
        A fixed token is not re-sent; the relay closes the channel (1008) at expiry.

        Reconnecting with the expired token is then refused (401), and the listener keeps backing off.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        token = make_token("http://relay.test/hyco", ROOT_KEY_NAME, ROOT_KEY, ttl=60, now=0)
        events: list[str] = []
        listener = HybridConnectionListener(
            "ws://relay.test:80",
            "hyco",
            SharedAccessSignatureTokenProvider(token),
            reactor=self.reactor,
            random=lambda: 0.0,
            on_offline=lambda reason: events.append(repr(reason)),
        )
        self.addCleanup(listener.close)
        listener.open()
        self.network.advance(61)
        self.assertEqual(self.relay.control_messages, [])
        self.assertIn("cannot renew", " ".join(e["log_format"] for e in observer))
        self.assertEqual(listener.state, ListenerState.RECONNECTING)
        assert isinstance(listener.last_error, AuthorizationError)
        self.assertEqual(len(events), 1)
        self.assertIn("1008", events[0])

    def test_a_clock_past_the_tokens_expiry_does_not_renew_every_second(self) -> None:
        """
        A token this machine's clock calls lapsed (the relay's clock disagrees) is renewed on the lifetime.

        The delay came out negative and was raised to 1 s: a new token, equally "lapsed", every second.
        """
        from twisted.internet.task import Clock

        from relay.client.renewal import TokenRenewal

        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        listener = self.open_listener(token_ttl=100)
        clock = Clock()
        clock.advance(10_000)  # this machine's clock, far past what the token provider's says
        renewal = TokenRenewal(listener, clock, lambda task: None, token_ttl=100, renew_fraction=0.9)
        renewal.token = make_token("http://relay.test/hyco", ROOT_KEY_NAME, ROOT_KEY, ttl=60, now=0)
        renewal.schedule()
        (call,) = clock.getDelayedCalls()
        self.assertAlmostEqual(call.getTime() - clock.seconds(), 90.0)
        self.assertTrue(any("clock is past" in e["log_format"] for e in observer))
        renewal.cancel()

    def test_provider_failure_is_retried(self) -> None:
        """When the provider fails at renewal time, the listener logs it and tries again 10 s later."""
        listener = self.open_listener(token_ttl=100)
        provider = listener.token_provider
        calls: list[float] = []

        class Flaky:
            def get_token(self, audience: str, ttl: float) -> str:
                calls.append(ttl)
                if len(calls) == 1:
                    raise OSError("vault unavailable")
                return provider.get_token(audience, ttl)

        listener.token_provider = Flaky()  # type: ignore[assignment]
        self.network.advance(90)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(self.relay.control_messages, [])
        self.network.advance(10)
        self.assertEqual(len(self.relay.control_messages), 1)

    def test_current_token_from_a_caching_provider_is_asked_for_again(self) -> None:
        """
        A provider still caching the current token at renewal time is asked again until it has a new one.

        Token caches renew a few minutes before expiry (here 5): at 90 % of an hour 6 minutes are left, so
        the first answer is the current token. The listener warns once and stays registered.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        provider = CachingProvider(self.root_tokens(), self.reactor, renew_before=300)
        lost: list[BaseException | None] = []
        listener = HybridConnectionListener(
            "ws://relay.test:80", "hyco", provider, reactor=self.reactor, on_offline=lost.append
        )
        self.addCleanup(listener.close)
        opening = listener.open()
        self.network.flush()
        self.successResultOf(opening)
        self.network.advance(3700, step=5)
        self.assertEqual(lost, [], "the relay dropped the listener: its token expired")
        self.assertEqual(len(self.listen_times()), 1)
        self.assertEqual(len(self.relay.listeners[0].renewals), 1)
        self.assertGreater(provider.calls, 2)
        warnings = [e for e in observer if "cannot renew" in e["log_format"]]
        self.assertEqual(len(warnings), 1)


class HangingProvider:
    """Never answers the calls listed in C{hang} (counted from 1); answers the others from C{inner}."""

    def __init__(self, inner: Any, hang: set[int]) -> None:
        self.inner = inner
        self.hang = hang
        self.calls = 0
        self.cancelled = 0

    def get_token(self, audience: str, ttl: float) -> Any:
        self.calls += 1
        if self.calls in self.hang:
            return Deferred(self._cancelled)
        return succeed(self.inner.get_token(audience, ttl))

    def _cancelled(self, _: object) -> None:
        self.cancelled += 1


class ProviderTimeoutTests(RecordingListenerTestCase, SynchronousTestCase):
    """A token provider that never answers is given the open timeout, then counts as failed."""

    options = WebSocketOptions(open_timeout=5)
    backoff = Backoff(initial=1.0, factor=2.0, maximum=8.0, jitter=0.5)

    def test_open_fails_when_the_provider_hangs(self) -> None:
        """C{open()} fails with L{TimeoutError} after the open timeout; the provider's call is cancelled."""
        provider = HangingProvider(self.root_tokens(), {1})
        listener = self.make_listener(provider=provider, options=self.options)
        opening = listener.open()
        self.network.advance(4.5, step=0.5)
        self.assertNoResult(opening)
        self.network.advance(0.5)
        self.failureResultOf(opening, TimeoutError)
        self.assertEqual(provider.cancelled, 1)
        self.assertEqual(listener.state, ListenerState.NEW)
        self.assertEqual(self.listen_times(), [])

    def test_hung_reconnect_is_a_failed_attempt(self) -> None:
        """A reconnect whose provider hangs fails after the open timeout, is logged, and is retried."""
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        provider = HangingProvider(self.root_tokens(), {2})
        listener = self.open_listener(
            provider=provider, options=self.options, backoff=self.backoff, random=lambda: 0.0
        )
        self.relay.close_listeners()
        self.network.advance(1 + 4.5, step=0.5)  # the first attempt starts at 1 s, and hangs
        self.assertEqual(listener.state, ListenerState.RECONNECTING)
        self.assertEqual(provider.calls, 2)
        self.network.advance(0.5)
        self.assertIsInstance(listener.last_error, TimeoutError)
        failed = [e for e in observer if "attempt {attempt} failed" in e["log_format"]]
        self.assertEqual([e["attempt"] for e in failed], [1])
        self.assertIn("did not answer within 5 s", failed[0]["error"])
        self.network.advance(1.5, step=0.5)
        self.assertFalse(listener.is_online)
        self.network.advance(0.5)  # the next delay: 2 s
        self.assertTrue(listener.is_online)
        self.assertEqual(len(self.listen_times()), 2)

    def test_hung_renewal_is_retried(self) -> None:
        """A renewal whose provider hangs fails after the open timeout and is tried again 10 s later."""
        provider = HangingProvider(self.root_tokens(), {2})
        listener = self.open_listener(provider=provider, options=self.options, token_ttl=1000)
        self.network.advance(900 + 4.5, step=0.5)
        self.assertEqual(provider.calls, 2)
        self.network.advance(0.5)
        self.assertEqual(len(self.flushLoggedErrors(TimeoutError)), 1)
        self.assertEqual(provider.cancelled, 1)
        self.network.advance(9.5, step=0.5)
        self.assertEqual(self.relay.control_messages, [])
        self.network.advance(0.5)
        self.assertEqual(len(self.relay.listeners[0].renewals), 1)
        self.assertTrue(listener.is_online)


class CachingProvider:
    """A token cache: hands back its token until C{renew_before} seconds before it expires."""

    def __init__(self, inner: Any, clock: Any, *, renew_before: float) -> None:
        self.inner = inner
        self.clock = clock
        self.renew_before = renew_before
        self.token: str | None = None
        self.calls = 0

    def get_token(self, audience: str, ttl: float) -> str:
        self.calls += 1
        expiry = token_expiry(self.token) if self.token is not None else None
        if expiry is None or expiry - self.clock.seconds() < self.renew_before:
            self.token = self.inner.get_token(audience, ttl)
        return self.token


class ReconnectTests(RecordingListenerTestCase, SynchronousTestCase):
    backoff = Backoff(initial=1.0, factor=2.0, maximum=8.0, jitter=0.5)

    def test_reconnects_with_capped_jittered_backoff(self) -> None:
        """
        After a drop the listener redials after 0.75, 1.5, 3, 6, 6 s (random fixed at 0.5).

        It gets a fresh token each time, and starts the schedule over once it stayed online again.
        """
        listener, events = self.recorded(backoff=self.backoff, random=lambda: 0.5)
        self.relay.deny = lambda upgrade: (500, "Internal error") if upgrade.action == "listen" else None
        self.network.advance(5)
        self.relay.close_listeners(1001, "Shutting down TrackingId:x")
        self.network.advance(17.25, step=0.25)
        times = self.listen_times()[1:]
        self.assertEqual([round(t - 5, 2) for t in times], [0.75, 2.25, 5.25, 11.25, 17.25])
        self.assertEqual(listener.state, ListenerState.RECONNECTING)
        self.assertFalse(listener.is_online)

        self.relay.deny = None
        self.network.advance(6, step=0.25)
        self.assertTrue(listener.is_online)
        self.assertEqual(
            events, ["connecting", "online", "offline:ControlChannelLost"] + ["connecting"] * 6 + ["online"]
        )
        tokens = [u.headers["servicebusauthorization"] for u in self.relay.upgrades if u.action == "listen"]
        self.assertEqual(len(set(tokens)), len(tokens))

        self.network.advance(8)  # the longest delay: it stayed up
        self.relay.close_listeners()
        self.network.advance(0.75, step=0.25)
        self.assertTrue(listener.is_online, "the schedule restarted at the first delay")

    def test_backoff_goes_on_after_a_connection_that_did_not_stay_up(self) -> None:
        """
        A relay that takes the listener and drops it at once does not reset the schedule: it keeps growing.

        Before, every registration started it over at the first delay, so such a relay was redialled
        about once a second for ever, by every listener at once.
        """
        listener, _ = self.recorded(backoff=self.backoff, random=lambda: 0.0)
        self.network.advance(10)
        for _ in range(240):  # two minutes: every registration is dropped as soon as it is made
            if listener.is_online:
                self.relay.close_listeners(1011, "Internal error")
            self.network.advance(0.25, step=0.25)
        gaps = [
            round(b - a, 2) for a, b in zip(self.listen_times()[1:], self.listen_times()[2:], strict=False)
        ]
        self.assertEqual(gaps[:5], [2.0, 4.0, 8.0, 8.0, 8.0])

    def test_drop_without_close_frame(self) -> None:
        """A control channel cut without a close frame (1006) is redialled as well."""
        listener, _events = self.recorded(backoff=self.backoff)
        self.relay.drop_listeners()
        self.network.flush()
        assert isinstance(listener.last_error, ControlChannelLost)
        self.assertEqual(listener.last_error.code, 1006)
        self.network.advance(1)
        self.assertTrue(listener.is_online)

    def test_stops_on_404(self) -> None:
        """A 404 while reconnecting ends reconnecting for good and releases C{accept_connection}."""
        listener, events = self.recorded(backoff=self.backoff)
        waiting = listener.accept_connection()
        self.relay.deny = lambda upgrade: (404, "Entity deleted")
        self.relay.close_listeners(1001, "Entity deleted")
        self.network.advance(60)
        self.assertEqual(listener.state, ListenerState.OFFLINE)
        self.assertEqual(len(self.listen_times()), 2)
        self.assertEqual(events[-1], "offline:EndpointNotFoundError")
        self.assertIsInstance(listener.last_error, EndpointNotFoundError)
        self.assertIsNone(self.successResultOf(waiting))
        self.assertIsNone(self.successResultOf(listener.accept_connection()))
        self.successResultOf(listener.close())
        self.assertEqual(listener.state, ListenerState.CLOSED)

    def test_auth_failures_keep_backing_off(self) -> None:
        """401 and 403 are not final: the listener keeps trying, with delays growing to the cap."""
        listener, _ = self.recorded(backoff=self.backoff, random=lambda: 0.0)
        answers = iter([(401, "Unauthorized"), (403, "Forbidden")] * 10)
        self.relay.deny = lambda upgrade: next(answers)
        self.relay.close_listeners()
        self.network.advance(60)
        gaps = [
            round(b - a, 2) for a, b in zip(self.listen_times()[1:], self.listen_times()[2:], strict=False)
        ]
        self.assertEqual(gaps[:5], [2.0, 4.0, 8.0, 8.0, 8.0])
        self.assertEqual(listener.state, ListenerState.RECONNECTING)
        self.assertIsInstance(listener.last_error, AuthorizationError)

    def test_gives_up_on_the_statuses_given(self) -> None:
        """With 401 in C{give_up_statuses}, a refused key ends reconnecting as a 404 does; 403 does not."""
        listener, events = self.recorded(backoff=self.backoff, give_up_statuses=(401,))
        answers = iter([(403, "Quota exceeded"), (401, "Invalid token signature")])
        self.relay.deny = lambda upgrade: next(answers)
        self.relay.close_listeners()
        self.network.advance(60)
        self.assertEqual(listener.state, ListenerState.OFFLINE)
        self.assertEqual(len(self.listen_times()), 3)
        self.assertEqual(events[-1], "offline:AuthorizationError")
        assert isinstance(listener.last_error, AuthorizationError)
        self.assertEqual(listener.last_error.status_code, 401)

    def test_close_while_backing_off(self) -> None:
        """C{close()} during back-off cancels the pending attempt; no more dialling happens."""
        listener, events = self.recorded(backoff=self.backoff)
        self.relay.close_listeners()
        self.network.flush()
        closing = listener.close()
        self.network.advance(60)
        self.successResultOf(closing)
        self.assertEqual(len(self.listen_times()), 1)
        self.assertEqual(listener.state, ListenerState.CLOSED)
        self.assertEqual(events, ["connecting", "online", "offline:ControlChannelLost"])

    def test_logs_name_the_listener_never_the_token(self) -> None:
        """Reconnect events carry the listener's tracking id; no event carries a token."""
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        listener = self.open_listener(listener_id="trace-L", backoff=self.backoff)
        self.relay.close_listeners()
        self.network.advance(2)
        self.assertTrue(listener.is_online)
        self.assertIn("trace-L", {e.get("listener_id") for e in observer})
        self.assertNotIn("SharedAccessSignature", repr(list(observer)))


class CloseTests(RecordingListenerTestCase, SynchronousTestCase):
    def test_close(self) -> None:
        """
        Closing sends 1000 on the control channel, reports offline, and releases pending accepts.

        Queued connections are closed with 1001; a connection the application already took stays open.
        """
        listener, events = self.recorded()
        taken_sender = self.successResultOf(self.sender())
        taken = self.successResultOf(listener.accept_connection())
        queued_sender = self.successResultOf(self.sender())
        closing = listener.close()
        waiting = listener.accept_connection()
        self.network.flush()
        self.successResultOf(closing)
        self.assertEqual(self.relay.listener_closes, [(True, 1000, None)])
        self.assertEqual(events[-1], "offline:None")
        self.assertIsNone(self.successResultOf(waiting))
        self.assertEqual(queued_sender.close_code, 1001)
        assert taken is not None
        self.assertFalse(taken.closed)
        self.assertFalse(taken_sender.closed)
        self.successResultOf(listener.close())

    def test_second_close_waits_for_the_first(self) -> None:
        """A second close() fires only once the first has closed the control channel, and a later one at once."""
        listener = self.open_listener()
        first = listener.close()
        second = listener.close()
        self.assertNoResult(first)
        self.assertNoResult(second)
        self.network.flush()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(self.relay.listener_closes, [(True, 1000, None)])
        self.successResultOf(listener.close())

    def test_close_during_open(self) -> None:
        """Closing while the first connection is being made abandons it."""
        listener = self.make_listener()
        opening = listener.open()
        listener.close()
        self.network.flush()
        self.failureResultOf(opening)
        self.assertEqual(listener.state, ListenerState.CLOSED)
        self.assertEqual(self.relay.listeners, [])

    def test_close_with_sender_being_decided(self) -> None:
        """Closing while an accept handler is still deciding cancels the decision."""
        deciding: Deferred[bool] = Deferred()
        listener = self.open_listener(accept_handler=lambda _: deciding)
        sender = self.sender()
        listener.close()
        self.network.flush()
        self.assertTrue(deciding.called)
        self.network.advance(31)
        self.failureResultOf(sender)


class HttpCloseTests(FlowTestCase, SynchronousTestCase):
    """Closing a listener closes the rendezvous sockets its HTTP requests came on (the relay reuses them)."""

    def setUp(self) -> None:
        super().setUp()
        self.seen: list[str] = []
        self.answers: dict[str, Deferred[None]] = {}
        self.responses: dict[str, RelayedResponse] = {}

    async def app(self, request: RelayedRequest, response: RelayedResponse) -> None:
        """Answers 204 when the test fires C{self.answers[request.id]}."""
        self.seen.append(request.id)
        self.responses[request.id] = response
        self.answers[request.id] = Deferred()
        await self.answers[request.id]
        response.status_code = 204

    def assert_closed_by_the_listener(self, rendezvous: Any) -> None:
        self.assertEqual(
            (rendezvous.state, rendezvous.localCloseCode), (WebSocketProtocol.STATE_CLOSING, 1000)
        )

    def test_idle_request_rendezvous_is_closed_and_serves_no_more(self) -> None:
        """An idle request rendezvous is closed (1000) by close(); a request sent on it then is not served."""
        listener, dial = self.fetched(self.app)
        self.answers["f1"].callback(None)
        self.network.flush()
        closing = listener.close()
        self.network.flush()
        self.successResultOf(closing)
        self.assert_closed_by_the_listener(self.request_rendezvous())
        self.send_request(dial, "f2")
        self.assertEqual(self.seen, ["f1"])

    def test_busy_request_rendezvous_closes_once_its_response_is_done(self) -> None:
        """A response under way at close() is still delivered; its rendezvous closes (1000) after it."""
        listener, _dial = self.fetched(self.app)
        closing = listener.close()
        self.network.flush()
        self.successResultOf(closing)
        rendezvous = self.request_rendezvous()
        self.assertEqual(rendezvous.state, WebSocketProtocol.STATE_OPEN)
        self.answers["f1"].callback(None)
        self.network.flush()
        self.successResultOf(self.responses["f1"].finish())  # delivered: handed to the open socket
        self.assert_closed_by_the_listener(rendezvous)

    def test_request_rendezvous_opened_after_close_is_closed_at_once(self) -> None:
        """A fetch dialled before close() and opened after it serves nothing and closes (1000)."""
        listener = self.open_listener()
        HttpListener(listener, self.app, reactor=self.reactor)
        self.announce("f1")
        listener.close()
        [dial] = self.dials
        dial.accept()
        self.network.flush()
        self.send_request(dial, "f1")
        self.assert_closed_by_the_listener(self.request_rendezvous())
        self.assertEqual(self.seen, [])
