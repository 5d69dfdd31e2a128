"""The scenarios; importing this package registers all of them."""

from benchmarks.scenarios import backpressure, cost, http, httpfloor, httptls, legacy, scale, websocket

__all__ = ["backpressure", "cost", "http", "httpfloor", "httptls", "legacy", "scale", "websocket"]
