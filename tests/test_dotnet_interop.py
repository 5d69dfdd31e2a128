"""
What the official .NET client (NuGet C{Microsoft.Azure.Relay}) needs on the wire, beyond what the Node clients do.

The .NET client cannot run here, so each test reproduces its wire behaviour exactly, citing the source in
U{https://github.com/Azure/azure-relay-dotnet} (paths below are under C{src/Microsoft.Azure.Relay/}).
"""

from __future__ import annotations

import json

from .wsharness import GatewayTestCase

DOTNET_CONTROL_BUFFER = 64 * 1024
"""
The .NET listener's control-channel receive buffer, in bytes.

C{HybridConnectionListener.cs} line 21 (C{DefaultConnectionBufferSize = 64 * 1024}) and line 618 (the
control connection's C{receiveBuffer}); lines 850-877 receive each message into what is left of that
buffer and never grow it.
"""


def dotnet_control_pump_reads(payload: bytes) -> bool:
    """
    Whether the .NET listener's control-channel pump can read a message of this size.

    Past the buffer, its next C{ReceiveAsync} gets an empty segment (C{HybridConnectionListener.cs} line
    852); the managed WebSocket answers that with 0 bytes and C{EndOfMessage = false} without consuming
    anything (C{WebSockets/NetStandard20/ManagedWebSocket.cs} lines 692-699, as the runtime's own
    C{ManagedWebSocket}), so the pump spins on the message for good: the listener takes no more
    announcements, while its keep-alive keeps the channel looking alive.
    """
    return len(payload) <= DOTNET_CONTROL_BUFFER


class AcceptMessageSizeTests(GatewayTestCase):
    """An C{accept} must fit the .NET listener's control-channel buffer."""

    def test_sender_whose_accept_would_not_fit_is_refused(self) -> None:
        """
        A sender whose C{accept} would be over 64 kB is refused with 431; the listener is not sent it.

        Its headers fit the gateway's header limit (64 kB), but C{connectHeaders} carries them JSON-escaped
        (a C{"} takes two bytes), so the announcement would be twice as large: the .NET listener's pump
        would spin on it (L{dotnet_control_pump_reads}) and serve no sender again.
        """
        listener = self.listen()
        self.net.flush()
        sender = self.send(headers_extra={"X-Quoted": '"' * 33000})
        self.net.flush()
        self.assertEqual(sender.status, 431)
        self.assertTrue(all(dotnet_control_pump_reads(payload) for payload, _ in listener.messages))
        self.assertEqual(listener.messages, [])
        # The listener still serves the next sender.
        sender = self.send(headers_extra={"X-Quoted": '"' * 100})
        self.net.flush()
        ((payload, is_binary),) = listener.messages
        self.assertFalse(is_binary)
        self.assertIn("accept", json.loads(payload))

    def test_accept_up_to_the_buffer_is_sent(self) -> None:
        """An C{accept} of large but fitting headers (40 kB) is announced as before."""
        listener = self.listen()
        self.net.flush()
        self.send(headers_extra={"X-Big": "a" * 40000})
        self.net.flush()
        ((payload, _),) = listener.messages
        self.assertTrue(dotnet_control_pump_reads(payload))
        self.assertEqual(json.loads(payload)["accept"]["connectHeaders"]["X-Big"], "a" * 40000)
