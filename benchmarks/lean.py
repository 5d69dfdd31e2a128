"""
Lean asyncio WebSocket peers for the scale scenarios: many senders, and a listener that accepts them all.

Neither uses Twisted or Autobahn, so that what is measured is the gateway's cost per connection, not the
peers'. uvloop is used when it is installed (the runner reports which loop ran).

    python -m benchmarks.lean listener HOST PORT ENTITY TOKEN [READ_RATE]
        Open a control channel; answer every C{accept} with a rendezvous upgrade; keep or close legs as
        the gateway says; count binary messages, reading at most READ_RATE bytes/s per leg if given.
        Prints READY when the control channel is open.

    python -m benchmarks.lean hold HOST PORT PATH TOKEN COUNT CONCURRENCY HOLD_SECONDS
        Establish COUNT sender connections (at most CONCURRENCY handshakes in flight), keep them all open
        for HOLD_SECONDS (the runner samples the gateway's memory then), close them, exit.

    python -m benchmarks.lean churn HOST PORT PATH TOKEN CONCURRENCY SECONDS
        For SECONDS, each of CONCURRENCY workers connects, waits for the 101, closes with a close frame,
        and starts again.

The timed part is framed by C{MEASURE start}/C{MEASURE end}; the result is a C{RESULT {json}} line.

Toward a loopback gateway, each connection leaves from its own loopback address (L{SourceAddresses}), as
senders on many hosts would: from one address, Linux's C{connect()} has about 14,000 quick ephemeral ports
for one destination, and searching for a free one costs more and more past them (9,000 pairs are 18,000
connections), which made the peers, not the gateway, set the pace.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any
from urllib.parse import quote, urlsplit

from benchmarks.procs import raise_nofile_limit
from benchmarks.wsraw import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    close_frame,
    frame,
    is_switching,
    split_response,
    upgrade_request,
)

WARMUP = 0.5
# senders connect from 127.64.0.1 on, the listener's rendezvous legs from 127.128.0.1 on
SENDER_BLOCK = 64
RENDEZVOUS_BLOCK = 128


class SourceAddresses:
    """Hands out a different loopback source address per connection, or none when the host is not loopback."""

    def __init__(self, host: str, block: int) -> None:
        self.loopback = host.startswith("127.")
        self.block = block
        self.issued = 0

    def next(self) -> tuple[str, int] | None:
        if not self.loopback:
            return None
        index = self.issued % (254 * 256)
        self.issued += 1
        return (f"127.{self.block}.{index // 254}.{index % 254 + 1}", 0)


def event_loop_name() -> str:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return "asyncio"
    uvloop.install()
    return f"uvloop {uvloop.__version__}"


class Client(asyncio.Protocol):
    """One raw WebSocket client connection: sends its upgrade, resolves C{opened} with the status line."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.opened: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None
        self._head = b""
        self._reader: FrameReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self._reader is None:
            self._head += data
            parsed = split_response(self._head)
            if parsed is None:
                return
            status, data = parsed
            self._head = b""
            self._reader = FrameReader()
            if not self.opened.done():
                self.opened.set_result(status)
            if not is_switching(status):
                self.transport.close()
                return
        for opcode, payload in self._reader.feed(data):
            self.frame(opcode, payload)

    def frame(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self.transport.write(frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self.transport.write(frame(OP_CLOSE, payload[:2]))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)


class Sink(Client):
    """
    A rendezvous leg that counts binary messages, reading at most C{rate} bytes per second (0: no limit).

    A C{stop} text message is answered with the counts as JSON, like the Autobahn endpoints do.
    """

    def __init__(self, request: bytes, rate: float) -> None:
        super().__init__(request)
        self.rate = rate
        self.count = 0
        self.received = 0
        self._window_start = 0.0
        self._window_bytes = 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.rate:
            self._throttle(len(data))

    def _throttle(self, size: int) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._window_start > 1.0:
            self._window_start, self._window_bytes = now, 0
        self._window_bytes += size
        ahead = self._window_bytes / self.rate - (now - self._window_start)
        if ahead > 0:
            self.transport.pause_reading()
            loop.call_later(ahead, self._resume)

    def _resume(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def frame(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_BINARY:
            self.count += 1
            self.received += len(payload)
        elif opcode == OP_TEXT and payload == b"stop":
            answer = json.dumps({"count": self.count, "bytes": self.received}).encode()
            self.transport.write(frame(OP_TEXT, answer))
        else:
            super().frame(opcode, payload)


class ControlChannel(Client):
    """A listener's control channel: every C{accept} becomes a rendezvous upgrade."""

    def __init__(self, request: bytes, host: str, port: int, read_rate: float = 0.0) -> None:
        super().__init__(request)
        self.host = host
        self.port = port
        self.sources = SourceAddresses(host, RENDEZVOUS_BLOCK)
        self.read_rate = read_rate
        self.accepted = 0
        self.failed = 0
        self.pending: set[asyncio.Future[None]] = set()

    def frame(self, opcode: int, payload: bytes) -> None:
        if opcode != OP_TEXT:
            super().frame(opcode, payload)
            return
        accept = json.loads(payload).get("accept")
        if accept is not None:
            task = asyncio.ensure_future(self.rendezvous(accept["address"]))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def rendezvous(self, address: str) -> None:
        url = urlsplit(address)
        path = f"{url.path}?{url.query}"
        loop = asyncio.get_running_loop()
        try:
            _, leg = await loop.create_connection(
                lambda: Sink(upgrade_request(url.netloc, path), self.read_rate),
                self.host,
                self.port,
                local_addr=self.sources.next(),
            )
            status = await leg.opened
        except OSError:
            self.failed += 1
            return
        if is_switching(status):
            self.accepted += 1
        else:
            self.failed += 1


async def connect(
    host: str, port: int, path: str, headers: dict[str, str], source: tuple[str, int] | None = None
) -> Client:
    loop = asyncio.get_running_loop()
    request = upgrade_request(f"{host}:{port}", path, headers)
    _, client = await loop.create_connection(lambda: Client(request), host, port, local_addr=source)
    status = await client.opened
    if not is_switching(status):
        raise ConnectionError(status)
    return client


async def listener(host: str, port: int, entity: str, token: str, read_rate: float = 0.0) -> None:
    path = f"/$hc/{entity}?sb-hc-action=listen&sb-hc-token={quote(token, safe='')}"
    loop = asyncio.get_running_loop()
    request = upgrade_request(f"{host}:{port}", path)
    _, channel = await loop.create_connection(
        lambda: ControlChannel(request, host, port, read_rate), host, port
    )
    status = await channel.opened
    if not is_switching(status):
        raise SystemExit(f"control channel refused: {status}")
    print("READY", flush=True)
    await channel.closed


def cpu_time() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


async def hold(
    host: str, port: int, path: str, token: str, count: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    headers = {"ServiceBusAuthorization": token}
    clients: list[Client] = []
    latencies: list[float] = []
    failures = 0
    next_index = 0
    sources = SourceAddresses(host, SENDER_BLOCK)

    async def worker() -> None:
        nonlocal next_index, failures
        while next_index < count:
            next_index += 1
            started = time.perf_counter()
            try:
                clients.append(await connect(host, port, path, headers, sources.next()))
            except (OSError, ConnectionError):
                failures += 1
                continue
            latencies.append(time.perf_counter() - started)

    print("MEASURE start", flush=True)
    cpu0 = cpu_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    cpu = cpu_time() - cpu0
    print("MEASURE end", flush=True)
    print(f"HOLDING {len(clients)}", flush=True)
    await asyncio.sleep(seconds)
    for client in clients:
        client.transport.abort()
    return {
        "established": len(clients),
        "failures": failures,
        "seconds": elapsed,
        "per_s": len(clients) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "loadgen_cpu": cpu / elapsed,
    }


async def churn(
    host: str, port: int, path: str, token: str, concurrency: int, seconds: float
) -> dict[str, Any]:
    headers = {"ServiceBusAuthorization": token}
    latencies: list[float] = []
    counted = 0
    failures = 0
    measuring = False
    stop = False
    sources = SourceAddresses(host, SENDER_BLOCK)

    async def worker() -> None:
        nonlocal counted, failures
        while not stop:
            started = time.perf_counter()
            try:
                client = await connect(host, port, path, headers, sources.next())
            except (OSError, ConnectionError):
                failures += 1
                await asyncio.sleep(0.01)
                continue
            if measuring and not stop:
                counted += 1
                latencies.append(time.perf_counter() - started)
            client.transport.write(close_frame(1000))
            client.transport.close()

    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    await asyncio.sleep(WARMUP)
    measuring = True
    print("MEASURE start", flush=True)
    cpu0 = cpu_time()
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    stop = True
    elapsed = time.perf_counter() - t0
    cpu = cpu_time() - cpu0
    print("MEASURE end", flush=True)
    await asyncio.gather(*workers)
    return {
        "established": counted,
        "failures": failures,
        "seconds": elapsed,
        "per_s": counted / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "loadgen_cpu": cpu / elapsed,
    }


def main(argv: list[str]) -> None:
    raise_nofile_limit()
    loop_name = event_loop_name()
    kind = argv[0]
    if kind == "listener":
        read_rate = float(argv[5]) if len(argv) > 5 else 0.0
        asyncio.run(listener(argv[1], int(argv[2]), argv[3], argv[4], read_rate))
        return
    host, port, path, token = argv[1], int(argv[2]), argv[3], argv[4]
    if kind == "hold":
        result = asyncio.run(hold(host, port, path, token, int(argv[5]), int(argv[6]), float(argv[7])))
    elif kind == "churn":
        result = asyncio.run(churn(host, port, path, token, int(argv[5]), float(argv[6])))
    else:
        raise SystemExit(f"unknown command {kind!r}")
    result["loop"] = loop_name
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
