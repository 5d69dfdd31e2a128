"""A self-hosted relay gateway: Azure Relay Hybrid Connections and WCF-style SOAP bindings."""

__all__: list[str] = []
