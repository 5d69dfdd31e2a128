"""The scenarios; importing this package registers all of them."""

from benchmarks.scenarios import http, legacy, websocket

__all__ = ["http", "legacy", "websocket"]
