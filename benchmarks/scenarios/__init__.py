"""The scenarios; importing this package registers all of them."""

from benchmarks.scenarios import backpressure, http, legacy, scale, websocket

__all__ = ["backpressure", "http", "legacy", "scale", "websocket"]
