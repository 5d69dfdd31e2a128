"""Tests for L{bindings.names}: admission, listener policy, dynamic names and the registry view."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bindings.faultcodes import RelayFault, RelayFaultError
from bindings.multicast import MulticastRouter
from bindings.names import ListenerPolicy, NameTable
from bindings.requestreply import RequestReplyRouter
from bindings.settings import MULTICAST, ONEWAY, REQUEST_REPLY, BindingEntitySettings, ClientAuth, Discovery
from relay.auth import Rights, SharedAccessRule, make_token
from relay.entities import HYBRID_CONNECTION, Entity, HybridConnectionSettings, Namespace
from relay.listeners import RoundRobinChooser
from relay.store import MemoryGatewayStore

from .bindings_fakes import FakeConnection

KEY = "names-key-0123456789abcdefghij"


def policy(kind: str = REQUEST_REPLY, contract_hash: str | None = "h1", **changes: object) -> ListenerPolicy:
    values: dict[str, object] = {
        "kind": kind,
        "client_auth": ClientAuth.TOKEN,
        "discovery": Discovery.PRIVATE,
        "display_name": None,
        "contract": object(),
        "contract_hash": contract_hash,
        **changes,
    }
    return ListenerPolicy(**values)  # type: ignore[arg-type]


class NameTableTests(SynchronousTestCase):
    """One namespace with a persistent request/reply name, a hybrid connection and dynamic names."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.namespace = Namespace(
            "ns",
            ("relay.example", "alias.example"),
            (SharedAccessRule("root", KEY, Rights.LISTEN | Rights.SEND | Rights.MANAGE),),
            auto_create=True,
        )
        self.calc = Entity(
            "calc",
            REQUEST_REPLY,
            settings=BindingEntitySettings(kind=REQUEST_REPLY, max_listeners=2, discovery=Discovery.PUBLIC),
        )
        self.store = MemoryGatewayStore(
            [
                (
                    self.namespace,
                    (self.calc, Entity("hyco", HYBRID_CONNECTION, settings=HybridConnectionSettings())),
                )
            ]
        )
        self.names = NameTable(
            self.store, self.clock, RoundRobinChooser(), lambda: "https://relay.example:8443/base/"
        )

    def test_resolve(self) -> None:
        """Senders reach binding names only; listeners may name an unknown name where names are auto-created."""
        namespace, match = self.names.resolve("relay.example", "calc")
        self.assertEqual((namespace, match.entity), (self.namespace, self.calc))
        for path in ("hyco", "nothing"):
            self.assertRaises(RelayFaultError, self.names.resolve, "relay.example", path)
        self.assertEqual(self.names.listener_target("relay.example", "new/name")[1:], ("new/name", None))
        self.assertRaises(RelayFaultError, self.names.listener_target, "relay.example", "hyco")
        self.assertRaises(RelayFaultError, self.names.listener_target, "unknown.example", "calc")

    def test_public_url(self) -> None:
        """Scheme, port and base path from the gateway's URL; the host from the namespace."""
        self.assertEqual(
            self.names.public_url(self.namespace, "calc"), "https://relay.example:8443/base/calc"
        )
        other = Namespace("o", ("other.example",))
        self.assertEqual(self.names.public_url(other, "x"), "https://other.example:8443/base/x")

    def test_authorize(self) -> None:
        """Tokens are validated for the right; anonymous senders only where allowed, bad tokens never."""
        token = make_token("http://relay.example/calc", "root", KEY, now=self.clock.seconds())
        grant = self.names.authorize(self.namespace, "calc", (), "relay.example", [token], Rights.SEND)
        self.assertEqual(grant.key_name, "root")  # type: ignore[union-attr]
        self.assertIsNone(
            self.names.authorize(
                self.namespace, "calc", (), "relay.example", [], Rights.SEND, anonymous_ok=True
            )
        )
        for tokens, anonymous in (
            ([], False),
            (["SharedAccessSignature sr=a&sig=AA%3D%3D&se=1&skn=root"], True),
        ):
            error = self.assertRaises(
                RelayFaultError,
                self.names.authorize,
                self.namespace,
                "calc",
                (),
                "relay.example",
                tokens,
                Rights.SEND,
                anonymous,
            )
            self.assertIs(error.kind, RelayFault.UNAUTHORIZED)

    def test_policy(self) -> None:
        """The first listener sets the contract; others must match it and the persistent settings."""
        first, second = FakeConnection("a"), FakeConnection("b")
        bound, _ = self.names.register(self.namespace, "calc", policy(discovery=Discovery.PUBLIC), first)
        self.assertIsInstance(bound.router, RequestReplyRouter)
        for changes in (
            {"contract_hash": "h2"},
            {"client_auth": ClientAuth.ANONYMOUS},
            {"discovery": Discovery.PRIVATE},
            {"kind": ONEWAY},
        ):
            options = {"discovery": Discovery.PUBLIC, **changes}
            error = self.assertRaises(
                RelayFaultError, self.names.register, self.namespace, "calc", policy(**options), second
            )  # type: ignore[arg-type]
            self.assertIs(error.kind, RelayFault.ADDRESS_IN_USE)
        self.names.register(self.namespace, "calc", policy(discovery=Discovery.PUBLIC), second)
        self.assertEqual(len(bound.listeners), 2)

    def test_quota(self) -> None:
        """max_listeners is enforced at the handshake and at registration."""
        for name in "ab":
            self.names.register(
                self.namespace, "calc", policy(discovery=Discovery.PUBLIC), FakeConnection(name)
            )
        self.assertRaises(RelayFaultError, self.names.check_quota, self.namespace, self.calc)
        error = self.assertRaises(
            RelayFaultError,
            self.names.register,
            self.namespace,
            "calc",
            policy(discovery=Discovery.PUBLIC),
            FakeConnection("c"),
        )
        self.assertIs(error.kind, RelayFault.QUOTA_EXCEEDED)

    def test_new_contract_after_all_left(self) -> None:
        """When every listener has left, a new contract may take over a persistent name; it keeps serving ?wsdl."""
        connection = FakeConnection("a")
        bound, _ = self.names.register(self.namespace, "calc", policy(discovery=Discovery.PUBLIC), connection)
        self.names.unregister(bound, connection)
        self.assertEqual(bound.contract_hash, "h1")
        self.names.register(
            self.namespace,
            "calc",
            policy(discovery=Discovery.PUBLIC, contract_hash="h2"),
            FakeConnection("b"),
        )
        self.assertEqual(bound.contract_hash, "h2")

    def test_dynamic(self) -> None:
        """A dynamic name is created with the listener's policy and removed with its last listener."""
        connection = FakeConnection("a")
        bound, _ = self.names.register(
            self.namespace,
            "rooms/red",
            policy(MULTICAST, None, discovery=Discovery.PUBLIC, display_name="Red"),
            connection,
        )
        self.assertIsInstance(bound.router, MulticastRouter)
        entity = self.store.get(self.namespace, "rooms/red")
        self.assertTrue(entity.dynamic)  # type: ignore[union-attr]
        listings = self.names.listings(self.namespace, "rooms")
        self.assertEqual(
            [(item.display_name, item.kind, item.public) for item in listings], [("Red", "multicast", True)]
        )
        self.names.unregister(bound, connection)
        self.assertIsNone(self.store.get(self.namespace, "rooms/red"))
        self.assertEqual(self.names.listings(self.namespace, "rooms"), [])

    def test_dynamic_names_within_the_namespace_quota(self) -> None:
        """Past the namespace's entity quota a new dynamic name is refused with QuotaExceeded."""
        self.store.max_entities = len(self.store.entities(self.namespace)) + 1
        self.names.register(self.namespace, "rooms/red", policy(MULTICAST, None), FakeConnection("a"))
        with self.assertRaises(RelayFaultError) as refused:
            self.names.register(self.namespace, "rooms/blue", policy(MULTICAST, None), FakeConnection("b"))
        self.assertEqual(refused.exception.kind, RelayFault.QUOTA_EXCEEDED)
        self.assertIsNone(self.store.get(self.namespace, "rooms/blue"))

    def test_no_dynamic_names(self) -> None:
        """Without auto_create unknown names are refused."""
        closed = Namespace("closed", ("closed.example",))
        self.store.add_namespace(closed)
        self.assertRaises(RelayFaultError, self.names.listener_target, "closed.example", "x")
        self.assertRaises(RelayFaultError, self.names.register, closed, "x", policy(), FakeConnection("a"))

    def test_names_below(self) -> None:
        """The index counts the binding names at or below each prefix, and the public ones, as the store changes."""
        private = BindingEntitySettings(kind=ONEWAY, discovery=Discovery.PRIVATE)
        self.store.add(self.namespace, Entity("Team/Orders", ONEWAY, settings=private))
        self.store.add(self.namespace, Entity("team/hyco", HYBRID_CONNECTION))
        self.assertEqual(self.names.names_below(self.namespace, ""), (2, 1))
        self.assertEqual(self.names.names_below(self.namespace, "/TEAM//"), (1, 0))
        self.assertEqual(self.names.names_below(self.namespace, "team/orders"), (1, 0))
        self.assertEqual(self.names.names_below(self.namespace, "team/hyco"), (0, 0))
        bound, _ = self.names.register(
            self.namespace,
            "team/blue",
            policy(MULTICAST, None, discovery=Discovery.PUBLIC),
            FakeConnection("a"),
        )
        self.assertEqual(self.names.names_below(self.namespace, "team"), (2, 1))
        self.assertEqual(
            [item.url for item in self.names.listings(self.namespace, "Team")],
            [
                "https://relay.example:8443/base/Team/Orders",
                "https://relay.example:8443/base/team/blue",
            ],
        )
        self.names.unregister(bound, FakeConnection("a"))  # not its listener: nothing changes
        self.store.remove(self.namespace, "team/orders")
        self.assertEqual(self.names.names_below(self.namespace, "team"), (1, 1))
        self.names.unregister(bound, bound.listeners[0])
        self.assertEqual(self.names.names_below(self.namespace, "team"), (0, 0))
        self.assertEqual(self.names.names_below(self.namespace, ""), (1, 1))

    def test_registry_version(self) -> None:
        """The registry version changes with names added or removed and listeners coming or going, and only then."""
        versions = [self.names.registry_version(self.namespace)]

        def changed() -> bool:
            versions.append(self.names.registry_version(self.namespace))
            return versions[-1] != versions[-2]

        self.assertEqual(versions[0][1].timestamp(), self.clock.seconds())  # the start until a change
        self.clock.advance(10)
        self.store.add(self.namespace, Entity("hyco2", HYBRID_CONNECTION))
        self.assertFalse(changed())
        self.store.add(self.namespace, Entity("events", ONEWAY, settings=BindingEntitySettings(kind=ONEWAY)))
        self.assertTrue(changed())
        self.assertEqual(versions[-1][1].timestamp(), self.clock.seconds())
        connection = FakeConnection("a")
        bound, _ = self.names.register(self.namespace, "calc", policy(discovery=Discovery.PUBLIC), connection)
        self.assertTrue(changed())
        self.names.listings(self.namespace)
        self.assertFalse(changed())
        self.names.unregister(bound, connection)
        self.assertTrue(changed())
        self.store.remove(self.namespace, "events")
        self.assertTrue(changed())

    def test_listings(self) -> None:
        """Persistent names are listed without listeners; hybrid connections never."""
        listings = self.names.listings(self.namespace)
        self.assertEqual(
            [(item.url, item.display_name, item.public) for item in listings],
            [("https://relay.example:8443/base/calc", "calc", True)],
        )
