"""Tests for L{relay.client.listener}: opening, accepting and rejecting, the control channel."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from relay.auth import Grant, Rights, validate_token
from relay.client import (
    Accept,
    AcceptContext,
    AuthorizationError,
    ConnectError,
    EndpointNotFoundError,
    HybridConnectionClient,
    HybridConnectionListener,
    HybridWebSocket,
    ListenerState,
    Reject,
    RequestCommand,
)
from relay.hybrid.messages import RemoteEndpoint

from .fakes import ROOT_KEY, ROOT_KEY_NAME, FakeRelayTestCase


class ListenerTestCase(FakeRelayTestCase):
    def make_listener(
        self, path: str = "hyco", provider: Any = None, **kwargs: Any
    ) -> HybridConnectionListener:
        kwargs.setdefault("random", lambda: 0.5)
        listener = HybridConnectionListener(
            "ws://relay.test:80",
            path,
            provider if provider is not None else self.root_tokens(),
            reactor=self.reactor,
            **kwargs,
        )
        self.addCleanup(listener.close)
        return listener

    def open_listener(self, **kwargs: Any) -> HybridConnectionListener:
        listener = self.make_listener(**kwargs)
        d = listener.open()
        self.network.flush()
        self.successResultOf(d)
        return listener

    def sender(self, **kwargs: Any) -> Deferred[HybridWebSocket]:
        client = HybridConnectionClient(
            "ws://relay.test:80", "hyco", self.root_tokens(), reactor=self.reactor
        )
        d = client.connect(**kwargs)
        self.network.flush()
        return d

    def control(self) -> Any:
        """The relay's end of the (first) registered control channel."""
        return self.relay.listeners[0].protocol


class OpenTests(ListenerTestCase, SynchronousTestCase):
    def test_listen_url_and_token(self) -> None:
        """The listener dials C{/$hc/path?sb-hc-action=listen&sb-hc-id=..} with a Listen token header."""
        events: list[str] = []
        listener = self.make_listener(
            listener_id="L-1",
            on_connecting=lambda: events.append("connecting"),
            on_online=lambda: events.append("online"),
        )
        self.assertEqual(listener.state, ListenerState.NEW)
        d = listener.open()
        self.assertEqual(listener.state, ListenerState.CONNECTING)
        self.network.flush()
        self.successResultOf(d)
        [upgrade] = self.relay.upgrades
        self.assertEqual((upgrade.action, upgrade.path, upgrade.query), ("listen", "/$hc/hyco", ""))
        self.assertEqual(upgrade.params, {"sb-hc-action": "listen", "sb-hc-id": "L-1"})
        decision = validate_token(
            upgrade.headers["servicebusauthorization"],
            rules=self.relay.rules,
            namespace_hosts=["relay.test"],
            entity_path="hyco",
            needed=Rights.LISTEN,
            now=0,
        )
        self.assertIsInstance(decision, Grant)
        self.assertTrue(listener.is_online)
        self.assertIsNotNone(listener.control_channel)
        self.assertEqual(events, ["connecting", "online"])

    def test_connection_string(self) -> None:
        """A connection string supplies endpoint, path (EntityPath) and key."""
        listener = HybridConnectionListener(
            f"Endpoint=sb://relay.test:80/;SharedAccessKeyName={ROOT_KEY_NAME};SharedAccessKey={ROOT_KEY};"
            "EntityPath=team/app;UseDevelopmentEmulator=true",
            reactor=self.reactor,
        )
        self.reactor.advance(10)
        d = listener.open()
        self.network.flush()
        self.successResultOf(d)
        self.assertEqual(self.relay.upgrades[0].path, "/$hc/team/app")
        self.successResultOf(self.relay_close_and(listener.close()))

    def relay_close_and(self, d: Deferred[Any]) -> Deferred[Any]:
        self.network.flush()
        return d

    def test_a_token_provider_is_required(self) -> None:
        """Listeners always need credentials."""
        self.assertRaises(
            ValueError, HybridConnectionListener, "ws://relay.test", "hyco", reactor=self.reactor
        )

    def test_open_failures_carry_the_status(self) -> None:
        """A refused first attempt fails C{open()} with the status; the listener can be opened again."""
        missing = self.make_listener(path="nope")
        d = missing.open()
        self.network.flush()
        self.assertEqual(self.failureResultOf(d, EndpointNotFoundError).value.status_code, 404)
        self.assertEqual(missing.state, ListenerState.NEW)
        self.assertIsInstance(missing.last_error, EndpointNotFoundError)

        self.relay.deny = lambda upgrade: (401, "Unauthorized TrackingId:x")
        listener = self.make_listener()
        d = listener.open()
        self.network.flush()
        error = self.failureResultOf(d, AuthorizationError).value
        self.assertEqual((error.status_code, error.reason), (401, "Unauthorized TrackingId:x"))
        self.relay.deny = None
        d = listener.open()
        self.network.flush()
        self.successResultOf(d)
        self.assertTrue(listener.is_online)
        self.assertIsNone(listener.last_error)

    def test_open_only_once(self) -> None:
        """C{open()} after success or after C{close()} is a programming error."""
        listener = self.open_listener()
        self.assertRaises(RuntimeError, listener.open)
        listener.close()
        self.network.flush()
        self.assertRaises(RuntimeError, listener.open)


class AcceptTests(ListenerTestCase, SynchronousTestCase):
    def test_default_accepts_with_the_first_offered_subprotocol(self) -> None:
        """Without a handler every sender is accepted, with its first subprotocol, as .NET does."""
        listener = self.open_listener()
        sender = self.successResultOf(self.sender(subprotocols=["chat", "superchat"]))
        accepted = self.successResultOf(listener.accept_connection())
        assert accepted is not None
        self.assertEqual((sender.subprotocol, accepted.subprotocol), ("chat", "chat"))
        self.assertEqual(self.relay.upgrades[-1].protocols, ["chat"])

    def test_handler_sees_the_context(self) -> None:
        """The handler gets the connection id, headers, suffix, query, remote endpoint and offers."""
        seen: list[AcceptContext] = []

        def handler(context: AcceptContext) -> bool:
            seen.append(context)
            return True

        listener = self.open_listener(accept_handler=handler)
        self.successResultOf(
            self.sender(suffix="/a/b", query="x=1&y", headers={"X-Who": "me"}, connection_id="c-1")
        )
        [context] = seen
        self.assertEqual((context.connection_id, context.suffix, context.query), ("c-1", "/a/b", "x=1&y"))
        self.assertEqual(context.request_headers["x-who"], "me")
        self.assertEqual(context.remote_endpoint, RemoteEndpoint("203.0.113.7", context.remote_endpoint.port))
        self.assertEqual(context.offered_subprotocols, ())
        accepted = self.successResultOf(listener.accept_connection())
        assert accepted is not None
        self.assertIs(accepted.context, context)

    def test_async_handler_chooses_a_subprotocol(self) -> None:
        """A coroutine handler may pick any offered subprotocol, which both sides then use."""

        async def handler(context: AcceptContext) -> Accept:
            await succeed(None)
            return Accept(subprotocol="superchat")

        listener = self.open_listener(accept_handler=handler)
        sender = self.successResultOf(self.sender(subprotocols=["chat", "superchat"]))
        accepted = self.successResultOf(listener.accept_connection())
        assert accepted is not None
        self.assertEqual((sender.subprotocol, accepted.subprotocol), ("superchat", "superchat"))

    def test_handler_declines_subprotocols(self) -> None:
        """C{Accept(None)} accepts without a subprotocol although some were offered."""
        listener = self.open_listener(accept_handler=lambda _: Accept(None))
        sender = self.successResultOf(self.sender(subprotocols=["chat"]))
        self.assertIsNone(sender.subprotocol)
        self.assertEqual(self.relay.upgrades[-1].protocols, [])
        self.assertIsNotNone(self.successResultOf(listener.accept_connection()))

    def test_reject_by_returning_false(self) -> None:
        """C{False} rejects with 400 via the reject URL; the relay's 410 is the expected answer."""
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        listener = self.open_listener(accept_handler=lambda _: False)
        error = self.failureResultOf(self.sender(), ConnectError).value
        self.assertEqual((error.status_code, error.reason), (400, "Rejected by user code"))
        reject = self.relay.upgrades[-1]
        self.assertEqual(reject.action, "accept")
        self.assertEqual(reject.params["sb-hc-statuscode"], "400")
        self.assertEqual(reject.params["sb-hc-statusdescription"], "Rejected by user code")
        warnings = [
            e for e in observer if e["log_level"] >= LogLevel.warn and e["log_namespace"].startswith("relay.")
        ]
        self.assertEqual(warnings, [])
        self.assertIn("rejecting {connection_id} with {status}", [e["log_format"] for e in observer])
        self.assertNoResult(listener.accept_connection())

    def test_reject_by_raising(self) -> None:
        """A raised L{Reject} gives the sender that status and description."""

        def handler(context: AcceptContext) -> bool:
            raise Reject(403, "Not on the list\r\n")

        self.open_listener(accept_handler=handler)
        error = self.failureResultOf(self.sender(), ConnectError).value
        self.assertEqual((error.status_code, error.reason), (403, "Not on the list"))

    def test_reject_with_a_lone_surrogate(self) -> None:
        """
        A description with a lone surrogate (text decoded with C{surrogateescape}, say) still rejects.

        The surrogate is sent as C{?}. The reject URL could not be encoded: a traceback was logged, and
        the sender waited for the relay's window (30 s) to end in a 504.
        """

        def handler(context: AcceptContext) -> bool:
            raise Reject(403, "no \udcff here")

        self.open_listener(accept_handler=handler)
        error = self.failureResultOf(self.sender(), ConnectError).value
        self.assertEqual((error.status_code, error.reason), (403, "no ? here"))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_returned_reject(self) -> None:
        """A returned L{Reject} works like a raised one."""
        self.open_listener(accept_handler=lambda _: Reject(429, "Slow down"))
        self.assertEqual(self.failureResultOf(self.sender(), ConnectError).value.status_code, 429)

    def test_reject_validation(self) -> None:
        """Reject statuses must be 4xx or 5xx."""
        self.assertRaises(ValueError, Reject, 200)
        self.assertRaises(ValueError, Reject, 101)
        self.assertEqual(repr(Reject()), "Reject(400, 'Rejected by user code')")

    def test_failing_handler(self) -> None:
        """A handler that raises, or answers nonsense, rejects with 502 naming the tracking id."""
        self.open_listener(accept_handler=lambda _: 1 / 0)
        error = self.failureResultOf(self.sender(connection_id="t-9"), ConnectError).value
        self.assertEqual(error.status_code, 502)
        self.assertIn("TrackingId:t-9", error.reason)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_handler_whose_own_work_is_cancelled(self) -> None:
        """
        A handler that fails with CancelledError (its own lookup was cancelled) rejects with 502 at once.

        Only the listener closing may cancel a decision silently; the sender used to wait for the relay's
        timeout (504 after 30 s).
        """

        async def handler(context: AcceptContext) -> bool:
            lookup: Deferred[bool] = Deferred()
            lookup.cancel()
            return await lookup

        listener = self.open_listener(accept_handler=handler)
        error = self.failureResultOf(self.sender(connection_id="t-7"), ConnectError).value
        self.assertEqual(error.status_code, 502)
        self.assertIn("TrackingId:t-7", error.reason)
        self.assertTrue(listener.is_online)

    def test_nonsense_answers(self) -> None:
        """A subprotocol the sender did not offer, or a wrong type, is a handler bug: 502."""
        answers: list[Any] = [Accept("bogus"), "yes"]
        self.open_listener(accept_handler=lambda _: answers.pop(0))
        self.assertEqual(
            self.failureResultOf(self.sender(subprotocols=["chat"]), ConnectError).value.status_code, 502
        )
        self.assertEqual(self.failureResultOf(self.sender(), ConnectError).value.status_code, 502)

    def test_on_connection(self) -> None:
        """With C{on_connection}, accepted connections go to the callback instead of the queue."""
        got: list[HybridWebSocket] = []

        async def on_connection(connection: HybridWebSocket) -> None:
            got.append(connection)
            await connection.send("welcome")

        listener = self.open_listener(on_connection=on_connection)
        sender = self.successResultOf(self.sender())
        self.network.flush()
        self.assertEqual(len(got), 1)
        self.assertEqual(self.successResultOf(sender.receive()), "welcome")
        self.assertNoResult(listener.accept_connection())

    def test_on_connection_that_raises_closes_its_connection(self) -> None:
        """An C{on_connection} that raises is logged and its connection closed (1011): nobody serves it."""
        got: list[HybridWebSocket] = []

        def on_connection(connection: HybridWebSocket) -> None:
            got.append(connection)
            raise RuntimeError("application bug")

        self.open_listener(on_connection=on_connection)
        sender = self.successResultOf(self.sender())
        self.network.flush()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assert_closed_as_failed(got[0], sender)

    def test_on_connection_whose_coroutine_fails_closes_its_connection(self) -> None:
        """An C{on_connection} coroutine failing later closes its connection too (1011)."""
        got: list[HybridWebSocket] = []

        async def on_connection(connection: HybridWebSocket) -> None:
            got.append(connection)
            await connection.receive()
            raise RuntimeError("application bug")

        self.open_listener(on_connection=on_connection)
        sender = self.successResultOf(self.sender())
        self.network.flush()
        self.assertFalse(got[0].closed)
        sender.send("hello")
        self.network.flush()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assert_closed_as_failed(got[0], sender)

    def test_on_connection_whose_own_work_is_cancelled_closes_its_connection(self) -> None:
        """
        An C{on_connection} coroutine failing with its own L{CancelledError} is a failure like any other.

        Nothing cancels it but the application (the listener does not hold it), so its connection was left
        open, served by nobody, with nothing logged: its sender waited for ever.
        """
        got: list[HybridWebSocket] = []
        work: Deferred[None] = Deferred()

        async def on_connection(connection: HybridWebSocket) -> None:
            got.append(connection)
            await work

        self.open_listener(on_connection=on_connection)
        sender = self.successResultOf(self.sender())
        self.network.flush()
        self.assertFalse(got[0].closed)
        work.cancel()
        self.assertEqual(len(self.flushLoggedErrors(CancelledError)), 1)
        self.assert_closed_as_failed(got[0], sender)

    def assert_closed_as_failed(self, connection: HybridWebSocket, sender: HybridWebSocket) -> None:
        self.network.flush()
        self.assertTrue(connection.closed)
        self.assertTrue(sender.closed)
        self.assertEqual((sender.close_code, sender.close_reason), (1011, "listener application failed"))

    def test_on_connection_that_closed_its_connection_before_failing(self) -> None:
        """A connection the application closed itself keeps its own close code."""

        async def on_connection(connection: HybridWebSocket) -> None:
            connection.close(4000, "mine")
            raise RuntimeError("application bug")

        self.open_listener(on_connection=on_connection)
        sender = self.successResultOf(self.sender())
        self.network.flush()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual((sender.close_code, sender.close_reason), (4000, "mine"))

    def test_busy(self) -> None:
        """Beyond C{max_pending_connections} untaken connections, senders are rejected with 503."""
        listener = self.open_listener(max_pending_connections=1)
        self.successResultOf(self.sender())
        error = self.failureResultOf(self.sender(), ConnectError).value
        self.assertEqual(error.status_code, 503)
        self.assertIsNotNone(self.successResultOf(listener.accept_connection()))
        waiting = listener.accept_connection()
        self.successResultOf(self.sender())
        self.successResultOf(self.sender())
        self.assertIsNotNone(self.successResultOf(waiting))

    def test_cancelled_accept_loses_nothing(self) -> None:
        """Cancelling C{accept_connection} does not swallow the next connection."""
        listener = self.open_listener()
        waiting = listener.accept_connection()
        waiting.cancel()
        self.failureResultOf(waiting)
        self.successResultOf(self.sender(connection_id="kept"))
        accepted = self.successResultOf(listener.accept_connection())
        assert accepted is not None
        self.assertEqual(accepted.tracking_id, "kept")

    def test_expired_rendezvous(self) -> None:
        """When the address expired before the listener dialled it, nothing is queued; it is logged."""
        decided: Deferred[bool] = Deferred()
        listener = self.open_listener(accept_handler=lambda _: decided, accept_timeout=0)
        sender = self.sender()
        self.network.advance(31)
        self.assertEqual(self.failureResultOf(sender, ConnectError).value.status_code, 504)
        decided.callback(True)
        self.network.flush()
        self.assertEqual(self.relay.upgrades[-1].action, "accept")
        self.assertNoResult(listener.accept_connection())

    def test_on_accept_failed_hears_of_an_accepted_sender_that_never_arrived(self) -> None:
        """An accepted sender whose rendezvous failed is reported to C{on_accept_failed}, with its context."""
        decided: Deferred[bool] = Deferred()
        failed: list[AcceptContext] = []
        seen: list[AcceptContext] = []

        def handler(context: AcceptContext) -> Deferred[bool]:
            seen.append(context)
            return decided

        self.open_listener(accept_handler=handler, on_accept_failed=failed.append, accept_timeout=0)
        sender = self.sender(connection_id="late")
        self.network.advance(31)
        self.assertEqual(self.failureResultOf(sender, ConnectError).value.status_code, 504)
        decided.callback(True)
        self.network.flush()
        self.assertEqual(len(failed), 1)
        self.assertIs(failed[0], seen[0])

    def test_on_accept_failed_is_quiet_for_arrivals_and_rejections(self) -> None:
        """Senders that arrive, and senders the handler rejects, are not reported."""
        failed: list[AcceptContext] = []
        self.open_listener(
            accept_handler=lambda context: context.suffix != "/no", on_accept_failed=failed.append
        )
        self.successResultOf(self.sender())
        self.failureResultOf(self.sender(suffix="/no"), ConnectError)
        self.network.flush()
        self.assertEqual(failed, [])


class ControlChannelTests(ListenerTestCase, SynchronousTestCase):
    def test_unknown_and_malformed_messages_are_ignored(self) -> None:
        """Unknown commands, non-JSON text and stray binary messages do not disturb the listener."""
        listener = self.open_listener()
        for payload, binary in (
            (b'{"ping":{}}', False),
            (b"not json", False),
            (b"\x00", True),
            (b"[]", False),
        ):
            self.control().sendMessage(payload, isBinary=binary)
        self.network.flush()
        self.assertTrue(listener.is_online)
        self.successResultOf(self.sender())
        self.assertIsNotNone(self.successResultOf(listener.accept_connection()))

    def test_an_accept_address_that_is_no_url(self) -> None:
        """
        An accept address urlsplit refuses (an unclosed "[" in the host): decided about, dialled, failed.

        Before, reading its path raised ValueError in the accept task: the handler never heard of the sender,
        nor did on_accept_failed, and the log showed a traceback.
        """
        seen: list[AcceptContext] = []
        failed: list[AcceptContext] = []

        def handler(context: AcceptContext) -> bool:
            seen.append(context)
            return True

        listener = self.open_listener(accept_handler=handler, on_accept_failed=failed.append)
        address = "wss://[::1/$hc/hyco?sb-hc-action=accept&sb-hc-id=odd"
        self.control().sendMessage(b'{"accept":{"address":"%s","id":"odd"}}' % address.encode())
        self.network.flush()
        self.assertEqual([(c.connection_id, c.suffix, c.query) for c in seen], [("odd", "", "")])
        self.assertEqual(failed, seen)
        self.assertTrue(listener.is_online)
        self.successResultOf(self.sender())

    def test_requests_are_ignored_without_a_handler(self) -> None:
        """An HTTP request and its body message are consumed and dropped; the next accept works."""
        listener = self.open_listener()
        request = {
            "request": {
                "address": "ws://relay.test:80/$hc/hyco?sb-hc-action=request",
                "id": "r1",
                "method": "POST",
                "body": True,
            }
        }
        self.control().sendMessage(json.dumps(request).encode(), isBinary=False)
        self.control().sendMessage(b'{"accept":{"address":"not a command, a body"}}', isBinary=True)
        self.network.flush()
        self.successResultOf(self.sender())
        self.assertIsNotNone(self.successResultOf(listener.accept_connection()))
        self.assertEqual(len(self.relay.upgrades), 3, "listen, connect, accept: no rendezvous for the body")

    def test_request_handler_seam(self) -> None:
        """A request handler gets each request with its body (or C{None} when there is none)."""
        listener = self.open_listener()
        got: list[tuple[RequestCommand, bytes | None]] = []
        listener.request_handler = lambda command, body: got.append((command, body))
        small = {"request": {"address": "ws://r/a", "id": "r1", "method": "PUT", "body": True}}
        rendezvous = {"request": {"address": "ws://r/b", "id": "r2"}}
        self.control().sendMessage(json.dumps(small).encode(), isBinary=False)
        self.control().sendMessage(b"payload", isBinary=True)
        self.control().sendMessage(json.dumps(rendezvous).encode(), isBinary=False)
        self.network.flush()
        self.assertEqual(
            [(c.id, c.fields.get("method"), body) for c, body in got],
            [("r1", "PUT", b"payload"), ("r2", None, None)],
        )

    def test_requests_after_close_are_not_served(self) -> None:
        """
        A request the relay sent before it saw the listener's close is not served, as an accept is not.

        The relay fails the requests due on a control channel that closes (502 to their senders); the
        application was run for them all the same, after C{close()}, and answered over a rendezvous.
        """
        listener = self.open_listener()
        got: list[RequestCommand] = []
        listener.request_handler = lambda command, body: got.append(command)
        closing = listener.close()
        request = {"request": {"address": "ws://r/a", "id": "r1", "method": "GET"}}
        self.control().sendMessage(json.dumps(request).encode(), isBinary=False)
        self.network.flush()
        self.successResultOf(closing)
        self.assertEqual(got, [])

    def test_body_missing(self) -> None:
        """
        A text message where a body was announced leaves the request without body.

        The text message is then processed as a command.
        """
        listener = self.open_listener()
        got: list[bytes | None] = []
        listener.request_handler = lambda command, body: got.append(body)
        self.control().sendMessage(
            json.dumps({"request": {"address": "ws://r", "id": "r", "body": True}}).encode()
        )
        self.network.flush()
        self.successResultOf(self.sender())
        self.assertEqual(got, [None])
        self.assertIsNotNone(self.successResultOf(listener.accept_connection()))
