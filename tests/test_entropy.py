"""Tests for L{relay.entropy}: 16-byte values from a pool of kernel draws, none handed out twice."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from relay import entropy


@pytest.fixture
def fresh_pool() -> Any:
    """An empty pool before and after the test."""
    entropy._pool.clear()
    yield
    entropy._pool.clear()


def test_values_are_sixteen_bytes_and_distinct(fresh_pool: None) -> None:
    values = [entropy.random16() for _ in range(5000)]
    assert all(type(v) is bytes and len(v) == 16 for v in values)
    assert len(set(values)) == len(values)


def test_one_kernel_draw_serves_256_values(fresh_pool: None, monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[int] = []
    real = os.urandom

    def counting(n: int) -> bytes:
        draws.append(n)
        return real(n)

    monkeypatch.setattr(entropy.os, "urandom", counting)
    blocks = [entropy.random16() for _ in range(256)]
    assert draws == [4096]
    entropy.random16()
    assert draws == [4096, 4096]
    assert b"".join(reversed(blocks)) != b"\0" * 4096


def test_values_are_the_kernel_bytes_in_order_of_slices(
    fresh_pool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = bytes(range(256)) * 16
    monkeypatch.setattr(entropy.os, "urandom", lambda n: block[:n])
    values = [entropy.random16() for _ in range(256)]
    assert sorted(values) == sorted(block[i : i + 16] for i in range(0, 4096, 16))
    assert set(values) == {block[i : i + 16] for i in range(0, 256, 16)}  # the block repeats every 256 bytes


def test_threads_never_share_a_value(fresh_pool: None) -> None:
    results: list[list[bytes]] = [[] for _ in range(4)]

    def draw(into: list[bytes]) -> None:
        for _ in range(3000):
            into.append(entropy.random16())

    threads = [threading.Thread(target=draw, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [v for r in results for v in r]
    assert len(set(every)) == len(every) == 12000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_never_hands_out_its_parents_values(fresh_pool: None) -> None:
    entropy.random16()  # the pool now holds 255 values
    assert len(entropy._pool) == 255
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next 255 values, and whether its pool was empty
        try:
            empty = len(entropy._pool) == 0
            os.write(write_end, bytes([empty]) + b"".join(entropy.random16() for _ in range(255)))
        finally:
            os._exit(0)
    os.close(write_end)
    received = b""
    while chunk := os.read(read_end, 65536):
        received += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    assert received[0] == 1
    child = {received[i : i + 16] for i in range(1, len(received), 16)}
    parent = {entropy.random16() for _ in range(255)}
    assert len(child) == 255
    assert not child & parent
