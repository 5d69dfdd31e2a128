"""
The WebSocket load generator process: one connection, blocking socket, frames built once.

    python -m benchmarks.loadgen throughput HOST PORT PATH SIZE SECONDS [HEADERS_JSON [PING_MS]]
    python -m benchmarks.loadgen latency HOST PORT PATH SECONDS [HEADERS_JSON]
    python -m benchmarks.loadgen stream HOST PORT PATH BYTES [HEADERS_JSON]

It prints C{MEASURE start} and C{MEASURE end} around the timed part (the runner samples other processes'
CPU time there) and a final C{RESULT {json}} line. Throughput: binary messages of SIZE bytes are written
in batches for SECONDS after a warm-up; a C{reset} command starts the count and the clock at the
endpoint and C{stop} ends them; the endpoint's count must equal what was sent after C{reset}. With
PING_MS, a ping goes out between batches whenever that many milliseconds have passed since the last one;
the gateway answers it, and the pongs are counted at the end (none at all is an error). Latency: one
64-byte message in flight, echoed by the endpoint; every round trip is timed.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from benchmarks.wsraw import (
    OP_BINARY,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    connect,
    frame,
    receive_message,
)

WARMUP = 0.5
STREAM_IDLE = 1.5
BATCH_BYTES = 256 * 1024


def cpu_time() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def throughput(
    host: str,
    port: int,
    path: str,
    size: int,
    seconds: float,
    headers: dict[str, str],
    ping_every: float = 0.0,
) -> dict[str, float]:
    sock, rest = connect(host, port, path, headers)
    one = frame(OP_BINARY, bytes(size))
    per_batch = max(1, BATCH_BYTES // len(one))
    batch = one * per_batch
    start = time.perf_counter()
    while time.perf_counter() - start < WARMUP:
        sock.sendall(batch)
    sock.sendall(frame(OP_TEXT, b"reset"))
    print("MEASURE start", flush=True)
    cpu0 = cpu_time()
    t0 = time.perf_counter()
    sent = 0
    pings = 0
    last_ping = t0
    while (now := time.perf_counter()) - t0 < seconds:
        if ping_every and now - last_ping >= ping_every:
            sock.sendall(frame(OP_PING, b"%d" % pings))
            pings += 1
            last_ping = now
        sock.sendall(batch)
        sent += per_batch
    sock.sendall(frame(OP_TEXT, b"stop"))
    reader = FrameReader()
    pending = reader.feed(rest)
    skipped: list[int] = []
    opcode, answer = receive_message(sock, reader, pending, skipped)
    cpu = cpu_time() - cpu0
    print("MEASURE end", flush=True)
    counts = json.loads(answer)
    if opcode != OP_TEXT or counts["count"] != sent or counts["bytes"] != sent * size:
        raise SystemExit(f"endpoint counted {counts} but {sent} messages were sent")
    pongs = skipped.count(OP_PONG)
    if pings and not pongs:  # several pings may share one pong (RFC 6455 5.5.3), but none is an error
        raise SystemExit(f"{pings} pings were sent and no pong came back")
    sock.close()
    elapsed = counts["seconds"]
    return {
        "messages": sent,
        "seconds": elapsed,
        "msg_per_s": sent / elapsed,
        "mb_per_s": sent * size / elapsed / 1e6,
        "loadgen_cpu": cpu / (time.perf_counter() - t0),
        "pings": pings,
        "pongs": pongs,
    }


def latency(host: str, port: int, path: str, seconds: float, headers: dict[str, str]) -> dict[str, float]:
    sock, rest = connect(host, port, path, headers)
    sock.sendall(frame(OP_TEXT, b"echo"))
    message = frame(OP_BINARY, bytes(range(64)))
    reader = FrameReader()
    pending = reader.feed(rest)
    samples: list[int] = []
    clock = time.perf_counter_ns
    start = time.perf_counter()
    measuring = False
    cpu0 = 0.0
    t0 = 0.0
    while True:
        now = time.perf_counter()
        if not measuring and now - start >= WARMUP:
            measuring = True
            print("MEASURE start", flush=True)
            cpu0 = cpu_time()
            t0 = now
        elif measuring and now - t0 >= seconds:
            break
        before = clock()
        sock.sendall(message)
        opcode, payload = receive_message(sock, reader, pending)
        after = clock()
        if opcode != OP_BINARY or len(payload) != 64:
            raise SystemExit(f"unexpected echo: opcode {opcode}, {len(payload)} bytes")
        if measuring:
            samples.append(after - before)
    elapsed = time.perf_counter() - t0
    cpu = cpu_time() - cpu0
    print("MEASURE end", flush=True)
    sock.close()
    samples.sort()
    n = len(samples)
    return {
        "round_trips": n,
        "p50_us": samples[n // 2] / 1000,
        "p99_us": samples[min(n - 1, int(n * 0.99))] / 1000,
        "mean_us": sum(samples) / n / 1000,
        "loadgen_cpu": cpu / elapsed,
    }


def stream(host: str, port: int, path: str, total: int, headers: dict[str, str]) -> dict[str, float]:
    """Send C{total} bytes as 1 MiB binary messages as fast as the relay takes them; check they all arrived."""
    sock, rest = connect(host, port, path, headers)
    print("CONNECTED", flush=True)
    time.sleep(STREAM_IDLE)  # the runner samples the gateway's idle memory now
    size = 1024 * 1024
    one = frame(OP_BINARY, bytes(size))
    count = total // size
    print("MEASURE start", flush=True)
    t0 = time.perf_counter()
    for _ in range(count):
        sock.sendall(one)
    sock.sendall(frame(OP_TEXT, b"stop"))
    reader = FrameReader()
    opcode, answer = receive_message(sock, reader, reader.feed(rest))
    elapsed = time.perf_counter() - t0
    print("MEASURE end", flush=True)
    counts = json.loads(answer)
    if opcode != OP_TEXT or counts["count"] != count or counts["bytes"] != count * size:
        raise SystemExit(f"listener counted {counts} but {count} messages were sent")
    sock.close()
    return {"bytes": count * size, "seconds": elapsed, "mb_per_s": count * size / elapsed / 1e6}


def main(argv: list[str]) -> None:
    kind = argv[0]
    if kind == "throughput":
        host, port, path, size, seconds = argv[1], int(argv[2]), argv[3], int(argv[4]), float(argv[5])
        headers = json.loads(argv[6]) if len(argv) > 6 else {}
        ping_every = float(argv[7]) / 1000 if len(argv) > 7 else 0.0
        result = throughput(host, port, path, size, seconds, headers, ping_every)
    elif kind == "latency":
        host, port, path, seconds = argv[1], int(argv[2]), argv[3], float(argv[4])
        headers = json.loads(argv[5]) if len(argv) > 5 else {}
        result = latency(host, port, path, seconds, headers)
    elif kind == "stream":
        host, port, path, total = argv[1], int(argv[2]), argv[3], int(argv[4])
        headers = json.loads(argv[5]) if len(argv) > 5 else {}
        result = stream(host, port, path, total, headers)
    else:
        raise SystemExit(f"unknown load {kind!r}")
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
