"""Tests for hybrid connection routing: admission, quotas, pairing, tickets and throttling."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from relay.auth import Rights, SharedAccessRule, make_token
from relay.entities import HYBRID_CONNECTION, Entity, HybridConnectionSettings, Namespace
from relay.errors import ErrorKind, RelayError
from relay.hybrid import router as router_module
from relay.hybrid.addressing import split_target
from relay.hybrid.messages import RemoteEndpoint
from relay.hybrid.router import HybridConnectionRouter, IListenerChannel
from relay.listeners import ListenerRegistry, RoundRobinChooser
from relay.store import MemoryGatewayStore
from relay.throttle import FailureThrottle

from .fakes import FakeListenerChannel

KEY = "k" * 32
RULE = SharedAccessRule("root", KEY, Rights.LISTEN | Rights.SEND | Rights.MANAGE)
NS = Namespace("ns", ("relay.example",), (RULE,))
AUTO = Namespace("dev", ("*",), (RULE,), auto_create=True)


def token(path: str = "hyco", host: str = "relay.example", now: float = 0.0, ttl: float = 3600) -> str:
    return make_token(f"http://{host}/{path}", "root", KEY, ttl=ttl, now=now)


class RouterTests(SynchronousTestCase):
    """Admission and sender pairing, with fake control channels."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = store = MemoryGatewayStore(
            [
                (
                    NS,
                    [
                        Entity("hyco", HYBRID_CONNECTION, settings=HybridConnectionSettings(max_listeners=2)),
                        Entity(
                            "open",
                            HYBRID_CONNECTION,
                            settings=HybridConnectionSettings(requires_client_authorization=False),
                        ),
                        Entity("soap", "oneway"),
                    ],
                ),
                (AUTO, []),
            ]
        )
        self.registry: ListenerRegistry[IListenerChannel] = ListenerRegistry(RoundRobinChooser())
        self.router = HybridConnectionRouter(store, self.registry, self.clock, "wss://relay.example", 30.0)

    def admit(
        self,
        path: str = "/hyco",
        tokens: list[str] | None = None,
        needed: Rights = Rights.LISTEN,
        host: str = "relay.example",
    ):
        return self.router.admit(
            host,
            path,
            [token(now=self.clock.seconds())] if tokens is None else tokens,
            needed,
            listener=needed == Rights.LISTEN,
        )

    def assertRefused(self, kind: ErrorKind, f, *args, **kwargs) -> RelayError:
        with self.assertRaises(RelayError) as ctx:
            f(*args, **kwargs)
        self.assertEqual(ctx.exception.kind.status, kind.status, ctx.exception)
        return ctx.exception

    def test_grants_are_remembered_until_the_token_expires(self) -> None:
        """A token that passed is not checked again for the same entity and right; expired, it fails."""
        presented = [token(now=self.clock.seconds(), ttl=60)]
        checks: list[object] = []
        real = router_module.validate_any

        def counting(*args: object, **kwargs: object) -> object:
            checks.append(args)
            return real(*args, **kwargs)  # type: ignore[arg-type]

        self.patch(router_module, "validate_any", counting)
        first = self.admit(tokens=presented, needed=Rights.SEND)
        second = self.admit(tokens=presented, needed=Rights.SEND)
        self.assertEqual((len(checks), first.grant), (1, second.grant))
        self.admit(tokens=presented, needed=Rights.LISTEN)  # another right: checked
        self.assertRefused(ErrorKind.NOT_FOUND, self.admit, "/nope", presented, Rights.SEND)
        self.assertEqual(len(checks), 2)
        self.clock.advance(61)
        self.assertRefused(ErrorKind.UNAUTHORIZED, self.admit, tokens=presented, needed=Rights.SEND)

    def test_padded_tokens_are_not_remembered(self) -> None:
        """A valid token padded with unsigned fields admits, but is not kept: the cache stays small in bytes."""
        presented = token(now=self.clock.seconds())
        for i in range(20):
            padded = f"{presented}&x{i}={'p' * 32 * 1024}"
            self.assertIsNotNone(self.admit(tokens=[padded], needed=Rights.SEND).grant)
        self.admit(tokens=[presented], needed=Rights.SEND)
        self.assertEqual([key[0] for key in self.router._grants], [(presented,)])

    def test_refusals_are_not_remembered(self) -> None:
        """A bad token is checked (and refused) every time."""
        bad = [token(now=self.clock.seconds()) + "x"]
        for _ in range(2):
            self.assertRefused(ErrorKind.UNAUTHORIZED, self.admit, tokens=bad, needed=Rights.SEND)

    def test_fake_is_verified(self) -> None:
        """The fake control channel provides the interface routing uses."""
        self.assertTrue(verifyObject(IListenerChannel, FakeListenerChannel("l")))

    def test_admission_outcomes(self) -> None:
        """Unknown names are 404, wrong kinds 404, bad tokens 401, missing rights 403."""
        self.assertRefused(ErrorKind.NOT_FOUND, self.admit, "/nothing")
        self.assertRefused(ErrorKind.NOT_FOUND, self.admit, "/soap")
        self.assertRefused(ErrorKind.UNAUTHORIZED, self.admit, "/hyco", [])
        self.assertRefused(ErrorKind.UNAUTHORIZED, self.admit, "/hyco", ["garbage"])
        self.assertRefused(ErrorKind.FORBIDDEN, self.admit, "/hyco", [token("other")])
        expired = token(now=self.clock.seconds() - 7200)
        self.assertRefused(ErrorKind.UNAUTHORIZED, self.admit, "/hyco", [expired])
        admission = self.admit("/hyco/suffix/x", needed=Rights.SEND)
        self.assertEqual((admission.entity.name, admission.match.suffix), ("hyco", "/suffix/x"))

    def test_anonymous_senders(self) -> None:
        """An HC without client authorization admits senders with no token, but not with a bad one."""
        self.assertIsNone(self.admit("/open", [], Rights.SEND).grant)
        self.assertRefused(
            ErrorKind.UNAUTHORIZED,
            self.admit,
            "/open",
            ["SharedAccessSignature sr=x&sig=AAAA&se=1&skn=root"],
            Rights.SEND,
        )
        self.assertRefused(ErrorKind.UNAUTHORIZED, self.admit, "/open", [])  # listeners always need one

    def test_auto_create(self) -> None:
        """In an auto-create namespace the first listener creates the hybrid connection; senders do not."""
        self.assertRefused(
            ErrorKind.NOT_FOUND, self.admit, "/newhc", [token("newhc", "any.host")], Rights.SEND, "any.host"
        )
        admission = self.admit("/newhc", [token("newhc", "any.host")], Rights.LISTEN, "any.host")
        self.assertTrue(admission.entity.dynamic)
        self.assertEqual(
            self.admit("/newhc", [token("newhc", "any.host")], Rights.SEND, "any.host").entity,
            admission.entity,
        )

    def test_listener_names_its_hybrid_connection_exactly(self) -> None:
        """A listener's path is the whole name: C{hyco/extra} is unknown (404), not a listener of C{hyco}."""
        presented = [token(now=self.clock.seconds())]
        self.assertRefused(ErrorKind.NOT_FOUND, self.admit, "/hyco/extra", presented)
        self.assertRefused(ErrorKind.NOT_FOUND, self.admit, "/soap/extra", [token("soap/extra")])
        self.assertEqual(self.admit("/HYCO/", presented).entity.name, "hyco")
        self.assertEqual(self.admit("/hyco/extra", presented, Rights.SEND).match.suffix, "/extra")

    def test_auto_create_below_an_existing_name(self) -> None:
        """With auto-create, the first listener of C{team/app} creates it even when C{team} exists."""
        host = "any.host"
        team = self.admit("/team", [token("team", host)], Rights.LISTEN, host)
        app = self.admit("/team/app", [token("team/app", host)], Rights.LISTEN, host)
        self.assertEqual((team.entity.name, app.entity.name, app.match.suffix), ("team", "team/app", ""))
        self.assertIs(self.store.get(AUTO, "team/app"), app.entity)
        self.assertIs(self.admit("/team/app/x", [token("team", host)], Rights.SEND, host).entity, app.entity)
        self.store.add(AUTO, Entity("svc", "oneway"))
        self.assertRefused(ErrorKind.NOT_FOUND, self.admit, "/svc/x", [token("svc/x", host)], host=host)
        self.assertIsNone(self.store.get(AUTO, "svc/x"))

    def test_auto_create_within_the_namespace_quota(self) -> None:
        """Past the namespace's entity quota the first listener of a new name is refused: 403, nothing added."""
        self.store.max_entities = 2
        for name in ("first", "second"):
            self.admit(f"/{name}", [token(name, "any.host")], Rights.LISTEN, "any.host")
        self.assertRefused(
            ErrorKind.QUOTA_EXCEEDED,
            self.admit,
            "/third",
            [token("third", "any.host")],
            Rights.LISTEN,
            "any.host",
        )
        self.assertIsNone(self.store.get(AUTO, "third"))
        self.admit("/first", [token("first", "any.host")], Rights.LISTEN, "any.host")  # existing ones: fine

    def test_refused_listener_creates_nothing(self) -> None:
        """In an auto-create namespace a listener without a valid token is refused and leaves no entity."""
        host = "any.host"
        wrong_key = make_token(f"http://{host}/ghost", "root", "w" * 32, now=self.clock.seconds())
        for kind, tokens in [
            (ErrorKind.UNAUTHORIZED, []),
            (ErrorKind.UNAUTHORIZED, [wrong_key]),
            (ErrorKind.FORBIDDEN, [token("elsewhere", host, now=self.clock.seconds())]),
        ]:
            self.assertRefused(kind, self.admit, "/ghost", tokens, Rights.LISTEN, host)
            self.assertIsNone(self.store.get(AUTO, "ghost"))
        self.assertEqual(self.store.entities(AUTO), [])

    def test_authorized_listener_creates_once_checked(self) -> None:
        """An authorized first listener still creates the hybrid connection, its token checked only once."""
        checks: list[object] = []
        real = router_module.validate_any

        def counting(*args: object, **kwargs: object) -> object:
            checks.append(kwargs["entity_path"])
            return real(*args, **kwargs)  # type: ignore[arg-type]

        self.patch(router_module, "validate_any", counting)
        presented = [token("team/app", "any.host", now=self.clock.seconds())]
        admission = self.admit("/team/app/", presented, Rights.LISTEN, "any.host")
        self.assertEqual((admission.entity.name, admission.match.suffix), ("team/app", ""))
        self.assertTrue(admission.entity.dynamic)
        self.assertIsNotNone(admission.grant)
        self.assertIs(self.store.get(AUTO, "team/app"), admission.entity)
        self.assertEqual(checks, ["team/app"])

    def test_dynamic_hybrid_connection_goes_with_its_last_listener(self) -> None:
        """
        An auto-created hybrid connection is removed when its last listener leaves; a configured one stays.

        Every name a listener ever created used to stay in the store (and in the sampled gauges) for good.
        """
        host = "any.host"
        for name in ("session-1", "session-2", "session-3"):
            presented = [token(name, host, now=self.clock.seconds())]
            admission = self.admit(f"/{name}", presented, Rights.LISTEN, host)
            first, second = FakeListenerChannel("a"), FakeListenerChannel("b")
            self.router.register_listener(admission, first)
            self.router.register_listener(admission, second)
            self.router.unregister_listener(admission, first)
            self.assertIs(self.store.get(AUTO, name), admission.entity)
            self.router.unregister_listener(admission, second)
            self.assertIsNone(self.store.get(AUTO, name))
            self.assertEqual(self.registry.count(AUTO, admission.entity), 0)
        self.assertEqual(self.store.entities(AUTO), [])
        again = self.admit("/session-1", [token("session-1", host, now=self.clock.seconds())], host=host)
        self.assertIs(self.store.get(AUTO, "session-1"), again.entity)
        configured = self.admit()
        channel = FakeListenerChannel("c")
        self.router.register_listener(configured, channel)
        self.router.unregister_listener(configured, channel)
        self.assertIs(self.store.get(NS, "hyco"), configured.entity)

    def test_quota(self) -> None:
        """The third listener of an HC limited to two is refused with 403 quota exceeded."""
        admission = self.admit()
        self.router.register_listener(admission, FakeListenerChannel("a"))
        self.router.register_listener(admission, FakeListenerChannel("b"))
        error = self.assertRefused(
            ErrorKind.QUOTA_EXCEEDED, self.router.register_listener, admission, FakeListenerChannel("c")
        )
        self.assertIn("Quota exceeded", error.message)

    def connect(
        self, raw_target: str = "/$hc/hyco/chat?room=1&sb-hc-action=connect", connection_id: str | None = None
    ):
        admission = self.admit("/hyco/chat", needed=Rights.SEND)
        target = split_target(raw_target)
        return self.router.connect_sender(
            admission,
            target,
            "/hyco/chat",
            {"Sec-WebSocket-Key": "k"},
            RemoteEndpoint("10.0.0.1", 5),
            ["chat"],
            connection_id=connection_id,
        )

    def test_no_listener(self) -> None:
        """A sender with nobody listening is refused with 404."""
        self.assertRefused(ErrorKind.NO_LISTENER, self.connect)

    def test_accept_message(self) -> None:
        """The chosen listener gets an accept with the address, id, headers and remote endpoint."""
        channel = FakeListenerChannel("a")
        self.router.register_listener(self.admit(), channel)
        ticket = self.connect(connection_id="tracking-1")
        (payload,) = channel.sent
        accept = json.loads(payload)["accept"]
        self.assertEqual(accept["id"], "tracking-1")
        self.assertEqual(
            accept["address"],
            "wss://relay.example/$hc/hyco/chat?room=1&sb-hc-action=accept&sb-hc-id=tracking-1",
        )
        self.assertEqual(accept["connectHeaders"], {"Sec-WebSocket-Key": "k"})
        self.assertEqual(accept["remoteEndpoint"], {"address": "10.0.0.1", "port": 5})
        self.assertEqual(channel.pending, [ticket])
        self.assertIs(self.router.claim("tracking-1"), ticket)

    def test_sender_chosen_id_gets_secret_key(self) -> None:
        """A sender-chosen id is guessable, so the address carries an extra random key, and the id alone claims nothing."""
        channel = FakeListenerChannel("a")
        self.router.register_listener(self.admit(), channel)
        ticket = self.connect("/$hc/hyco/chat?sb-hc-action=connect&sb-hc-id=my-trace")
        accept = json.loads(channel.sent[0])["accept"]
        self.assertEqual(accept["id"], "my-trace")
        self.assertIn(f"sb-hc-key={ticket.key}", accept["address"])
        self.assertRefused(ErrorKind.RENDEZVOUS_UNKNOWN, self.router.claim, "my-trace")
        self.assertIs(self.router.claim(ticket.key), ticket)

    def test_single_use_and_expiry(self) -> None:
        """An address is claimable once; an unclaimed one fails its sender with 504 after the timeout."""
        channel = FakeListenerChannel("a")
        self.router.register_listener(self.admit(), channel)
        ticket = self.connect()
        self.router.claim(ticket.key)
        self.assertRefused(ErrorKind.RENDEZVOUS_UNKNOWN, self.router.claim, ticket.key)
        late = self.connect()
        self.clock.advance(30)
        failure = self.failureResultOf(late.outcome, RelayError)
        self.assertEqual(failure.value.status, 504)
        self.assertRefused(ErrorKind.RENDEZVOUS_UNKNOWN, self.router.claim, late.key)

    def test_expiry_names_the_tickets_own_window(self) -> None:
        """A ticket opened with its own timeout expires after it, and its log line and error say that one."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        ticket = self.router.rendezvous.open("late-answer", timeout=90.0)
        self.clock.advance(89)
        self.assertNoResult(ticket.outcome)
        self.clock.advance(1)
        self.assertIn("within 90s", self.failureResultOf(ticket.outcome, RelayError).value.message)
        [line] = [formatEvent(e) for e in events if "expired" in formatEvent(e)]
        self.assertEqual(line, "rendezvous late-answer expired: no listener came within 90s")

    def test_refusing_channel_is_skipped(self) -> None:
        """If the chosen channel cannot take the accept, another listener gets it."""
        bad, good = FakeListenerChannel("bad", accepts=False), FakeListenerChannel("good")
        admission = self.admit()
        self.router.register_listener(admission, bad)
        self.router.register_listener(admission, good)
        self.connect()
        self.assertEqual(len(good.sent), 1)
        self.assertEqual(len(self.router.rendezvous), 1)

    def test_round_robin(self) -> None:
        """Senders are spread over listeners by the injected chooser."""
        channels = [FakeListenerChannel(str(i)) for i in range(2)]
        for channel in channels:
            self.router.register_listener(self.admit(), channel)
        for _ in range(4):
            self.connect()
        self.assertEqual([len(c.sent) for c in channels], [2, 2])


class ThrottleTests(SynchronousTestCase):
    """Per-source delays for refused listeners."""

    def test_growth_cap_and_decay(self) -> None:
        """Delays double per failure up to the cap, and reset after a quiet window."""
        clock = Clock()
        throttle = FailureThrottle(clock, base=0.5, maximum=4, window=60)
        self.assertEqual([throttle.failure_delay("a") for _ in range(6)], [0.5, 1, 2, 4, 4, 4])
        self.assertEqual(throttle.failure_delay("b"), 0.5)
        clock.advance(61)
        self.assertEqual(throttle.failure_delay("a"), 0.5)
        throttle.forget("a")
        self.assertEqual(throttle.failure_delay("a"), 0.5)

    def test_bounded(self) -> None:
        """The table and the number of held connections per source are bounded."""
        throttle = FailureThrottle(Clock(), max_sources=3, max_pending_per_source=2)
        for i in range(10):
            throttle.failure_delay(f"s{i}")
        self.assertEqual(len(throttle._failures), 3)
        self.assertTrue(throttle.begin_wait("x"))
        self.assertTrue(throttle.begin_wait("x"))
        self.assertFalse(throttle.begin_wait("x"))
        throttle.end_wait("x")
        self.assertTrue(throttle.begin_wait("x"))
        self.assertFalse(throttle.begin_wait("x"))
        for _ in range(2):
            throttle.end_wait("x")
        self.assertEqual(throttle._pending, {})  # a source with nothing waiting takes no memory
        default = FailureThrottle(Clock())
        self.assertEqual([default.begin_wait("y") for _ in range(65)].count(True), 64)

    def test_least_recently_failing_is_forgotten(self) -> None:
        """A full table forgets the source whose last failure is oldest, not the one failing now."""
        clock = Clock()
        throttle = FailureThrottle(clock, max_sources=2)
        for source in ("a", "b", "a", "c"):
            throttle.failure_delay(source)
            clock.advance(1)
        self.assertEqual(list(throttle._failures), ["a", "c"])
        self.assertEqual(throttle.failure_delay("a"), 4)

    def test_window_on_a_real_clock(self) -> None:
        """On a wall clock (large times), failures up to C{window} seconds apart (60 s by default) still add up."""
        clock = Clock()
        clock.advance(1_700_000_000)
        throttle = FailureThrottle(clock)
        delays = []
        for _ in range(3):
            delays.append(throttle.failure_delay("a"))
            clock.advance(60)
        self.assertEqual(delays, [1, 2, 4])
        clock.advance(0.5)
        self.assertEqual(throttle.failure_delay("a"), 1)

    def test_zero_base_turns_the_delay_off(self) -> None:
        """C{listener_failure_delay = 0} answers refusals at once, however often they come."""
        throttle = FailureThrottle(Clock(), base=0, maximum=0)
        self.assertEqual([throttle.failure_delay("a") for _ in range(3)], [0.0, 0.0, 0.0])


class ControlBacklogTests(SynchronousTestCase):
    """A listener that stops reading its control channel gets no more work."""

    def test_backlogged_channel_is_skipped(self) -> None:
        """Past the backlog limit the channel refuses announcements, so the router tries another listener."""
        from relay.hybrid.control import MAX_CONTROL_BACKLOG

        protocol = ProtocolStandIn()
        channel = control_channel_over(protocol)
        self.assertTrue(channel.send_control(b"{}"))
        protocol.transport._tempDataLen = MAX_CONTROL_BACKLOG + 1
        self.assertFalse(channel.send_control(b"{}"))
        self.assertFalse(channel.send_request(b'{"request":{}}', b"body"))
        self.assertEqual((protocol.sent, protocol.writes), ([b"{}"], []))

    def test_request_goes_at_once_with_its_body(self) -> None:
        """A relayed HTTP request and its body are one write, handed to the kernel at once."""
        protocol = ProtocolStandIn()
        channel = control_channel_over(protocol)
        self.assertTrue(channel.send_request(b"{1}", b"body"))
        self.assertTrue(channel.send_request(b"{2}", b""))
        self.assertEqual(
            protocol.writes,
            [(((b"{1}", False), (b"body", True)), True), (((b"{2}", False),), True)],
        )
        channel.closing = True
        self.assertFalse(channel.send_request(b"{3}", b""))
        self.assertEqual(len(protocol.writes), 2)


class ProtocolStandIn:
    """What a gateway L{ControlChannel} uses of its WebSocket protocol; it records what it is asked to send."""

    STATE_OPEN = 3

    def __init__(self) -> None:
        self.state = self.STATE_OPEN
        self.transport = SimpleNamespace(dataBuffer=b"", offset=0, _tempDataLen=0)
        self.sent: list[bytes] = []
        self.writes: list[tuple[tuple[tuple[bytes, bool], ...], bool]] = []

    def send_whole(self, payload: bytes, is_binary: bool) -> None:
        self.sent.append(payload)

    def send_wholes(self, messages: tuple[tuple[bytes, bool], ...], at_once: bool = False) -> None:
        self.writes.append((messages, at_once))


def control_channel_over(protocol: ProtocolStandIn) -> Any:
    """A gateway control channel for a listener of C{hyco}, over C{protocol}."""
    from relay.hybrid.control import ControlChannel
    from relay.hybrid.router import Admission

    clock = Clock()
    store = MemoryGatewayStore([(NS, [Entity("hyco", HYBRID_CONNECTION)])])
    router = HybridConnectionRouter(store, ListenerRegistry(), clock, "wss://relay.example")
    admission = Admission(NS, store.match(NS, "/hyco"), None)  # type: ignore[arg-type]
    return ControlChannel(protocol, router, admission, "l1", "relay.example", clock)
