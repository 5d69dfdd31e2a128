"""Tests for the shape of L{relay.client}: its exports and import-time behaviour."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import relay.client
from relay.client.control import ControlChannel
from relay.client.protocol import IWebSocketReceiver


class ExportTests(SynchronousTestCase):
    def test_all_names_exist(self) -> None:
        """Everything in C{__all__} is importable from the package, and C{__all__} is sorted."""
        for name in relay.client.__all__:
            self.assertTrue(hasattr(relay.client, name), name)
        self.assertEqual(relay.client.__all__, sorted(relay.client.__all__))

    def test_main_api(self) -> None:
        """The classes the brief names are exported."""
        for name in (
            "HybridConnectionListener",
            "HybridConnectionClient",
            "HybridWebSocket",
            "ITokenProvider",
            "SharedAccessKeyTokenProvider",
            "SharedAccessSignatureTokenProvider",
            "Reject",
            "Backoff",
        ):
            self.assertIn(name, relay.client.__all__)

    def test_no_reactor_at_import(self) -> None:
        """Importing the client does not install the global reactor."""
        code = "import sys, relay.client; print('twisted.internet.reactor' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout.strip(), "False")

    def test_control_channel_is_a_receiver(self) -> None:
        """The control channel implements the receiver interface its protocol delivers to."""

        class Protocol:
            write_through = False

            def send_wholes(self, messages: object) -> None:
                pass

        noop: Any = lambda *args: None  # noqa: E731
        channel = ControlChannel(Protocol(), listener_id="L", on_accept=noop, on_request=noop, on_closed=noop)  # type: ignore[arg-type]
        verifyObject(IWebSocketReceiver, channel)
        self.assertTrue(channel.send_message(b"x"))
        channel.connection_closed(True, 1000, None)
        self.assertFalse(channel.send_renew_token("t"))
        self.successResultOf(channel.close())
