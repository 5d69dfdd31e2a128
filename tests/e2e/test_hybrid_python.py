"""
End to end on loopback: our Python listener and sender through a real gateway.

These cover the gateway's WebSocket relaying with real sockets: echo of text and binary up to 1 MB, many
senders over three listeners, rejection, refusals, token renewal, a listener dying mid-stream, and the
bound on what the gateway buffers for a slow reader.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from relay.auth import make_token
from relay.client import (
    AuthorizationError,
    ConnectError,
    EndpointNotFoundError,
    HybridConnectionClient,
    HybridConnectionListener,
    Reject,
    SharedAccessSignatureTokenProvider,
)
from relay.client.tokens import SharedAccessKeyTokenProvider
from relay.listeners import RoundRobinChooser

from .gateway import LISTEN_KEY, ROOT_KEY, SEND_KEY, RunningGateway, start_gateway


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def until(predicate: Any, timeout: float = 10.0, step: float = 0.02) -> None:
    """Wait for a condition that other parties make true (bounded, so a broken gateway fails the test)."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError("condition not reached in time")
        await sleep(step)
        waited += step


class PythonClientTests(TestCase):
    """Python client to Python client through the gateway."""

    timeout = 60

    async def listen(
        self, gateway: RunningGateway, path: str = "hyco", **kwargs: Any
    ) -> HybridConnectionListener:
        listener = HybridConnectionListener(gateway.connection_string, path, reactor=reactor, **kwargs)
        await listener.open()
        self.addCleanup(listener.close)
        return listener

    def sender(self, gateway: RunningGateway, path: str = "hyco", **kwargs: Any) -> HybridConnectionClient:
        return HybridConnectionClient(gateway.connection_string, path, reactor=reactor, **kwargs)

    async def echo_forever(self, listener: HybridConnectionListener) -> None:
        while (connection := await listener.accept_connection()) is not None:
            Deferred.fromCoroutine(self._echo(connection))

    async def _echo(self, connection: Any) -> None:
        async for message in connection:
            await connection.send(message)
        self.remote_closes.append((connection.close_code, connection.close_reason))
        await connection.close()

    def setUp(self) -> None:
        self.remote_closes: list[tuple[int | None, str | None]] = []

    async def test_text_and_binary_echo_up_to_1mb(self) -> None:
        """Text stays text, binary stays binary, sizes from 0 bytes to 1 MiB come back identical."""
        gateway = await start_gateway(self)
        listener = await self.listen(gateway)
        Deferred.fromCoroutine(self.echo_forever(listener))
        connection = await self.sender(gateway).connect(suffix="/chat", query="room=1")
        messages: list[str | bytes] = [
            "hello",
            "",
            "é" * 1000,
            b"",
            os.urandom(65536),
            os.urandom(1024 * 1024),
        ]
        for message in messages:
            await connection.send(message)
        for message in messages:
            reply = await connection.receive()
            self.assertEqual(type(reply), type(message))
            self.assertEqual(reply, message)
        await connection.close(4000, "done")
        await until(lambda: self.remote_closes)
        self.assertEqual(self.remote_closes, [(4000, "done")])
        self.assertEqual(connection.close_code, 1000)  # the listener's answer, carried back

    async def test_many_senders_over_three_listeners(self) -> None:
        """Thirty concurrent senders are spread over three listeners and each gets its own echoes."""
        gateway = await start_gateway(self, chooser=RoundRobinChooser())
        listeners = [await self.listen(gateway) for _ in range(3)]
        served = [0, 0, 0]

        async def serve(index: int) -> None:
            listener = listeners[index]
            while (connection := await listener.accept_connection()) is not None:
                served[index] += 1
                Deferred.fromCoroutine(self._echo(connection))

        for i in range(3):
            Deferred.fromCoroutine(serve(i))

        async def one_sender(n: int) -> bytes:
            connection = await self.sender(gateway).connect()
            payloads = [os.urandom(1000 + n) for _ in range(5)]
            for payload in payloads:
                await connection.send(payload)
            digest = hashlib.sha256()
            for payload in payloads:
                reply = await connection.receive()
                self.assertEqual(reply, payload)
                digest.update(reply)  # type: ignore[arg-type]
            await connection.close()
            return digest.digest()

        results = await DeferredList(
            [Deferred.fromCoroutine(one_sender(n)) for n in range(30)], fireOnOneErrback=True
        )
        self.assertEqual(len(results), 30)
        self.assertEqual(served, [10, 10, 10])

    async def test_listener_rejects(self) -> None:
        """A listener's rejection reaches the sender with the listener's status and description."""
        gateway = await start_gateway(self)

        def refuse(context: Any) -> None:
            raise Reject(451, "Not today")

        await self.listen(gateway, accept_handler=refuse)
        with self.assertRaises(ConnectError) as ctx:
            await self.sender(gateway).connect()
        self.assertEqual(ctx.exception.status_code, 451)
        self.assertIn("Not today", str(ctx.exception))

    async def test_no_listener(self) -> None:
        """A sender with no listener online gets 404."""
        gateway = await start_gateway(self)
        with self.assertRaises(EndpointNotFoundError) as ctx:
            await self.sender(gateway).connect()
        self.assertEqual(ctx.exception.status_code, 404)

    async def test_token_refusals(self) -> None:
        """Bad signature and expired tokens get 401; a token without the right or for another HC gets 403."""
        gateway = await start_gateway(self)
        await self.listen(gateway)
        cases = [
            (make_token(f"http://{gateway.host}/hyco", "root", "wrong-key-0123456789", ttl=600), 401),
            (make_token(f"http://{gateway.host}/hyco", "root", ROOT_KEY, ttl=-10), 401),
            (make_token(f"http://{gateway.host}/hyco", "nobody", ROOT_KEY, ttl=600), 401),
            (make_token(f"http://{gateway.host}/hyco", "listen-only", LISTEN_KEY, ttl=600), 403),
            (make_token(f"http://{gateway.host}/other", "root", ROOT_KEY, ttl=600), 403),
        ]
        for token, status in cases:
            client = self.sender(gateway, token_provider=SharedAccessSignatureTokenProvider(token))
            with self.assertRaises(ConnectError) as ctx:
                await client.connect()
            self.assertEqual(ctx.exception.status_code, status, token)
        send_only = self.sender(gateway, token_provider=SharedAccessKeyTokenProvider("send-only", SEND_KEY))
        listener_refused = HybridConnectionListener(
            gateway.connection_string,
            "hyco",
            SharedAccessKeyTokenProvider("send-only", SEND_KEY),
            reactor=reactor,
        )
        with self.assertRaises(AuthorizationError) as ctx2:
            await listener_refused.open()
        self.assertEqual(ctx2.exception.status_code, 403)
        accepted = await send_only.connect()  # a Send-only rule is enough for senders
        await accepted.close()

    async def test_token_renewal_keeps_the_listener_online(self) -> None:
        """A listener whose tokens live 2 s renews them and stays registered well past the first expiry."""
        gateway = await start_gateway(self)
        provider = SharedAccessKeyTokenProvider("root", ROOT_KEY)
        listener = await self.listen(gateway, token_provider=provider, token_ttl=2.0, renew_fraction=0.5)
        first = listener.control_channel
        await sleep(4.5)
        self.assertTrue(listener.is_online)
        self.assertIs(listener.control_channel, first)
        self.assertEqual(gateway.service.registry.total(), 1)

    async def test_listener_dies_mid_stream(self) -> None:
        """When the listener's socket dies during a transfer, the sender is closed with 1001."""
        gateway = await start_gateway(self)
        listener = await self.listen(gateway)
        accepted: Deferred[Any] = listener.accept_connection()
        connection = await self.sender(gateway).connect()
        remote = await accepted
        await connection.send(os.urandom(100000))
        await remote.receive()
        remote.abort()
        await connection.when_closed()
        self.assertEqual(connection.close_code, 1001)

    async def test_slow_reader_bounds_gateway_buffer(self) -> None:
        """
        A sender writing 48 MiB to a listener that does not read is stalled by back-pressure.

        What the gateway buffers for the pair never exceeds its bound, and every byte arrives once the
        reader reads.
        """
        buffer_bytes = 65536
        gateway = await start_gateway(self, limits={"splice_buffer_bytes": float(buffer_bytes)})
        listener = await self.listen(gateway)
        accepted: Deferred[Any] = listener.accept_connection()
        connection = await self.sender(gateway).connect()
        remote = await accepted
        (splice,) = gateway.service.hybrid_factory.splices
        bound = 2 * buffer_bytes + 65536  # one full write buffer plus one read per direction, plus headers

        chunk = os.urandom(256 * 1024)
        total = 192
        peak = 0
        sent_digest = hashlib.sha256()

        async def write_all() -> None:
            for _ in range(total):
                sent_digest.update(chunk)
                await connection.send(chunk)

        writing = Deferred.fromCoroutine(write_all())
        # The reader has not read a byte: sample the gateway while the sender pushes against it.
        for _ in range(150):
            await sleep(0.01)
            peak = max(peak, splice.buffered_bytes())
        self.assertFalse(writing.called, "the sender was not held back")
        self.assertLessEqual(peak, bound)
        self.assertGreater(peak, 0)
        received = hashlib.sha256()
        count = 0
        while count < total:
            message = await remote.receive()
            received.update(message)
            count += 1
            peak = max(peak, splice.buffered_bytes())
        await writing
        self.assertLessEqual(peak, bound)
        self.assertEqual(received.hexdigest(), sent_digest.hexdigest())
        await connection.close()
