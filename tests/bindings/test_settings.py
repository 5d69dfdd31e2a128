"""Tests for L{bindings.settings}: defaults and caps of spec section 12, bindings and TOML sections."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bindings.settings import (
    ENTITY_SECTIONS,
    MULTICAST,
    ONEWAY,
    REQUEST_REPLY,
    BindingEntitySettings,
    ClientAuth,
    Discovery,
    MulticastBinding,
    OneWayBinding,
    RequestReplyBinding,
    settings_for,
)
from relay.auth import Rights
from relay.config import ConfigError, parse_config

KEY = "k" * 32


def config(**kinds: list[dict[str, Any]]) -> Any:
    return parse_config({"namespaces": [{"hosts": ["relay.example"], **kinds}]}, "test.toml", ENTITY_SECTIONS)


class EntitySettingsTests(SynchronousTestCase):
    """Entity settings values."""

    def test_defaults(self) -> None:
        """Defaults follow spec section 12, with the message size depending on the kind."""
        oneway = settings_for(ONEWAY)
        self.assertEqual(
            (oneway.client_auth, oneway.discovery, oneway.max_listeners, oneway.message_limit),
            (ClientAuth.TOKEN, Discovery.PRIVATE, 25, 64 * 1024),
        )
        self.assertEqual(settings_for(MULTICAST).message_limit, 64 * 1024)
        rr = settings_for(REQUEST_REPLY)
        self.assertEqual(
            (
                rr.message_limit,
                rr.request_timeout,
                rr.send_timeout,
                rr.max_in_flight,
                rr.max_depth,
                rr.max_wsdl_bytes,
            ),
            (4 * 1024 * 1024, 60.0, 30.0, 1000, 64, 256 * 1024),
        )
        self.assertEqual((rr.max_queue_bytes, rr.max_queue_messages), (4 * 1024 * 1024, 1000))

    def test_caps(self) -> None:
        """Values beyond the hard caps are refused."""
        for kind, overrides in (
            (ONEWAY, {"max_message_bytes": 1024 * 1024 + 1}),
            (REQUEST_REPLY, {"max_message_bytes": 64 * 1024 * 1024 + 1}),
            (ONEWAY, {"max_listeners": 1001}),
            (REQUEST_REPLY, {"request_timeout": 601.0}),
            (ONEWAY, {"send_timeout": 301.0}),
            (REQUEST_REPLY, {"max_in_flight": 10_001}),
            (ONEWAY, {"max_depth": 257}),
            (ONEWAY, {"max_wsdl_bytes": 1024 * 1024 + 1}),
        ):
            self.assertRaises(ValueError, settings_for, kind, **overrides)
        settings_for(REQUEST_REPLY, max_message_bytes=64 * 1024 * 1024, request_timeout=600.0)
        self.assertRaises(ValueError, BindingEntitySettings, kind="hybrid_connection")

    def test_title(self) -> None:
        """The display name defaults to the last path segment."""
        self.assertEqual(settings_for(ONEWAY).title("team/orders"), "orders")
        self.assertEqual(settings_for(ONEWAY, display_name="Orders").title("team/orders"), "Orders")


class BindingTests(SynchronousTestCase):
    """Client-side binding values."""

    def test_defaults(self) -> None:
        """Each binding has its kind and the spec's default size."""
        self.assertEqual((OneWayBinding.kind, OneWayBinding().max_message_bytes), (ONEWAY, 64 * 1024))
        self.assertEqual(
            (MulticastBinding.kind, MulticastBinding().max_message_bytes), (MULTICAST, 64 * 1024)
        )
        rr = RequestReplyBinding()
        self.assertEqual(
            (rr.kind, rr.max_message_bytes, rr.request_timeout), (REQUEST_REPLY, 4 * 1024 * 1024, 60.0)
        )

    def test_caps(self) -> None:
        """Bindings refuse values beyond the caps."""
        self.assertRaises(ValueError, OneWayBinding, max_message_bytes=2 * 1024 * 1024)
        self.assertRaises(ValueError, MulticastBinding, send_timeout=0)
        self.assertRaises(ValueError, RequestReplyBinding, request_timeout=601)
        self.assertRaises(ValueError, RequestReplyBinding, open_timeout=0)
        for bad in (-1, float("nan"), 86401):
            self.assertRaises(ValueError, OneWayBinding, close_timeout=bad)
        self.assertEqual(MulticastBinding(close_timeout=0).close_timeout, 0)
        self.assertEqual(
            RequestReplyBinding(max_message_bytes=64 * 1024 * 1024).max_message_bytes, 64 * 1024 * 1024
        )


class ConfigSectionTests(SynchronousTestCase):
    """The TOML sections plug into relay.config."""

    def test_all_kinds(self) -> None:
        """oneway, requestreply and multicast tables become entities of those kinds with their settings."""
        parsed = config(
            oneway=[
                {
                    "name": "orders",
                    "client_auth": "anonymous",
                    "discovery": "public",
                    "display_name": "Orders",
                }
            ],
            requestreply=[
                {
                    "name": "team/calc",
                    "request_timeout": 5,
                    "max_message_bytes": 8 * 1024 * 1024,
                    "strict_addressing": True,
                    "rules": [{"name": "send", "key": KEY, "rights": ["Send"]}],
                }
            ],
            multicast=[{"name": "chat", "max_listeners": 3}],
        )
        entities = {e.name: e for e in parsed.namespaces[0].entities}
        orders, calc, chat = entities["orders"], entities["team/calc"], entities["chat"]
        self.assertEqual((orders.kind, calc.kind, chat.kind), (ONEWAY, REQUEST_REPLY, MULTICAST))
        self.assertEqual(
            (orders.settings.client_auth, orders.settings.discovery, orders.settings.title("orders")),
            (ClientAuth.ANONYMOUS, Discovery.PUBLIC, "Orders"),
        )
        self.assertEqual((calc.settings.request_timeout, calc.settings.message_limit), (5.0, 8 * 1024 * 1024))
        self.assertTrue(calc.settings.strict_addressing)
        self.assertEqual(calc.rules[0].rights, Rights.SEND)
        self.assertEqual(chat.settings.max_listeners, 3)

    def test_errors_name_the_key(self) -> None:
        """Bad values and unknown keys are refused with the key path."""
        for kinds, fragment in (
            ({"oneway": [{"name": "a", "client_auth": "maybe"}]}, "oneway[0].client_auth"),
            (
                {"oneway": [{"name": "a", "max_message_bytes": 2 * 1024 * 1024}]},
                "oneway[0].max_message_bytes",
            ),
            ({"oneway": [{"name": "a", "request_timeout": 5}]}, "oneway[0].request_timeout"),
            ({"multicast": [{"name": "a", "colour": "red"}]}, "multicast[0].colour"),
            ({"requestreply": [{"name": "a", "display_name": " "}]}, "requestreply[0].display_name"),
            ({"oneway": [{"name": "a"}], "multicast": [{"name": "A"}]}, "already defined"),
        ):
            error = self.assertRaises(ConfigError, config, **kinds)
            self.assertIn(fragment, str(error))
