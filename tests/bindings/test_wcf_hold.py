"""A $wcf sender held back by a full listener queue: what it sent afterwards waits unread, however it came."""

from __future__ import annotations

from bindings.addressing import read_addressing
from bindings.contracts import contract_of
from bindings.control import ACTION_DELIVERED
from bindings.settings import ONEWAY

from .calculator import IChat
from .test_wcf import envelope
from .test_wcf_limits import _CONTINUATION, _TEXT, frame
from .wcfharness import BindingsTestCase, envelope_bytes

SAY = contract_of(IChat).operation("Say")


def say(i: int) -> bytes:
    return envelope_bytes(SAY.encode_request("me", str(i)), action=SAY.action, message_id=f"urn:uuid:{i}")


class HeldMidMessageTests(BindingsTestCase):
    """The message that holds a sender back came in fragments: the messages after it are not read either."""

    def test_fragmented_message_holds_the_rest_of_the_read(self) -> None:
        """
        Two messages fill the queue, the third (in two fragments) holds the sender; three more wait unread.

        They used to be handed to Autobahn with the fragments, each offered (and held back, then refused with
        ServerBusy) instead of waiting in the socket.
        """
        listener, outlet = self.paused_listener("events", ONEWAY, IChat)
        sender = self.wcf("events", "send")
        third = say(2)
        read = b"".join(
            [
                frame(_TEXT, say(0), fin=True),
                frame(_TEXT, say(1), fin=True),
                frame(_TEXT, third[:100], fin=False),
                frame(_CONTINUATION, third[100:], fin=True),
                *(frame(_TEXT, say(i), fin=True) for i in range(3, 6)),
            ]
        )
        sender.transport.write(read)
        self.net.flush()
        self.assertEqual((outlet.queued_messages, outlet.waiting_senders), (2, 1))
        self.assertEqual(sender.messages, [])
        outlet.resumeProducing()
        self.net.advance(0)
        self.assertEqual(
            [read_addressing(envelope(m[0])).message_id for m in listener.messages[-6:]],
            [f"urn:uuid:{i}" for i in range(6)],
        )
        self.assertEqual(
            [read_addressing(envelope(m[0])).action for m in sender.messages], [ACTION_DELIVERED] * 6
        )

    def test_fragmented_message_then_later_reads(self) -> None:
        """The fragments end in one read, the messages after them come in the next: they wait too."""
        listener, outlet = self.paused_listener("events", ONEWAY, IChat)
        sender = self.wcf("events", "send")
        third = say(2)
        sender.transport.write(frame(_TEXT, say(0), fin=True) + frame(_TEXT, say(1), fin=True))
        sender.transport.write(frame(_TEXT, third[:100], fin=False))
        self.net.flush()
        sender.transport.write(frame(_CONTINUATION, third[100:], fin=True) + frame(_TEXT, say(3), fin=True))
        self.net.flush()
        self.assertEqual((outlet.queued_messages, outlet.waiting_senders), (2, 1))
        sender.transport.write(frame(_TEXT, say(4), fin=True))
        self.net.flush()
        self.assertEqual((outlet.queued_messages, outlet.waiting_senders), (2, 1))
        outlet.resumeProducing()
        self.net.advance(0)
        self.assertEqual(
            [read_addressing(envelope(m[0])).message_id for m in listener.messages[-5:]],
            [f"urn:uuid:{i}" for i in range(5)],
        )


class HeldPastThePingTimeoutTests(BindingsTestCase):
    """A sender held back is not dropped for a pong it sent but the gateway did not read."""

    def limits(self) -> dict[str, float]:
        return {"control_ping_interval": 0.5}  # pong timeout 1 s; "events" holds senders up to 2 s

    def test_held_sender_answers_busy_not_dropped(self) -> None:
        """The third message waits 2 s and gets ServerBusy; the sender's pong waits with it, unread."""
        listener, outlet = self.paused_listener("events", ONEWAY, IChat)
        sender = self.wcf("events", "send")
        for i in range(3):
            sender.sendMessage(say(i), isBinary=False)
        self.net.flush()
        self.assertEqual((outlet.queued_messages, outlet.waiting_senders), (2, 1))
        for _ in range(21):
            self.net.advance(0.1)
        self.assertIsNone(sender.closed)
        self.assertEqual(
            [read_addressing(envelope(m[0])).relates_to for m in sender.messages], ["urn:uuid:2"]
        )
        outlet.resumeProducing()
        self.net.advance(0)
        self.assertEqual(len(listener.messages), 3)  # r:Registered and two messages
        for _ in range(30):
            self.net.advance(0.1)
        self.assertIsNone(sender.closed)


class HoldsOfOtherListenersTests(BindingsTestCase):
    """A listener leaving lets go only of the holds it put on senders, not of another listener's."""

    def test_leaving_listener_does_not_release_a_hold_elsewhere(self) -> None:
        """
        Two busy listeners; the sender waits for the first. The second leaving does not let the sender on.

        Closing an outlet released the sender once for every message it still had, queued ones included,
        which never held it: the hold the other listener had was undone, and the messages after the one
        that waited were read, held back too or refused with ServerBusy at once.
        """
        first = self.listener("events", ONEWAY, IChat)
        second = self.listener("events", ONEWAY, IChat)
        entity = self.service.store.get(self.namespace, "events")
        bound = self.bindings.names.existing(self.namespace, entity)  # type: ignore[arg-type]
        outlets = bound.outlets()  # type: ignore[union-attr]
        for outlet in outlets:
            outlet.pauseProducing()
        sender = self.wcf("events", "send")
        for i in range(7):  # 0-3 fill both queues (in turn), 4 waits for the first; 5 and 6 stay unread
            sender.sendMessage(say(i), isBinary=False)
        self.net.flush()
        self.assertEqual([(o.queued_messages, o.waiting_senders) for o in outlets], [(2, 1), (2, 0)])
        second.sendClose(1000)
        self.net.flush()
        self.net.advance(0)
        self.assertEqual((outlets[0].queued_messages, outlets[0].waiting_senders), (2, 1))
        self.assertEqual(
            [read_addressing(envelope(m[0])).relates_to for m in sender.messages],
            ["urn:uuid:1", "urn:uuid:3"],
        )
        outlets[0].resumeProducing()
        self.net.advance(0)
        self.assertEqual(
            [read_addressing(envelope(m[0])).message_id for m in first.messages[1:]],
            [f"urn:uuid:{i}" for i in (0, 2, 4, 5, 6)],
        )
