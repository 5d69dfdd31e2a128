"""Hybrid Connections: the listener control channel, rendezvous and the sender splice."""

__all__: list[str] = []
