"""
WCF-relay-style SOAP bindings: one-way, request/reply and multicast on named relays.

Codecs (L{bindings.safexml}, L{bindings.soap}, L{bindings.addressing}, L{bindings.faults},
L{bindings.contracts}, L{bindings.wsdl}, L{bindings.registry}, L{bindings.control}, L{bindings.inbound},
L{bindings.credentials}) turn bytes into frozen values; the routers (L{bindings.oneway},
L{bindings.multicast}, L{bindings.requestreply}) and L{bindings.names} decide who gets an opaque envelope.
On the gateway, L{bindings.gateway.install} adds the C{$wcf} WebSocket endpoint (L{bindings.wcf}), the HTTP
SOAP endpoint and the service registry (L{bindings.httpsoap}). On the other side, L{bindings.host.ServiceHost}
hosts a contract, L{bindings.channels} calls one, and L{bindings.bridge} exposes an existing SOAP service.
"""

__all__: list[str] = []
