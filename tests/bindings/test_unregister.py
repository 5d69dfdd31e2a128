"""r:Unregister at the gateway: a listener leaves gracefully, fenced by r:Unregistered after its queue."""

from __future__ import annotations

from bindings.addressing import read_addressing
from bindings.control import ACTION_UNREGISTER, ACTION_UNREGISTERED, parse_delivered, unregister_envelope
from bindings.faults import parse_fault
from bindings.settings import MULTICAST, ONEWAY
from bindings.soap import Envelope, SoapVersion, parse_envelope

from .calculator import IChat
from .test_closing_listener import SAY, say
from .wcfharness import BindingsTestCase, envelope_bytes


def _read(payload: bytes) -> Envelope:
    return parse_envelope(payload, SoapVersion.SOAP12)


def _subcode(payload: bytes) -> str:
    envelope = _read(payload)
    assert envelope.is_fault
    return parse_fault(envelope.body[0], SoapVersion.SOAP12).subcodes[-1][1]


class UnregisterTests(BindingsTestCase):
    def test_the_fence_comes_after_what_was_queued(self) -> None:
        """Queued messages are written, then r:Unregistered; a message sent meanwhile gets ListenerGone."""
        listener, outlet = self.paused_listener("events", ONEWAY, IChat)
        before = len(listener.messages)
        sender = self.wcf("events", "send")
        for n in (1, 2):
            sender.sendMessage(say(n), isBinary=False)
        self.net.flush()
        listener.sendMessage(unregister_envelope("urn:uuid:leave").to_bytes(), isBinary=False)
        self.net.flush()
        self.assertEqual(len(listener.messages), before)  # the fence waits for the queue
        sender.sendMessage(say(3), isBinary=False)
        self.net.flush()
        self.assertEqual(_subcode(sender.messages[-1][0]), "ListenerGone")
        outlet.resumeProducing()
        self.net.flush()
        received = [read_addressing(_read(m[0])) for m in listener.messages[before:]]
        self.assertEqual(
            [(h.message_id, h.action) for h in received[:2]],
            [("urn:uuid:m1", SAY.action), ("urn:uuid:m2", SAY.action)],
        )
        self.assertEqual(
            (received[2].action, received[2].relates_to), (ACTION_UNREGISTERED, "urn:uuid:leave")
        )
        self.assertEqual(len(received), 3)
        self.assertIsNone(listener.closed)

    def test_a_leaving_subscriber_gets_no_copy_and_is_not_counted(self) -> None:
        """Multicast: after r:Unregister a subscriber takes no copies; r:Delivered counts the others."""
        leaving = self.listener("chat", MULTICAST, IChat)
        staying = self.listener("chat", MULTICAST, IChat)
        leaving.sendMessage(unregister_envelope("urn:uuid:leave").to_bytes(), isBinary=False)
        self.net.flush()
        self.assertEqual(read_addressing(_read(leaving.messages[-1][0])).action, ACTION_UNREGISTERED)
        before = (len(leaving.messages), len(staying.messages))
        sender = self.wcf("chat", "send")
        sender.sendMessage(say(1), isBinary=False)
        self.net.flush()
        self.assertEqual((len(leaving.messages) - before[0], len(staying.messages) - before[1]), (0, 1))
        self.assertEqual(parse_delivered(_read(sender.messages[-1][0])), 1)

    def test_unregister_needs_a_message_id(self) -> None:
        """Without wsa:MessageID there is nothing to relate the fence to: a fault, and it stays routed."""
        listener = self.listener("events", ONEWAY, IChat)
        payload = envelope_bytes(unregister_envelope("urn:uuid:x").body[0], action=ACTION_UNREGISTER)
        listener.sendMessage(payload, isBinary=False)
        self.net.flush()
        self.assertEqual(_subcode(listener.messages[-1][0]), "MessageAddressingHeaderRequired")
        before = len(listener.messages)
        sender = self.wcf("events", "send")
        sender.sendMessage(say(1), isBinary=False)
        self.net.flush()
        self.assertEqual(len(listener.messages), before + 1)

    def test_a_sender_may_not_unregister(self) -> None:
        """r:Unregister is a listener's message: a sender sending it gets a fault and stays open."""
        sender = self.wcf("events", "send")
        sender.sendMessage(unregister_envelope("urn:uuid:s").to_bytes(), isBinary=False)
        self.net.flush()
        self.assertEqual(_subcode(sender.messages[-1][0]), "ActionNotSupported")
        self.assertIsNone(sender.closed)
