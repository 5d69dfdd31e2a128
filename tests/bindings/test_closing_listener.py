"""A listener whose socket is closing gets no more messages, and no sender is told otherwise."""

from __future__ import annotations

from bindings.contracts import contract_of
from bindings.control import parse_delivered
from bindings.faultcodes import RelayFault
from bindings.faults import parse_fault
from bindings.settings import MULTICAST, ONEWAY
from bindings.soap import SoapVersion, parse_envelope

from .calculator import IChat
from .wcfharness import BindingsTestCase, envelope_bytes

SAY = contract_of(IChat).operation("Say")


def say(number: int) -> bytes:
    return envelope_bytes(
        SAY.encode_request("me", str(number)), action=SAY.action, message_id=f"urn:uuid:m{number}"
    )


class ClosingListenerTests(BindingsTestCase):
    """
    The gateway closes a listener (its token lapsed) and waits for the close handshake.

    Meanwhile the listener is still registered; what is routed to it is not written, and the senders
    hear C{ListenerGone} instead of C{r:Delivered} (before, the message was dropped and counted).
    """

    def test_oneway(self) -> None:
        listener = self.wcf("events", "listen", token=self.token("events", ttl=60))
        self.register(listener, ONEWAY, IChat)
        before = len(listener.messages)
        sender = self.wcf("events", "send")
        self.net.flush()
        self.clock.advance(61)  # the token lapses: the gateway closes the listener with 1008
        sender.sendMessage(say(1), isBinary=False)
        self.net.flush()
        self.assertEqual(len(listener.messages), before)
        answer = parse_envelope(sender.messages[-1][0], SoapVersion.SOAP12)
        self.assertTrue(answer.is_fault)
        fault = parse_fault(answer.body[0], SoapVersion.SOAP12)
        self.assertEqual(fault.subcodes[-1][1], RelayFault.LISTENER_GONE.subcode_name)

    def test_oneway_another_listener_takes_it(self) -> None:
        """With another listener open, the messages go to it: none fails for the closing one."""
        closing = self.wcf("events", "listen", token=self.token("events", ttl=60))
        self.register(closing, ONEWAY, IChat)
        live = self.listener("events", ONEWAY, IChat)
        before = (len(closing.messages), len(live.messages))
        sender = self.wcf("events", "send")
        self.net.flush()
        self.clock.advance(61)  # the gateway closes the first listener; its close handshake is under way
        for n in range(2):
            sender.sendMessage(say(n), isBinary=False)
            self.net.flush()
        self.assertEqual((len(closing.messages) - before[0], len(live.messages) - before[1]), (0, 2))
        answers = [parse_envelope(m[0], SoapVersion.SOAP12) for m in sender.messages[-2:]]
        self.assertEqual([parse_delivered(a) for a in answers], [1, 1])

    def test_multicast_count(self) -> None:
        closing = self.wcf("chat", "listen", token=self.token("chat", ttl=60))
        self.register(closing, MULTICAST, IChat)
        live = self.listener("chat", MULTICAST, IChat)
        before = (len(closing.messages), len(live.messages))
        sender = self.wcf("chat", "send")
        self.net.flush()
        self.clock.advance(61)
        sender.sendMessage(say(1), isBinary=False)
        self.net.flush()
        self.assertEqual((len(closing.messages) - before[0], len(live.messages) - before[1]), (0, 1))
        self.assertEqual(parse_delivered(parse_envelope(sender.messages[-1][0], SoapVersion.SOAP12)), 1)


class ContractAfterTheListenersLeftTests(BindingsTestCase):
    """The contract new listeners must match is the current listeners' one, not a departed listener's."""

    def test_subscribers_without_wsdl_after_one_with(self) -> None:
        first = self.listener("chat", MULTICAST, IChat)  # registers with the contract's WSDL
        first.sendClose(1000)
        self.net.flush()
        second = self.wcf("chat", "listen")
        self.register(second, MULTICAST, None)  # no WSDL: allowed for multicast
        third = self.wcf("chat", "listen")
        self.register(third, MULTICAST, None)  # the same policy as the second
        self.assertIsNone(third.closed)  # it was refused with AddressInUse (1008)
        with_wsdl = self.wcf("chat", "listen")
        self.register(with_wsdl, MULTICAST, IChat)  # another contract than the current listeners'
        self.assertEqual(with_wsdl.closed[1], 1008)  # type: ignore[index]
