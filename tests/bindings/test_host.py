"""ServiceHost, its dispatcher and listener session, and ChannelFactory, on in-memory transports."""

from __future__ import annotations

import datetime
import random
from decimal import Decimal
from typing import Any

from lxml import etree
from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface, implementer
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from bindings.addressing import (
    SenderInfo,
    addressing_header_bytes,
    addressing_headers,
    new_message_id,
    read_addressing,
    sender_header,
)
from bindings.channels import ChannelClosedError, ChannelFactory
from bindings.contracts import ContractError, Operation, contract, contract_of, operation
from bindings.faultcodes import RELAY_NS
from bindings.faults import SoapFault, parse_fault
from bindings.host import GENERIC_REASON, ServiceDispatcher, ServiceHost
from bindings.session import Backoff, IEnvelopeHandler, RegistrationRefused
from bindings.settings import (
    MESSAGE_BYTES,
    REQUEST_REPLY,
    ClientAuth,
    MulticastBinding,
    OneWayBinding,
    RequestReplyBinding,
)
from bindings.soap import SOAP12_NS, Envelope, SoapVersion, envelope_bytes
from bindings.wsclient import HandshakeRefused

from .calculator import DivideByZero, ICalculator, IChat, IChecked, Point, Positive, Shape
from .services import Calculator, ChatRoom, Checked
from .wcfharness import HOST, LISTEN_KEY, BindingsTestCase

CALC = contract_of(ICalculator)


def request(
    operation: str, *args: object, reply: bool = True, headers: tuple[etree._Element, ...] = ()
) -> Envelope:
    op = CALC.operation(operation)
    blocks = addressing_headers(action=op.action, message_id=new_message_id(), reply_to_anonymous=reply)
    return Envelope(
        SoapVersion.SOAP12,
        (*blocks, sender_header(SenderInfo("root", "T")), *headers),
        (op.encode_request(*args),),
    )


class DispatcherTests(SynchronousTestCase):
    """Typed dispatch and the fault rules of spec 7.2."""

    def setUp(self) -> None:
        self.service = Calculator()
        self.dispatcher = ServiceDispatcher(self.service, CALC)

    def fault(self, reply: Envelope | None) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        assert reply is not None and reply.is_fault
        fault = parse_fault(reply.body[0], SoapVersion.SOAP12)
        return fault.code.value, fault.reason, fault.subcodes

    def test_verified(self) -> None:
        """The dispatcher is an envelope handler."""
        self.assertTrue(verifyObject(IEnvelopeHandler, self.dispatcher))

    def test_typed_call(self) -> None:
        """Arguments are decoded, the result encoded with the reply action and RelatesTo."""
        incoming = request("Add", 2, 3)
        reply = self.successResultOf(self.dispatcher.handle(incoming))
        assert reply is not None
        headers = read_addressing(reply)
        self.assertEqual(
            (headers.action, headers.relates_to),
            (CALC.operation("Add").reply_action, read_addressing(incoming).message_id),
        )
        self.assertEqual(CALC.operation("Add").decode_response(reply.body[0]), 5)

    def test_async_and_complex(self) -> None:
        """async def methods and dataclass parameters work."""
        shape = Shape(
            "sq",
            [Point(0, 0), Point(2, 2)],
            datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
            Decimal("1.5"),
            b"x",
            datetime.date(2024, 1, 1),
            True,
        )
        reply = self.successResultOf(self.dispatcher.handle(request("Centroid", shape, [1.0], "n")))
        assert reply is not None
        self.assertEqual(CALC.operation("Centroid").decode_response(reply.body[0]), Point(1.0, 1.0, "n"))

    def test_deferred_result(self) -> None:
        """A method returning a Deferred is answered when it fires."""
        self.service.hold = True
        pending = self.dispatcher.handle(request("Add", 1, 1))
        self.assertNoResult(pending)
        self.service.held[0][0].callback(2)
        self.assertIsNotNone(self.successResultOf(pending))

    def test_declared_fault(self) -> None:
        """A declared fault carries its typed detail, its Code and its own action."""
        reply = self.successResultOf(self.dispatcher.handle(request("Divide", 7, 0)))
        code, reason, _ = self.fault(reply)
        self.assertEqual((code, reason), ("Sender", "Division by zero."))
        op = CALC.operation("Divide")
        self.assertEqual(read_addressing(reply).action, op.faults[0].action)  # type: ignore[arg-type]
        detail = parse_fault(reply.body[0], SoapVersion.SOAP12).detail[0]  # type: ignore[union-attr]
        self.assertEqual(op.decode_fault(detail), DivideByZero(7))

    def test_undeclared_fault(self) -> None:
        """Any other exception: Receiver, r:InternalServiceFault, a generic reason; traceback logged only."""
        reply = self.successResultOf(self.dispatcher.handle(request("Add", 666, 1)))
        self.assertEqual(
            self.fault(reply), ("Receiver", GENERIC_REASON, ((RELAY_NS, "InternalServiceFault"),))
        )
        self.assertNotIn(b"beast", reply.to_bytes())  # type: ignore[union-attr]
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_an_answer_that_cannot_be_built(self) -> None:
        """Building the reply or the declared fault raises: InternalServiceFault with the generic reason."""

        def broken(*args: object) -> object:
            raise ZeroDivisionError

        self.patch(DivideByZero, "reason", broken)
        self.patch(Operation, "encode_response", broken)
        for incoming in (request("Divide", 7, 0), request("Add", 1, 2)):
            reply = self.successResultOf(self.dispatcher.handle(incoming))
            self.assertEqual(
                self.fault(reply), ("Receiver", GENERIC_REASON, ((RELAY_NS, "InternalServiceFault"),))
            )
            self.assertEqual(read_addressing(reply).relates_to, read_addressing(incoming).message_id)  # type: ignore[arg-type]
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_exception_detail(self) -> None:
        """With include_exception_detail the message and type are sent, still no traceback."""
        dispatcher = ServiceDispatcher(self.service, CALC, include_exception_detail=True)
        reply = self.successResultOf(dispatcher.handle(request("Add", 666, 1)))
        code, reason, _ = self.fault(reply)
        self.assertEqual((code, reason), ("Receiver", "the number of the beast"))
        detail = parse_fault(reply.body[0], SoapVersion.SOAP12).detail[0]  # type: ignore[union-attr]
        self.assertEqual(detail.findtext(f"{{{RELAY_NS}}}Type"), "builtins.RuntimeError")
        self.assertNotIn(b"Traceback", reply.to_bytes())  # type: ignore[union-attr]
        self.flushLoggedErrors(RuntimeError)

    def test_exception_text_xml_cannot_carry(self) -> None:
        """An exception message with control characters still makes a fault (they become U+FFFD)."""

        class Garbled(Calculator):
            def Add(self, a: int, b: int) -> int:
                raise RuntimeError("bad byte \x01 in input")

        dispatcher = ServiceDispatcher(Garbled(), CALC, include_exception_detail=True)
        reply = self.successResultOf(dispatcher.handle(request("Add", 1, 2)))
        code, reason, _ = self.fault(reply)
        self.assertEqual((code, reason), ("Receiver", "bad byte \ufffd in input"))
        self.flushLoggedErrors(RuntimeError)

    def test_one_way(self) -> None:
        """One-way operations get no reply, even when they fail (the failure is logged)."""
        self.assertIsNone(self.successResultOf(self.dispatcher.handle(request("Notify", "hi", reply=False))))
        self.assertIsNone(
            self.successResultOf(self.dispatcher.handle(request("Notify", "boom", reply=False)))
        )
        self.assertEqual(self.service.notified, ["hi", "boom"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_must_understand(self) -> None:
        """A header marked mustUnderstand that the host does not know: MustUnderstand fault, no call."""
        header = etree.Element("{urn:x}Secret", nsmap={"x": "urn:x"})
        header.set(f"{{{SOAP12_NS}}}mustUnderstand", "true")
        reply = self.successResultOf(self.dispatcher.handle(request("Add", 1, 2, headers=(header,))))
        self.assertEqual(self.fault(reply)[0], "MustUnderstand")
        self.assertEqual(self.service.calls, 0)

    def test_unknown_operation_and_bad_body(self) -> None:
        """Unknown action: ActionNotSupported; unreadable arguments: DeserializationFailed."""
        unknown = Envelope(
            SoapVersion.SOAP12,
            addressing_headers(action="urn:x", message_id="urn:1", reply_to_anonymous=True),
            (etree.Element("{urn:x}X"),),
        )
        self.assertEqual(
            self.fault(self.successResultOf(self.dispatcher.handle(unknown)))[2],
            ((RELAY_NS, "ActionNotSupported"),),
        )
        op = CALC.operation("Add")
        body = etree.Element(op.request_element)
        etree.SubElement(body, f"{{{CALC.namespace}}}a").text = "not a number"
        bad = Envelope(
            SoapVersion.SOAP12,
            addressing_headers(action=op.action, message_id="urn:2", reply_to_anonymous=True),
            (body,),
        )
        self.assertEqual(
            self.fault(self.successResultOf(self.dispatcher.handle(bad)))[2],
            ((RELAY_NS, "DeserializationFailed"),),
        )


@implementer(IStreamClientEndpoint)
class PendingEndpoint:
    """A gateway that has not answered the TCP connect yet."""

    def __init__(self) -> None:
        self.attempts: list[defer.Deferred[Any]] = []
        self.cancelled: list[defer.Deferred[Any]] = []

    def __call__(self, address: object) -> PendingEndpoint:
        return self

    def connect(self, factory: object) -> defer.Deferred[Any]:
        attempt: defer.Deferred[Any] = defer.Deferred(self.cancelled.append)
        self.attempts.append(attempt)
        return attempt


class NotCalculator:
    def Add(self, a: int) -> int:
        return a


class HostConstructionTests(SynchronousTestCase):
    """Checks made before anything is sent."""

    def test_verify(self) -> None:
        """An implementation that does not provide the contract is refused."""
        self.assertRaises(Invalid, ServiceHost, NotCalculator(), ICalculator, "ws://h/calc", reactor=object())

    def test_not_a_contract(self) -> None:
        """A plain interface is refused."""
        self.assertRaises(TypeError, ServiceHost, Calculator(), Interface, "ws://h/calc", reactor=object())

    def test_multicast_needs_one_way(self) -> None:
        """A multicast binding needs an all one-way contract."""
        self.assertRaises(
            TypeError,
            ServiceHost,
            Calculator(),
            ICalculator,
            "ws://h/calc",
            MulticastBinding(),
            reactor=object(),
        )

    def test_multicast_channel_needs_one_way(self) -> None:
        """A channel on a multicast binding needs an all one-way contract too: a count is no reply."""
        self.assertRaises(
            TypeError, ChannelFactory, ICalculator, "ws://h/chat", MulticastBinding(), reactor=object()
        )
        ChannelFactory(IChat, "ws://h/chat", MulticastBinding(), reactor=object())

    def test_backoff(self) -> None:
        """Delays grow by the factor, are capped, and are jittered within [d/2, d]."""
        backoff = Backoff(initial=1.0, maximum=10.0, factor=2.0)
        rng = random.Random(1)
        for attempt, capped in [(0, 1.0), (1, 2.0), (3, 8.0), (4, 10.0), (50, 10.0)]:
            delay = backoff.delay(attempt, rng)
            self.assertTrue(capped / 2 <= delay <= capped, (attempt, delay))


class _CutWire:
    """An in-memory connection whose wire was cut: bytes are lost, each end only learns of its own abort."""

    def __init__(self, pump: Any) -> None:
        self._pump = pump
        self._told: set[int] = set()

    def pump(self, advanceClock: bool = False) -> bool:  # noqa: N803 - IOPump's signature
        moved = False
        for io in (self._pump.clientIO, self._pump.serverIO):
            io.getOutBuffer()  # lost on the way
            if io.disconnecting and id(io) not in self._told:
                self._told.add(id(io))
                io.disconnected = True
                io.reportDisconnect()
                moved = True
        return moved


class _HostNotReading:
    """An in-memory connection whose client (a host) reads nothing: its bytes go out, the gateway's wait."""

    def __init__(self, pump: Any) -> None:
        self._pump = pump

    def pump(self, advanceClock: bool = False) -> bool:  # noqa: N803 - IOPump's signature
        data = self._pump.clientIO.getOutBuffer()
        self._pump.clientIO._checkProducer()
        if data:
            self._pump.serverIO.bufferReceived(data)
        return bool(data)


class HostOnGatewayTests(BindingsTestCase):
    """A ServiceHost and a ChannelFactory through the in-memory gateway."""

    def host(
        self,
        service: object = None,
        interface: object = ICalculator,
        path: str = "calc",
        binding: object = None,
        **kwargs: object,
    ) -> ServiceHost:
        return ServiceHost(
            service if service is not None else Calculator(),
            interface,
            f"wss://{HOST}/{path}",
            binding
            or RequestReplyBinding(discovery=self.service.store.get(self.namespace, path).settings.discovery),  # type: ignore[union-attr]
            kwargs.pop("credentials", self.credentials()),  # type: ignore[arg-type]
            reactor=self.clock,
            endpoint=self.endpoint,
            rng=random.Random(0),
            **kwargs,  # type: ignore[arg-type]
        )

    def channel(
        self, path: str = "calc", interface: object = ICalculator, binding: object = None
    ) -> tuple[ChannelFactory, object]:
        factory = ChannelFactory(
            interface,
            f"wss://{HOST}/{path}",
            binding or RequestReplyBinding(),
            self.credentials(),
            reactor=self.clock,
            endpoint=self.endpoint,
        )  # type: ignore[arg-type]
        return factory, factory.create_channel()

    def opened(self, host: ServiceHost) -> None:
        d = host.open()
        self.net.flush()
        self.assertEqual(self.successResultOf(d).address, f"https://{HOST}/calc")

    def test_calls(self) -> None:
        """Typed results, declared faults as SoapFault with the declared value, one-way counts."""
        service = Calculator()
        self.opened(self.host(service))
        _factory, calc = self.channel()
        self.assertTrue(verifyObject(ICalculator, calc))
        results = [calc.Add(2, 3), calc.Divide(7, 0), calc.Notify("hello"), calc.Add(40, 2)]  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual(self.successResultOf(results[0]), 5)
        fault = self.failureResultOf(results[1], SoapFault).value
        self.assertEqual((fault.code.value, fault.declared), ("Sender", DivideByZero(7)))
        self.assertEqual(self.successResultOf(results[2]), 1)
        self.assertEqual(self.successResultOf(results[3]), 42)
        self.assertEqual(service.notified, ["hello"])

    def full_channel(self) -> tuple[ChannelFactory, Any, Any]:
        """A channel that made one call, whose socket buffer is then full (its write gate paused)."""
        self.opened(self.host())
        factory, calc = self.channel()
        first = calc.Add(1, 1)  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual(self.successResultOf(first), 2)
        protocol = factory._protocol
        assert protocol is not None
        protocol.write_gate.pauseProducing()
        return factory, calc, protocol

    def test_calls_wait_while_the_socket_is_full(self) -> None:
        """
        A call made while the channel's socket buffer is full is written once it drains, within its timeout.

        The gateway stops reading a sender whose listener is behind; calls fired meanwhile used to pile up
        in the client's write buffer without a bound.
        """
        factory, calc, protocol = self.full_channel()
        waiting = calc.Add(2, 3)
        self.net.flush()
        self.assertNoResult(waiting)
        self.assertEqual(len(factory._calls), 1)
        protocol.write_gate.resumeProducing()
        self.net.flush()
        self.assertEqual(self.successResultOf(waiting), 5)

    def test_a_call_waiting_for_a_full_socket_times_out(self) -> None:
        """A call that could not be written within its timeout fails as any late call does."""
        factory, calc, _ = self.full_channel()
        waiting = calc.Add(2, 3)
        self.net.advance(factory.timeout + 1)
        self.failureResultOf(waiting, defer.TimeoutError)
        self.assertEqual(factory._calls, {})

    def test_survives_exceptions(self) -> None:
        """An undeclared exception is a fault; the listener keeps serving."""
        self.opened(self.host())
        _, calc = self.channel()
        failed, ok = calc.Add(666, 0), calc.Add(1, 1)  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual(
            self.failureResultOf(failed, SoapFault).value.subcodes, ((RELAY_NS, "InternalServiceFault"),)
        )
        self.assertEqual(self.successResultOf(ok), 2)
        self.flushLoggedErrors(RuntimeError)

    def test_no_listener_fails_the_call_at_once(self) -> None:
        """A configured name nobody has listened on yet: the call fails with NoListener, not a timeout."""
        _, calc = self.channel()
        result = calc.Add(1, 2)  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual(self.failureResultOf(result, SoapFault).value.subcodes[-1][1], "NoListener")

    def test_message_too_large_fails_the_call_at_once(self) -> None:
        """A datagram over the name's max_message_bytes (4096) but under the cap: MessageTooLarge at once."""
        self.host(ChatRoom(), IChat, "events", OneWayBinding()).open()
        self.net.flush()
        _, chat = self.channel("events", IChat, OneWayBinding())
        result = chat.Say("a", "x" * 5000)  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual(self.failureResultOf(result, SoapFault).value.subcodes[-1][1], "MessageTooLarge")

    def test_undecodable_reply_fails_only_its_call(self) -> None:
        """A reply the contract's types refuse to rebuild fails that call with ContractError; the channel lives on."""
        self.opened(self.host(Checked(), IChecked))
        _, checked = self.channel(interface=IChecked)
        bad = checked.Make(0)  # type: ignore[attr-defined]
        self.net.flush()
        self.failureResultOf(bad, ContractError)
        again = checked.Echo(7)  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual(self.successResultOf(again), 7)

    def test_any_error_decoding_a_reply_fails_only_its_call(self) -> None:
        """Whatever decoding a reply raises fails that call; it never reaches the connection."""
        self.opened(self.host())
        factory, calc = self.channel()

        def broken(operation: Operation, element: object) -> object:
            raise ZeroDivisionError

        patched = self.patch(Operation, "decode_response", broken)
        failed = calc.Add(1, 2)  # type: ignore[attr-defined]
        self.net.flush()
        patched.restore()
        self.failureResultOf(failed, ZeroDivisionError)
        connection = factory._protocol
        again = calc.Add(2, 2)  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual((self.successResultOf(again), factory._protocol), (4, connection))

    def test_undecodable_request_gets_a_fault(self) -> None:
        """A request the contract's types refuse to rebuild is answered with DeserializationFailed at once."""
        self.opened(self.host(Checked(), IChecked))
        _, checked = self.channel(interface=IChecked)
        zero = Positive(1)
        zero.value = 0
        result = checked.Check(zero)  # type: ignore[attr-defined]
        self.net.flush()
        fault = self.failureResultOf(result, SoapFault).value
        self.assertEqual(fault.subcodes[-1][1], "DeserializationFailed")
        self.assertNotIn("must be positive", fault.reason)

    def test_float_result_out_of_range_is_a_fault(self) -> None:
        """A service returning an int beyond the double range for a float: InternalServiceFault at once."""
        self.opened(self.host(Checked(), IChecked, include_exception_detail=True))
        _, checked = self.channel(interface=IChecked)
        result = checked.Scale(0.0)  # type: ignore[attr-defined]
        self.net.flush()
        fault = self.failureResultOf(result, SoapFault).value
        self.assertEqual(fault.subcodes[-1][1], "InternalServiceFault")
        self.assertIn("does not fit in xsd:double", fault.reason)

    def test_float_argument_out_of_range_fails_the_deferred(self) -> None:
        """The proxy reports an unencodable float argument through its Deferred, as for other bad values."""
        _, checked = self.channel(interface=IChecked)
        self.failureResultOf(checked.Scale(10**400), ContractError)  # type: ignore[attr-defined]

    def test_a_request_delivered_as_a_datagram_fails(self) -> None:
        """An operation the listener's contract has one-way: r:Delivered is no result, the call fails."""

        @contract(namespace="urn:example:chat", name="Chat")
        class IAskingChat(Interface):
            @operation()
            def Say(who: str, text: str) -> int:
                """The listener's contract has Say one-way."""

        room = ChatRoom()
        self.opened(self.host(room, IChat))
        _, chat = self.channel(interface=IAskingChat)
        result = chat.Say("a", "b")  # type: ignore[attr-defined]
        self.net.flush()
        self.assertIn("delivered as a datagram", str(self.failureResultOf(result, ContractError).value))
        self.assertEqual(room.heard, [("a", "b")])

    def test_gateway_timeout(self) -> None:
        """A service slower than request_timeout: the caller gets the gateway's Timeout fault."""
        service = Calculator()
        service.hold = True
        self.opened(self.host(service))
        _, calc = self.channel()
        result = calc.Add(1, 2)  # type: ignore[attr-defined]
        self.net.advance(5.1)
        self.assertEqual(self.failureResultOf(result, SoapFault).value.subcodes[-1][1], "Timeout")
        service.held[0][0].callback(3)  # the late reply is dropped by the gateway
        self.net.flush()

    def closing_with_a_call_waiting(
        self,
    ) -> tuple[Calculator, Any, defer.Deferred[Any], defer.Deferred[None]]:
        """A call the service holds, then C{close()}: the service, the channel, the call and the close."""
        service = Calculator()
        service.hold = True
        self.opened(self.host(service))
        factory, calc = self.channel()
        waiting = calc.Add(1, 2)  # type: ignore[attr-defined]
        self.net.flush()
        return service, calc, waiting, factory.close()

    def test_channel_closed(self) -> None:
        """Calls waiting when the connection closes fail with ChannelClosedError; the next call reconnects."""
        service, calc, waiting, closing = self.closing_with_a_call_waiting()
        self.net.flush()
        self.successResultOf(closing)
        self.failureResultOf(waiting, ChannelClosedError)
        service.hold = False
        again = calc.Add(1, 1)  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual(self.successResultOf(again), 2)

    def test_call_again_before_the_close_completes(self) -> None:
        """
        A call made before the closing handshake ends goes on a new connection.

        The old connection's loss still fails its own calls and fires L{close}'s Deferred (they waited
        for their timeout before).
        """
        service, calc, waiting, closing = self.closing_with_a_call_waiting()
        service.hold = False
        again = calc.Add(1, 1)  # before the closing handshake ends
        self.net.flush()
        self.successResultOf(closing)
        self.failureResultOf(waiting, ChannelClosedError)
        self.assertEqual(self.successResultOf(again), 2)

    def test_close_while_connecting(self) -> None:
        """Closing a factory whose connection is still opening fails the waiting call and drops the socket."""
        self.opened(self.host())
        factory, calc = self.channel()
        waiting = calc.Add(1, 2)  # type: ignore[attr-defined]
        self.successResultOf(factory.close())
        self.failureResultOf(waiting, ChannelClosedError)
        self.net.flush()
        senders = [p for p in self.bindings.websocket_factory.connections if p.role_name == "sender"]
        self.assertEqual(senders, [])

    def test_channel_close_cancels_the_connection_attempt(self) -> None:
        """close() while the TCP connect is under way cancels it (it used to connect later, for nobody)."""
        endpoint = PendingEndpoint()
        factory = ChannelFactory(
            ICalculator, f"wss://{HOST}/calc", RequestReplyBinding(), reactor=self.clock, endpoint=endpoint
        )
        waiting = factory.create_channel().Add(1, 2)
        self.successResultOf(factory.close())
        self.failureResultOf(waiting, ChannelClosedError)
        self.assertEqual(endpoint.cancelled, endpoint.attempts)

    def test_call_time_counts_the_connection(self) -> None:
        """
        A call whose connection does not open fails at its timeout, counted from the call.

        Its timer started only once the connection was open, so a call waited for as long as the connect
        and the handshake took (a blackholed gateway: the kernel's TCP timeout) before its own time began.
        """
        endpoint = PendingEndpoint()
        factory = ChannelFactory(
            ICalculator, f"wss://{HOST}/calc", RequestReplyBinding(), reactor=self.clock, endpoint=endpoint
        )
        waiting = factory.create_channel().Add(1, 2)
        self.clock.advance(factory.timeout - 1)
        self.assertNoResult(waiting)
        self.clock.advance(2)
        self.failureResultOf(waiting, defer.TimeoutError)
        self.assertEqual(factory._calls, {})

    def test_host_close_cancels_the_connection_attempt(self) -> None:
        """A host closed while the TCP connect is under way cancels it, quietly; open() fails."""
        endpoint = PendingEndpoint()
        host = ServiceHost(
            Calculator(), ICalculator, f"wss://{HOST}/calc", reactor=self.clock, endpoint=endpoint
        )
        opening = host.open()
        self.successResultOf(host.close())
        self.failureResultOf(opening, HandshakeRefused)
        self.assertEqual(endpoint.cancelled, endpoint.attempts)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_host_close_during_the_handshake(self) -> None:
        """A host closed while its WebSocket handshake runs drops the socket; the gateway keeps no listener."""
        host = self.host()
        opening = host.open()
        self.successResultOf(host.close())
        self.net.flush()
        self.failureResultOf(opening, HandshakeRefused)
        self.assertEqual(self.bindings.websocket_factory.connections, set())

    def test_reconnects(self) -> None:
        """When the gateway drops the listener, the host registers again after a jittered delay."""
        host = self.host()
        self.opened(host)
        self.bindings.websocket_factory.close_all(1001, "restart")
        self.net.flush()
        self.assertFalse(host.session.is_registered)
        self.net.advance(1.0)
        self.assertTrue(host.session.is_registered)
        self.assertEqual(self.endpoint.attempts, 2)

    def test_backoff_until_reachable(self) -> None:
        """Connection failures are retried with growing delays until the gateway is reachable."""
        host = self.host()
        self.endpoint.refuse = ConnectionRefusedError()
        opening = host.open()
        for _ in range(4):
            self.net.advance(16)
        self.assertEqual(self.endpoint.attempts, 5)
        self.endpoint.refuse = None
        self.net.advance(60)
        self.assertEqual(self.successResultOf(opening).entity, "calc")

    def test_permanent_refusal(self) -> None:
        """A bad token is not retried: open() fails with the gateway's 401."""
        host = self.host(credentials=self.credentials("listen-only", "wrong-key-0123456789abcdef"))
        opening = host.open()
        self.net.advance(120)
        self.assertEqual(self.failureResultOf(opening, HandshakeRefused).value.status, 401)
        self.assertEqual(self.endpoint.attempts, 1)

    def test_address_in_use(self) -> None:
        """A second host with another contract is refused with AddressInUse and does not retry."""
        self.opened(self.host())
        other = ServiceHost(
            ChatRoom(),
            IChat,
            f"wss://{HOST}/calc",
            RequestReplyBinding(discovery=self.service.store.get(self.namespace, "calc").settings.discovery),
            self.credentials(),
            reactor=self.clock,
            endpoint=self.endpoint,
        )  # type: ignore[union-attr]
        opening = other.open()
        self.net.advance(120)
        self.assertEqual(self.failureResultOf(opening, RegistrationRefused).value.subcode, "AddressInUse")

    def test_token_renewal(self) -> None:
        """The host renews its token before it lapses, so the gateway keeps it open."""
        host = self.host(credentials=self.credentials("listen-only", LISTEN_KEY, ttl=100))
        self.opened(host)
        self.net.advance(81)
        self.net.advance(40)
        self.assertTrue(host.session.is_registered)
        self.assertEqual(self.endpoint.attempts, 1)

    def cut(self, host: ServiceHost) -> None:
        """Cut the host's connection silently: nothing more crosses it, and neither end is told."""
        protocol = host.session._protocol
        assert protocol is not None
        index = self.net.pumps.index(protocol.pump)
        self.net.pumps[index] = _CutWire(protocol.pump)  # type: ignore[call-overload]

    def test_notices_a_silent_gateway(self) -> None:
        """
        A connection that goes silent (the gateway's machine died, the network was cut) is given up.

        The host pings the gateway and reconnects when no pong comes; before, it sent nothing until its
        token renewal, so it stayed off the name, believing itself registered, for most of an hour.
        """
        host = self.host()
        self.opened(host)
        self.cut(host)
        for _ in range(30):
            self.net.advance(5)
        self.assertEqual(self.endpoint.attempts, 2)
        self.assertTrue(host.session.is_registered)
        _, calc = self.channel()
        result = calc.Add(2, 3)  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual(self.successResultOf(result), 5)

    def test_busy_one_way_host_stays(self) -> None:
        """
        A one-way host busy with its max_concurrent_calls calls keeps its connection: it sends heartbeats.

        It reads nothing while the calls run, the gateway's pings included, and the gateway cannot see
        when one-way calls end: it dropped the host for the pong it had not read, after about a minute.
        """

        @implementer(IChat)
        class SlowRoom:
            def __init__(self) -> None:
                self.held: list[defer.Deferred[None]] = []

            def Say(self, who: str, text: str) -> defer.Deferred[None]:
                self.held.append(defer.Deferred())
                return self.held[-1]

        room = SlowRoom()
        host = self.host(room, IChat, "events", OneWayBinding(), max_concurrent_calls=1)
        host.open()
        self.net.flush()
        _, chat = self.channel("events", IChat, OneWayBinding())
        chat.Say("a", "b")  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual(len(room.held), 1)  # the host stopped reading its socket
        (server,) = [p for p in self.bindings.websocket_factory.connections if p.role_name == "listener"]
        protocol = host.session._protocol
        assert protocol is not None
        wire = protocol.pump
        index = self.net.pumps.index(wire)
        self.net.pumps[index] = _HostNotReading(wire)  # type: ignore[call-overload]
        dialled = self.endpoint.attempts
        for _ in range(60):  # 5 minutes; the gateway pings every 30 s and wants the pong within 60 s
            self.net.advance(5)
        self.assertEqual((server.state, self.endpoint.attempts), (server.STATE_OPEN, dialled))
        self.net.pumps[index] = wire
        room.held[0].callback(None)  # reading again: the pings it owes are read and answered
        self.net.flush()
        for _ in range(30):
            self.net.advance(5)
        self.assertEqual((server.state, self.endpoint.attempts), (server.STATE_OPEN, dialled))

    def test_channel_notices_a_silent_gateway(self) -> None:
        """
        A ChannelFactory whose connection went silent gives it up: the next call dials again.

        It pinged nothing, so a cut network was noticed only by the kernel's TCP retries, about a quarter
        of an hour, and every call made meanwhile waited out its own timeout on the dead connection.
        """
        self.opened(self.host())
        factory, calc = self.channel()
        self.assertEqual(factory.ping_timeout, 30.0 + factory.binding.send_timeout)
        first = calc.Add(1, 1)  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual(self.successResultOf(first), 2)
        protocol = factory._protocol
        assert protocol is not None
        self.net.pumps[self.net.pumps.index(protocol.pump)] = _CutWire(protocol.pump)  # type: ignore[call-overload]
        dialled = self.endpoint.attempts
        due = self.clock.seconds() + 60 + factory.ping_timeout  # the next ping, and its pong overdue
        while self.clock.seconds() < due - 5:
            self.net.advance(5)
        self.assertIs(factory._protocol, protocol)
        for _ in range(3):  # Autobahn's timers are batched: due within a few seconds
            self.net.advance(5)
        self.assertIsNone(factory._protocol)
        again = calc.Add(3, 3)  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual(self.endpoint.attempts, dialled + 1)
        self.assertEqual(self.successResultOf(again), 6)

    def test_a_gateway_heard_from_is_there(self) -> None:
        """
        A gateway that does not answer the ping while a long message is coming is alive all the same.

        It skips pongs while more than 1 MiB waits unsent for the listener (a large message on a slow link),
        and no frame ends meanwhile: the host keeps its connection as long as bytes come.
        """
        host = self.host()
        self.opened(host)
        protocol = host.session._protocol
        assert protocol is not None
        self.cut(host)  # nothing else comes: no pong, no ping of the gateway's
        size = 100_000
        protocol.dataReceived(b"\x81\x7f" + size.to_bytes(8, "big"))  # a text frame's head, unmasked
        for _ in range(60):
            protocol.dataReceived(b"x" * 500)
            self.net.advance(5)
        self.assertEqual(self.endpoint.attempts, 1)
        self.assertIs(host.session._protocol, protocol)

    def test_no_pong_expected_while_not_reading(self) -> None:
        """A host that stopped reading (max_concurrent_calls calls run) does not take the unread pong for a dead gateway."""
        service = Calculator()
        service.hold = True
        host = self.host(service, max_concurrent_calls=1)
        self.opened(host)
        _, calc = self.channel()
        call = calc.Add(2, 3)  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual(len(service.held), 1)  # the host stopped reading its socket
        dialled = self.endpoint.attempts  # the host's and the channel's
        self.cut(host)
        for _ in range(30):
            self.net.advance(5)
        self.assertEqual(self.endpoint.attempts, dialled)
        self.failureResultOf(call, SoapFault)  # the gateway's Timeout
        service.held[0][0].callback(5)  # reading again: now the missing pong counts
        for _ in range(30):
            self.net.advance(5)
        self.assertEqual(self.endpoint.attempts, dialled + 1)
        self.assertTrue(host.session.is_registered)

    def test_a_message_at_the_size_limit_reaches_the_host(self) -> None:
        """
        A message as large as the name allows reaches its listener, on a name at the kind's cap.

        The gateway adds headers (wsa:To, r:Sender, ...) to what it delivers, and blocks may carry the
        declarations they inherit: what a listener receives can be larger than the name's limit. The
        listener read frames of at most the cap only, so such a message closed its connection (1009),
        failing every call on it. (The cap is made small for the test; it is 64 MiB.)
        """
        cap = 16 * 1024
        self.patch_cap(cap)
        service = Calculator()
        binding = RequestReplyBinding(max_message_bytes=cap)
        host = self.host(service, path="big", binding=binding)
        d = host.open()
        self.net.flush()
        self.successResultOf(d)
        dialled = self.endpoint.attempts
        _, calc = self.channel("big", binding=binding)
        notify = CALC.operation("Notify")
        headers = addressing_header_bytes(
            to=f"https://{HOST}/big", action=notify.action, message_id=new_message_id()
        )
        empty = len(envelope_bytes(SoapVersion.SOAP12, headers, (notify.encode_request(""),)))
        text = "x" * (cap - empty)  # the sender's envelope is as large as the name allows
        sent = calc.Notify(text)  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual(self.successResultOf(sent), 1)
        self.assertTrue(service.notified == [text], f"{len(service.notified)} notifications")
        self.assertEqual(self.endpoint.attempts, dialled + 1)  # the channel's: the host stayed connected
        self.assertTrue(host.session.is_registered)

    def patch_cap(self, cap: int) -> None:
        """Make the request/reply kind's message cap (and default limit) C{cap} bytes for this test."""
        original = MESSAGE_BYTES[REQUEST_REPLY]
        MESSAGE_BYTES[REQUEST_REPLY] = (cap, cap)
        self.addCleanup(MESSAGE_BYTES.__setitem__, REQUEST_REPLY, original)

    def test_multicast_subscribers(self) -> None:
        """Three subscribers hosted with MulticastBinding each hear every event; the publisher sees 3."""
        rooms = [ChatRoom() for _ in range(3)]
        for room in rooms:
            host = ServiceHost(
                room,
                IChat,
                f"wss://{HOST}/chat",
                MulticastBinding(),
                self.credentials(),
                reactor=self.clock,
                endpoint=self.endpoint,
            )
            host.open()
        self.net.flush()
        _, chat = self.channel("chat", IChat, MulticastBinding())
        counts = [chat.Say("me", str(i)) for i in range(20)]  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual([self.successResultOf(c) for c in counts], [3] * 20)
        for room in rooms:
            self.assertEqual(room.heard, [("me", str(i)) for i in range(20)])

    def test_close(self) -> None:
        """close() ends the registration for good."""
        host = self.host()
        self.opened(host)
        closing = host.close()
        self.net.advance(120)
        self.successResultOf(closing)
        self.assertEqual(self.endpoint.attempts, 1)
        self.assertFalse(host.session.is_registered)

    def test_reopen_before_the_close_completes(self) -> None:
        """open() right after close(): one registration, and none left after the final close()."""
        host = self.host(
            Calculator(), ICalculator, "open", RequestReplyBinding(client_auth=ClientAuth.ANONYMOUS)
        )
        d = host.open()
        self.net.flush()
        self.successResultOf(d)
        host.close()  # not awaited
        reopened = host.open()
        self.net.advance(5)
        self.successResultOf(reopened)
        self.assertTrue(host.session.is_registered)
        closing = host.close()
        self.net.advance(10)
        self.successResultOf(closing)
        listeners = [p for p in self.bindings.websocket_factory.connections if p.role_name == "listener"]
        self.assertEqual((listeners, self.endpoint.attempts), ([], 2))

    def test_one_way_binding(self) -> None:
        """A one-way host on a oneway name gets datagrams; senders learn count 1."""
        room = ChatRoom()
        host = ServiceHost(
            room,
            IChat,
            f"wss://{HOST}/events",
            OneWayBinding(),
            self.credentials(),
            reactor=self.clock,
            endpoint=self.endpoint,
        )
        host.open()
        self.net.flush()
        _, chat = self.channel("events", IChat, OneWayBinding())
        result = chat.Say("a", "b")  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual((self.successResultOf(result), room.heard), (1, [("a", "b")]))
