"""
End to end with zeep as the third-party SOAP client: a real gateway on loopback, our ServiceHost as listener.

zeep is synchronous, so every zeep call runs in a thread while the reactor keeps serving.
"""

from __future__ import annotations

from typing import Any

import requests
import zeep
from lxml import etree
from twisted.internet.defer import Deferred
from zeep.plugins import HistoryPlugin

from bindings.addressing import read_addressing, relay_token_header
from bindings.contracts import ContractError
from bindings.faults import SoapFault
from bindings.settings import ClientAuth, RequestReplyBinding
from bindings.soap import SoapVersion, parse_envelope

from .calculator import DivideByZero, ICalculator, IChecked
from .e2e_support import LISTEN_KEY, SEND_KEY, BindingsE2E, local
from .services import Calculator, Checked

WS_PORT = ("ICalculatorService", "ICalculator_ws")


class Recorder:
    """Keeps what a listener was delivered."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.seen: list[Any] = []

    def handle(self, envelope: Any) -> Deferred[Any]:
        self.seen.append(envelope)
        return self.handler.handle(envelope)  # type: ignore[no-any-return]


class ZeepTests(BindingsE2E):
    """zeep -> gateway HTTP (SOAP 1.1 and 1.2) -> our ServiceHost over $wcf."""

    async def setUp(self) -> None:  # type: ignore[override]
        await self.start()
        self.calculator = Calculator()
        self.service_host = await self.host(self.calculator, ICalculator)
        self.recorder = Recorder(self.service_host.session.handler)
        self.service_host.session.handler = self.recorder
        self.token_value = self.token("calc")

    async def test_soap11_request_reply(self) -> None:
        """Add(2, 3) over the basic port is 5; the listener saw SOAP 1.2 with WS-A and To = public URL."""

        def call() -> int:
            return self.zeep_client("calc", self.token_value).service.Add(2, 3)  # type: ignore[no-any-return]

        self.assertEqual(await self.in_thread(call), 5)
        seen = self.recorder.seen[0]
        self.assertEqual(seen.version, SoapVersion.SOAP12)
        self.assertEqual(read_addressing(seen).to, self.url("calc"))

    async def test_soap12_request_reply(self) -> None:
        """Add(40, 2) over the ws port is 42; the reply relates to zeep's own MessageID."""
        history = HistoryPlugin()

        def call() -> int:
            client = self.zeep_client("calc", self.token_value, plugins=[history])
            return client.bind(*WS_PORT).Add(40, 2)  # type: ignore[no-any-return]

        self.assertEqual(await self.in_thread(call), 42)
        sent = parse_envelope(etree.tostring(history.last_sent["envelope"]), SoapVersion.SOAP12)
        received = parse_envelope(etree.tostring(history.last_received["envelope"]), SoapVersion.SOAP12)
        self.assertEqual(read_addressing(received).relates_to, read_addressing(sent).message_id)

    async def test_one_way(self) -> None:
        """Notify over HTTP returns None (202, empty body); the service got exactly one message."""

        def call() -> object:
            return self.zeep_client("calc", self.token_value).service.Notify("x")

        self.assertIsNone(await self.in_thread(call))
        await self.until(lambda: self.calculator.notified)
        self.assertEqual(self.calculator.notified, ["x"])

    async def test_declared_fault(self) -> None:
        """Divide(1, 0): SOAP 1.1 Client fault with the typed detail; SOAP 1.2 Sender fault, HTTP 400."""

        def call() -> tuple[Any, Any]:
            client = self.zeep_client("calc", self.token_value)
            faults = []
            for service in (client.service, client.bind(*WS_PORT)):
                try:
                    service.Divide(1, 0)
                except zeep.exceptions.Fault as fault:
                    faults.append(fault)
            return faults[0], faults[1]

        basic, ws = await self.in_thread(call)
        self.assertEqual((local(basic.code), basic.message), ("Client", "Division by zero."))
        self.assertEqual(basic.detail[0].findtext("{urn:example:calc}dividend"), "1")
        self.assertEqual(local(ws.code), "Sender")

    async def test_undeclared_fault(self) -> None:
        """An undeclared exception: a generic reason, unless the host includes exception detail."""

        def call(name: str) -> Any:
            try:
                self.zeep_client(name, self.token(name)).service.Add(666, 0)
            except zeep.exceptions.Fault as fault:
                return fault
            raise AssertionError("no fault")

        generic = await self.in_thread(lambda: call("calc"))
        self.assertEqual(local(generic.code), "InternalServiceFault")
        self.assertNotIn("beast", generic.message)
        await self.host(Calculator(), ICalculator, "legacy", include_exception_detail=True)
        detailed = await self.in_thread(lambda: call("legacy"))
        self.assertEqual(detailed.message, "the number of the beast")
        self.assertEqual(
            await self.in_thread(lambda: self.zeep_client("calc", self.token_value).service.Add(1, 1)), 2
        )
        self.flushLoggedErrors(RuntimeError)

    async def test_timeout_and_listener_gone(self) -> None:
        """A service slower than request_timeout: 504 Timeout; the listener leaving mid-request: ListenerGone."""
        self.calculator.hold = True

        def call() -> Any:
            try:
                self.zeep_client("calc", self.token_value).service.Add(1, 2)
            except zeep.exceptions.Fault as fault:
                return fault
            raise AssertionError("no fault")

        timed_out = await self.in_thread(call)
        self.assertEqual(local(timed_out.code), "Timeout")
        self.calculator.held[0][0].callback(3)  # a late reply, dropped by the gateway
        calling = self.in_thread(call)
        await self.until(lambda: len(self.calculator.held) == 2)
        await self.service_host.abort()
        gone = await calling
        self.assertEqual(local(gone.code), "ListenerGone")

    async def test_close_answers_the_call_in_progress(self) -> None:
        """Over real sockets: a call the host is serving when close() is called still gets its answer."""
        self.calculator.hold = True
        token = self.token_value
        calling = self.in_thread(lambda: self.zeep_client("calc", token).service.Add(1, 2))
        await self.until(lambda: len(self.calculator.held) == 1)
        closing = self.service_host.close()
        await self.until(lambda: self.service_host.session._leaving is not None)
        await self.until(lambda: self.service_host.session._leaving.fenced)  # type: ignore[union-attr]
        self.assertFalse(closing.called)
        self.calculator.held[0][0].callback(3)
        self.assertEqual(await calling, 3)
        await closing

    async def test_no_listener(self) -> None:
        """With no listener left the name still serves its WSDL, and calls fail with NoListener (502)."""
        await self.service_host.close()

        def call() -> tuple[int, Any]:
            client = self.zeep_client("calc", self.token_value)
            try:
                client.service.Add(1, 2)
            except zeep.exceptions.Fault as fault:
                body = b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Add xmlns="urn:example:calc"/></s:Body></s:Envelope>'
                session = self.session(self.token_value)
                return session.post(
                    self.url("calc"), data=body, headers={"Content-Type": "text/xml"}
                ).status_code, fault
            raise AssertionError("no fault")

        status, fault = await self.in_thread(call)
        self.assertEqual((local(fault.code), status), ("NoListener", 502))

    async def test_tokens(self) -> None:
        """No token: 401; Listen-only: 403; RelayAccessToken SOAP header alone works and is stripped."""

        def call(token: str | None, soap_token: str | None = None) -> Any:
            client = self.zeep_client("calc", self.token_value)  # reading the WSDL needs Send too
            client.transport.session.headers.pop("ServiceBusAuthorization")
            if token is not None:
                client.transport.session.headers["ServiceBusAuthorization"] = token
            headers = [relay_token_header(soap_token)] if soap_token else None
            try:
                return client.service.Add(2, 2, _soapheaders=headers)
            except zeep.exceptions.Fault as fault:
                return local(fault.code)

        self.assertEqual(await self.in_thread(lambda: call(None)), "Unauthorized")
        listen_only = self.token("calc", "listen-only", LISTEN_KEY)
        self.assertEqual(await self.in_thread(lambda: call(listen_only)), "Forbidden")
        send_only = self.token("calc", "send-only", SEND_KEY)
        self.assertEqual(await self.in_thread(lambda: call(None, send_only)), 4)
        self.assertNotIn(b"RelayAccessToken", self.recorder.seen[-1].to_bytes())

    async def test_anonymous_name(self) -> None:
        """On an anonymous name zeep needs no token; the listener still needed Listen."""
        await self.host(
            Calculator(), ICalculator, "open", RequestReplyBinding(client_auth=ClientAuth.ANONYMOUS)
        )
        self.assertEqual(await self.in_thread(lambda: self.zeep_client("open").service.Add(3, 4)), 7)

    async def test_hostile_xml(self) -> None:
        """Hostile documents over real HTTP: 400 InvalidMessage, nothing reaches the listener."""
        secret = self.mktemp()
        with open(secret, "w") as f:
            f.write("TOP-SECRET")
        documents = [
            f'<!DOCTYPE s:Envelope [<!ENTITY x SYSTEM "file://{secret}">]>',
            '<!DOCTYPE s:Envelope [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>',
            '<?xml-stylesheet href="x"?>',
        ]
        body = '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><c:Add xmlns:c="urn:example:calc"><c:a>1</c:a><c:b>2</c:b></c:Add></s:Body></s:Envelope>'

        def post_all() -> list[tuple[int, bytes]]:
            session = self.session(self.token_value)
            headers = {"Content-Type": "application/soap+xml"}
            return [
                (r.status_code, r.content)
                for r in (
                    session.post(self.url("calc"), data=(d + body).encode(), headers=headers)
                    for d in documents
                )
            ]

        for status, content in await self.in_thread(post_all):
            self.assertEqual(status, 400)
            self.assertIn(b"InvalidMessage", content)
            self.assertNotIn(b"TOP-SECRET", content)
        self.assertEqual(self.recorder.seen, [])

    async def test_version_mismatch(self) -> None:
        """A SOAP 1.2 envelope posted as text/xml gets a VersionMismatch fault."""

        def post() -> requests.Response:
            body = b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body/></s:Envelope>'
            return self.session(self.token_value).post(
                self.url("calc"), data=body, headers={"Content-Type": "text/xml"}
            )

        response = await self.in_thread(post)
        self.assertIn(b"VersionMismatch", response.content)


class ChannelFactoryTests(BindingsE2E):
    """Our ChannelFactory over a real $wcf WebSocket."""

    async def test_calls(self) -> None:
        """Typed results, many requests in flight at once, declared faults and one-way counts."""
        await self.start()
        calculator = Calculator()
        await self.host(calculator, ICalculator)
        _, calc = self.channel(ICalculator, "calc")
        results = await _gather([calc.Add(i, i) for i in range(50)])
        self.assertEqual(results, [2 * i for i in range(50)])
        try:
            await calc.Divide(9, 0)
        except SoapFault as fault:
            self.assertEqual(fault.declared, DivideByZero(9))
        else:
            self.fail("no fault")
        self.assertEqual(await calc.Notify("n"), 1)
        await self.until(lambda: calculator.notified)
        self.assertEqual(calculator.notified, ["n"])

    async def test_an_undecodable_reply_fails_only_its_call(self) -> None:
        """A reply the contract cannot rebuild fails its call; the connection and other calls on it live on."""
        await self.start()
        service = Checked()
        service.hold = True
        await self.host(service, IChecked, "legacy")
        _, checked = self.channel(IChecked, "legacy")
        slow = checked.Echo(7)
        await self.until(lambda: service.held)
        with self.assertRaises(ContractError):
            await checked.Make(0)
        service.held[0].callback(7)
        self.assertEqual(await slow, 7)


async def _gather(calls: list[Deferred[Any]]) -> list[Any]:
    return [await c for c in calls]
