"""
End to end: an existing spyne SOAP service (WSGI under twisted.web) exposed through the bridge, called by zeep.

Both the in-process L{SoapBridge} and the C{relay soap-bridge} command (a real subprocess) are exercised.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from typing import Any

import zeep
from twisted.internet import reactor
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.web import pages
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.wsgi import WSGIResource

from bindings.bridge import BridgeError, SoapBridge
from bindings.credentials import parse_address
from bindings.soap import SoapVersion

from .e2e_support import BindingsE2E, local

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # spyne imports cgi
    from spyne import Application, Integer, ServiceBase, Unicode, rpc
    from spyne.model.fault import Fault
    from spyne.protocol.soap import Soap11, Soap12
    from spyne.server.wsgi import WsgiApplication

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bridge_process(
    test: Any, url: str, connection_string: str, *options: str, stdout: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    """C{relay soap-bridge} for the name C{legacy} as a real process, terminated at the test's end."""
    command = [sys.executable, "-m", "relay.cli", "soap-bridge", "--url", url, "--name", "legacy"]
    process = subprocess.Popen(
        [*command, "--connection-string", connection_string, *options],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=stdout,
        text=True,
    )

    def stop() -> Any:
        if process.poll() is None:  # waited for in a thread: the bridge leaves through the test's gateway
            process.terminate()
            return test.in_thread(lambda: process.wait(20))
        return None

    test.addCleanup(stop)
    return process


class LegacyCalculator(ServiceBase):  # type: ignore[misc]
    """A spyne service as teams run them on premises."""

    @rpc(Integer, Integer, _returns=Integer)  # type: ignore[misc]
    def Add(ctx, a, b):  # type: ignore[no-untyped-def]
        return a + b

    @rpc(Unicode, _returns=Unicode)  # type: ignore[misc]
    def Echo(ctx, s):  # type: ignore[no-untyped-def]
        if s == "boom":
            raise Fault(faultcode="Client.Boom", faultstring="explicit fault: boom")
        if s == "secret":
            return ctx.transport.req_env.get("HTTP_AUTHORIZATION", "none")
        return s

    @rpc(Integer, Integer, _returns=Integer)  # type: ignore[misc]
    def Divide(ctx, a, b):  # type: ignore[no-untyped-def]
        return a // b


class Held(Resource):
    """A service that keeps every call: it never answers unless the test does (C{answer}, an C{Echo} result)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []

    def render_POST(self, request: Any) -> int:
        self.requests.append(request)
        return NOT_DONE_YET

    def answer(self, text: str) -> None:
        request = self.requests.pop(0)
        request.setHeader(b"content-type", b"text/xml; charset=utf-8")
        request.write(
            b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/" xmlns:t="urn:example:legacy">'
            b"<e:Body><t:EchoResponse><t:EchoResult>%s</t:EchoResult></t:EchoResponse></e:Body></e:Envelope>"
            % text.encode()
        )
        request.finish()


def legacy_site(protocol: Any = Soap11, encoding: str = "UTF-8") -> Site:
    """The service speaking C{protocol}, its answers in C{encoding}."""
    application = Application(
        [LegacyCalculator],
        tns="urn:example:legacy",
        in_protocol=protocol(validator="lxml"),
        out_protocol=protocol(encoding=encoding),
    )
    root = Resource()
    wsgi = WSGIResource(reactor, reactor.getThreadPool(), WsgiApplication(application))
    root.putChild(b"service", wsgi)
    root.putChild(b"missing", pages.notFound())
    root.putChild(b"hanging", Held())
    return Site(root)


class BridgeTests(BindingsE2E):
    """A bridged spyne service through the gateway."""

    async def setUp(self) -> None:  # type: ignore[override]
        await self.start()
        self.port: IListeningPort = reactor.listenTCP(0, legacy_site(), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.backend = f"http://127.0.0.1:{self.port.getHost().port}/service"  # type: ignore[attr-defined]

    async def bridge(self, backend: str | None = None) -> SoapBridge:
        bridge = SoapBridge(
            backend or self.backend, parse_address(self.url("legacy")), self.credentials(), reactor=reactor
        )
        await bridge.start()
        self.addCleanup(bridge.stop)
        return bridge

    def calls(self) -> dict[str, Any]:
        client = self.zeep_client("legacy", self.token("legacy"))
        results: dict[str, Any] = {"add": client.service.Add(2, 3), "echo": client.service.Echo("hi")}
        for name, call in (
            ("boom", lambda: client.service.Echo("boom")),
            ("divide", lambda: client.service.Divide(1, 0)),
        ):
            try:
                call()
            except zeep.exceptions.Fault as fault:
                results[name] = (local(fault.code), fault.message)
        client.transport.session.headers["Authorization"] = "Basic dXNlcjpwYXNz"
        results["auth"] = client.service.Echo("secret")
        return results

    async def test_bridged_service(self) -> None:
        """zeep sees spyne's WSDL at the relay URL; calls, spyne's own faults and Authorization pass through."""
        bridge = await self.bridge()
        self.assertIs(bridge.version, SoapVersion.SOAP11)
        results = await self.in_thread(self.calls)
        self.assertEqual((results["add"], results["echo"]), (5, "hi"))
        self.assertEqual(results["boom"], ("Client.Boom", "explicit fault: boom"))
        self.assertEqual(local(results["divide"][0]), "Server")
        self.assertEqual(results["auth"], "Basic dXNlcjpwYXNz")

    async def test_backend_answering_in_latin1(self) -> None:
        """
        A service that answers in ISO-8859-1 (as its XML declaration says), in SOAP 1.1 and in SOAP 1.2.

        Its answers were refused as not UTF-8, so every call became a BackendUnavailable fault, where zeep
        calling the service directly reads them.
        """
        for protocol in (Soap11, Soap12):
            port = reactor.listenTCP(0, legacy_site(protocol, "ISO-8859-1"), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            bridge = await self.bridge(f"http://127.0.0.1:{port.getHost().port}/service")  # type: ignore[attr-defined]
            echoed = await self.in_thread(
                lambda: self.zeep_client("legacy", self.token("legacy")).service.Echo("café ñ")
            )
            self.assertEqual(echoed, "café ñ")
            await bridge.stop()

    async def test_connections_to_the_backend_are_reused(self) -> None:
        """
        Calls share one backend connection (kept alive), which the bridge closes when it stops.

        Each call had a connection of its own: against a service that closes a moment after answering,
        the bridge's side kept each socket in TIME_WAIT, and at a few hundred calls per second sustained
        the ephemeral ports ran out ("Cannot assign requested address" for every call).
        """
        site = legacy_site()
        accepted: list[object] = []
        build = site.buildProtocol
        site.buildProtocol = lambda addr: accepted.append(addr) or build(addr)  # type: ignore[method-assign]
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        bridge = await self.bridge(f"http://127.0.0.1:{port.getHost().port}/service")  # type: ignore[attr-defined]

        def calls() -> list[int]:
            client = self.zeep_client("legacy", self.token("legacy"))
            return [client.service.Add(n, 1) for n in range(5)]

        self.assertEqual(await self.in_thread(calls), [1, 2, 3, 4, 5])
        self.assertEqual(len(accepted), 1)  # the WSDL and five calls
        open_ = [
            r for r in reactor.getReaders() if getattr(getattr(r, "protocol", None), "factory", None) is site
        ]
        self.assertEqual(len(open_), 1)
        await bridge.stop()
        await self.until(
            lambda: (
                not [
                    r
                    for r in reactor.getReaders()
                    if getattr(getattr(r, "protocol", None), "factory", None) is site
                ]
            )
        )

    async def test_one_log_line_per_call(self) -> None:
        """
        A call is one line of the bridge's own; twisted's connection factory no longer adds two.

        Each call used to log "Starting factory" and "Stopping factory" too (a connection per call).
        """
        await self.bridge()
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        def add() -> Any:
            return self.zeep_client("legacy", self.token("legacy")).service.Add(2, 3)

        self.assertEqual(await self.in_thread(add), 5)
        factory_lines = [e for e in events if "factory" in str(e.get("log_format", "")).lower()]
        self.assertEqual(factory_lines, [])

    async def test_backend_down(self) -> None:
        """A backend that stops listening: callers get a Receiver fault at once, not a timeout."""
        await self.bridge()
        await self.port.stopListening()
        for reader in reactor.getReaders():  # the service's process is gone: so are its connections
            if getattr(getattr(reader, "protocol", None), "factory", None) is self.port.factory:  # type: ignore[attr-defined]
                reader.loseConnection()  # type: ignore[attr-defined]

        def call() -> tuple[str, str]:
            try:
                self.zeep_client("legacy", self.token("legacy")).service.Add(1, 1)
            except zeep.exceptions.Fault as fault:
                return local(fault.code), fault.message
            raise AssertionError("no fault")

        code, message = await self.in_thread(call)
        self.assertEqual(code, "BackendUnavailable")
        self.assertIn("could not be reached", message)

    async def test_backend_too_slow_or_too_large(self) -> None:
        """
        The fault's reason and the log line say what happened: a timeout, or an answer too large.

        Not that the backend "could not be reached", which it had been.

        A timeout used to read "could not be reached: [<twisted.python.failure.Failure
        twisted.internet.defer.CancelledError: >]", logged as status ResponseNeverReceived.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        address, credentials = parse_address(self.url("legacy")), self.credentials()
        hanging = SoapBridge(
            self.backend.replace("/service", "/hanging"),
            address,
            credentials,
            reactor=reactor,
            wsdl_url=self.backend + "?wsdl",
            request_timeout=0.5,
        )
        await hanging.start()

        def call(text: str) -> str:
            try:
                self.zeep_client("legacy", self.token("legacy")).service.Echo(text)
            except zeep.exceptions.Fault as fault:
                return f"{local(fault.code)}: {fault.message}"
            raise AssertionError("no fault")

        self.assertEqual(
            await self.in_thread(lambda: call("x")),
            "BackendUnavailable: The backend service did not answer within 0.5 seconds",
        )
        await hanging.stop()
        small = SoapBridge(self.backend, address, credentials, reactor=reactor, max_message_bytes=1000)
        await small.start()
        self.addCleanup(small.stop)
        self.assertEqual(
            await self.in_thread(lambda: call("x" * 2000)),
            "BackendUnavailable: The backend's answer is larger than 1000 bytes, the most the bridge takes",
        )
        statuses = [e["status"] for e in events if "duration_ms" in e]
        self.assertEqual(statuses, ["timeout", "too large"])

    async def test_stop_answers_the_calls_in_progress(self) -> None:
        """A bridge stopped while a call waits for the backend still answers it, then leaves."""
        held = Held()
        port = reactor.listenTCP(0, Site(held), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        bridge = SoapBridge(
            f"http://127.0.0.1:{port.getHost().port}/held",  # type: ignore[attr-defined]
            parse_address(self.url("legacy")),
            self.credentials(),
            reactor=reactor,
            wsdl_url=self.backend + "?wsdl",
        )
        await bridge.start()
        token = self.token("legacy")
        calling = self.in_thread(lambda: self.zeep_client("legacy", token).service.Echo("x"))
        await self.until(lambda: len(held.requests) == 1)
        stopping = bridge.stop()
        assert stopping is not None
        await deferLater(reactor, 0.2, lambda: None)
        self.assertFalse(stopping.called)
        held.answer("answered while stopping")
        self.assertEqual(await calling, "answered while stopping")
        await stopping

    async def held_command(self) -> tuple[Held, subprocess.Popen[str], Any]:
        """C{relay soap-bridge} to a backend that holds calls, with one call held: backend, process, call."""
        held = Held()
        port = reactor.listenTCP(0, Site(held), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        process = bridge_process(
            self,
            f"http://127.0.0.1:{port.getHost().port}/held",  # type: ignore[attr-defined]
            self.gateway.connection_string,
            "--wsdl-url",
            self.backend + "?wsdl",
        )
        await self.until(lambda: self.listener_count("legacy") == 1, timeout=20)
        token = self.token("legacy")

        def call() -> Any:
            try:
                return self.zeep_client("legacy", token).service.Echo("x")
            except zeep.exceptions.Fault as fault:
                return local(fault.code)

        calling = self.in_thread(call)
        await self.until(lambda: len(held.requests) == 1)
        process.terminate()
        await deferLater(reactor, 0.5, lambda: None)
        self.assertIsNone(process.poll())  # waiting for the call in progress
        return held, process, calling

    async def test_command_stopped_answers_the_call_in_progress(self) -> None:
        """SIGTERM: the bridge answers the call it is forwarding, then exits 0."""
        held, process, calling = await self.held_command()
        held.answer("answered while stopping")
        self.assertEqual(await calling, "answered while stopping")
        await self.in_thread(lambda: process.communicate(timeout=10))
        self.assertEqual(process.returncode, 0)

    async def test_command_second_signal_stops_at_once(self) -> None:
        """A second SIGTERM does not wait: the bridge exits, and the held call's caller gets ListenerGone."""
        _, process, calling = await self.held_command()
        process.terminate()
        await self.in_thread(lambda: process.communicate(timeout=10))
        self.assertEqual(process.returncode, 0)
        self.assertEqual(await calling, "ListenerGone")

    async def test_unusable_wsdl(self) -> None:
        """A backend whose ?wsdl is not WSDL: the bridge refuses to start."""
        missing = self.backend.replace("/service", "/missing")
        bridge = SoapBridge(missing, parse_address(self.url("legacy")), self.credentials(), reactor=reactor)
        with self.assertRaises(BridgeError):
            await bridge.start()

    async def test_command(self) -> None:
        """C{relay soap-bridge} as a real process: registers, forwards, logs one line per call, stops on SIGTERM."""
        connection_string = self.gateway.connection_string
        process = bridge_process(self, self.backend, connection_string)
        await self.until(lambda: self.listener_count("legacy") == 1, timeout=20)
        results = await self.in_thread(
            lambda: self.zeep_client("legacy", self.token("legacy")).service.Add(20, 22)
        )
        self.assertEqual(results, 42)
        process.terminate()
        _, stderr = await self.in_thread(lambda: process.communicate(timeout=10))
        self.assertIn("bridging http://127.0.0.1", stderr)
        self.assertIn("Add -> 200", stderr)
