"""Expose the gateway as C{twistd relay}; everything else lives in L{relay.tap}."""

from twisted.application.service import ServiceMaker

relay = ServiceMaker(
    "relay",
    "relay.tap",
    "Relay gateway: Azure Relay Hybrid Connections and SOAP relay bindings",
    "relay",
)
