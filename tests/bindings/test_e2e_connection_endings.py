"""End to end on loopback: a $wcf listener that closes gives its namespace place and its registration back."""

from __future__ import annotations

import socket

from autobahn.twisted.websocket import WebSocketClientFactory, connectWS
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater

from bindings.addressing import new_message_id
from bindings.contracts import contract_of
from bindings.control import Registration, register_envelope
from bindings.gateway import install
from bindings.settings import ENTITY_SECTIONS, REQUEST_REPLY
from bindings.wsdl import generate_wsdl
from relay.writes import pending_write_bytes

from ..e2e.gateway import start_gateway
from ..e2e.test_gateway_smoke import Client
from ..e2e.test_hybrid_python import until
from ..httpharness import RawHttpClient
from .calculator import ICalculator
from .e2e_support import CONFIG, BindingsE2E
from .test_httpsoap import ADD, soap11


class WcfListenerCloseTests(BindingsE2E):
    timeout = 60

    async def test_listener_closes_with_unsent_requests(self) -> None:
        """The listener closes (clean handshake) while requests it did not read wait in the gateway."""
        self.gateway = gateway = await start_gateway(
            self,
            CONFIG,
            extra_sections=ENTITY_SECTIONS,
            extensions=(install,),
            limits={"close_handshake_timeout": 1.0},
        )
        self.addCleanup(self.http_quiet)
        token = gateway.token("calc")
        factory = WebSocketClientFactory(
            f"{gateway.ws_url}/$wcf/calc?sb-wcf-action=listen",
            headers={"ServiceBusAuthorization": token},
            protocols=["soap"],
            reactor=reactor,
        )
        factory.protocol = Client
        built: list[Client] = []
        build = factory.buildProtocol
        factory.buildProtocol = lambda addr: built.append(build(addr)) or built[-1]  # type: ignore[method-assign]
        connectWS(factory)
        await until(lambda: built)
        listener = built[0]
        await listener.opened
        wsdl = generate_wsdl(contract_of(ICalculator), "sb://elsewhere/x")
        listener.sendMessage(
            register_envelope(Registration(kind=REQUEST_REPLY, wsdl=wsdl), new_message_id()).to_bytes(),
            isBinary=False,
        )
        await listener.next_message()  # r:Registered
        (protocol,) = self.bindings.websocket_factory.connections
        protocol.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        listener.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.transport.pauseProducing()  # the listener reads nothing more
        body = soap11(f"<c:Add><c:a>1</c:a><c:b>2</c:b></c:Add><!-- {'x' * 20000} -->")
        headers = {
            "Content-Type": "text/xml",
            "SOAPAction": f'"{ADD.action}"',
            "ServiceBusAuthorization": token,
        }
        callers = []
        try:
            for _ in range(400):
                caller = await connectProtocol(
                    TCP4ClientEndpoint(reactor, "127.0.0.1", gateway.port), RawHttpClient()
                )
                caller.request("POST", "/calc", headers, body, host="127.0.0.1")
                callers.append(caller)
            await until(lambda: pending_write_bytes(protocol.transport) > 0)
            self.assertEqual(self.listener_count("calc"), 1)

            listener.closeHandshakeTimeout = 0  # it waits for the gateway to end the connection
            listener.sendClose(1000)
            await until(lambda: protocol.state == protocol.STATE_CLOSED)  # handshake done
            await deferLater(
                reactor, 4, lambda: None
            )  # every call has had its answer (request_timeout 1.5 s)
            self.assertEqual((self.listener_count("calc"), gateway.service.connections.count("test")), (0, 0))
        finally:
            for caller in callers:
                caller.transport.abortConnection()
            listener.transport.abortConnection()
            await deferLater(reactor, 0.2, lambda: None)
