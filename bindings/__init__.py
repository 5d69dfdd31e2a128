"""
WCF-relay-style SOAP bindings: one-way, request/reply and multicast on named relays.

Codecs (L{bindings.safexml}, L{bindings.soap}, L{bindings.addressing}, L{bindings.faults},
L{bindings.contracts}, L{bindings.wsdl}, L{bindings.registry}) turn bytes into frozen values; the routers
(L{bindings.oneway}, L{bindings.multicast}, L{bindings.requestreply}) decide who gets an opaque envelope.
"""

__all__: list[str] = []
