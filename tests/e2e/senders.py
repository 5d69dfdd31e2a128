"""
Real HTTP senders for end-to-end tests, behind one interface: curl, Python requests, treq, Node https.

Each sends one request and reports an L{Outcome}: status and headers, and the body's length and SHA-256
(hashed as it arrives, so 200 MB downloads are never held), or the error the client reported. Bodies are
bytes or a L{Bulk} payload (generated while it is sent: the AES-CTR stream of C{nodeharness.bulk_chunks},
the same bytes the Node scripts produce).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import SkipTest

import requests
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from .nodeharness import bulk_chunks, spawn_script


@dataclass(frozen=True)
class Bulk:
    """A bulk payload of C{length} bytes (request index C{index} of the scripts' definition)."""

    length: int
    seed: str = "relay"
    index: int = 0

    def chunks(self, size: int = 65536) -> Iterator[bytes]:
        return bulk_chunks(self.length, self.seed, self.index, size)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.chunks():
            digest.update(chunk)
        return digest.hexdigest()


Body = bytes | Bulk


@dataclass
class Outcome:
    """What a sender got: C{status} is C{None} when the exchange failed (C{error} says how)."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    length: int = 0
    sha256: str = hashlib.sha256(b"").hexdigest()
    head: bytes = b""
    error: str | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class _Digest:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.length = 0
        self.head = b""

    def update(self, data: bytes) -> None:
        self.hash.update(data)
        self.length += len(data)
        if len(self.head) < 4096:
            self.head += data[: 4096 - len(self.head)]

    def fill(self, outcome: Outcome) -> Outcome:
        outcome.length, outcome.sha256, outcome.head = self.length, self.hash.hexdigest(), self.head
        return outcome


def _body_sha256(body: Body | None) -> str:
    if body is None:
        return hashlib.sha256(b"").hexdigest()
    return body.sha256() if isinstance(body, Bulk) else hashlib.sha256(body).hexdigest()


class Sender:
    """Base class: C{send} one request, get an L{Outcome}."""

    name = "sender"

    def __init__(self, case: TestCase) -> None:
        self.case = case

    async def send(
        self, url: str, method: str = "GET", headers: dict[str, str] | None = None, body: Body | None = None
    ) -> Outcome:
        raise NotImplementedError


class _CurlProcess(ProcessProtocol):
    def __init__(self) -> None:
        self.digest = _Digest()
        self.stderr = b""
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.digest.update(data)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        code = 0 if reason.check(ProcessDone) else int(getattr(reason.value, "exitCode", None) or 1)
        self.ended.callback(code)


class Curl(Sender):
    """The curl command line tool (bulk bodies are written to a temporary file and streamed with C{-T})."""

    name = "curl"

    def __init__(self, case: TestCase) -> None:
        super().__init__(case)
        self.executable = shutil.which("curl")
        if self.executable is None:
            raise SkipTest("curl is not installed")

    async def send(
        self, url: str, method: str = "GET", headers: dict[str, str] | None = None, body: Body | None = None
    ) -> Outcome:
        workdir = tempfile.mkdtemp(prefix="relay-curl-")
        self.case.addCleanup(shutil.rmtree, workdir, True)
        head_file = os.path.join(workdir, "head")
        args = [
            self.executable or "curl",
            "-sS",
            "-D",
            head_file,
            "-o",
            "-",
            "-w",
            "%{stderr}STATUS:%{http_code}",
        ]
        args += ["--head"] if method == "HEAD" else ["-X", method]
        for name, value in (headers or {}).items():
            args += ["-H", f"{name}: {value}"]
        if body is not None:
            body_file = os.path.join(workdir, "body")
            with open(body_file, "wb") as f:
                for chunk in body.chunks() if isinstance(body, Bulk) else [body]:
                    f.write(chunk)
            args += ["-T", body_file] if isinstance(body, Bulk) else ["--data-binary", "@" + body_file]
        args.append(url)
        process = _CurlProcess()
        reactor.spawnProcess(process, args[0], args, env=os.environ.copy())  # type: ignore[attr-defined]
        exit_code = await process.ended
        stderr = process.stderr.decode("utf-8", "replace")
        status_text = stderr.rpartition("STATUS:")[2].strip()
        headers_seen: dict[str, str] = {}
        if os.path.exists(head_file):
            with open(head_file, "rb") as f:
                blocks = f.read().decode("latin-1").strip().split("\r\n\r\n")
            for line in blocks[-1].split("\r\n")[1:]:
                name, _, value = line.partition(": ")
                key = name.lower()
                headers_seen[key] = f"{headers_seen[key]}, {value}" if key in headers_seen else value
        if method == "HEAD":
            process.digest = _Digest()  # curl --head prints the headers on stdout
        if exit_code != 0:
            return process.digest.fill(
                Outcome(None, headers_seen, error=f"curl exit {exit_code}: {stderr[:300]}")
            )
        return process.digest.fill(Outcome(int(status_text), headers_seen))


class Requests(Sender):
    """Python requests (in a thread): bulk bodies are sent from a generator (chunked)."""

    name = "requests"

    async def send(
        self, url: str, method: str = "GET", headers: dict[str, str] | None = None, body: Body | None = None
    ) -> Outcome:
        def run() -> Outcome:
            data: Any = body.chunks() if isinstance(body, Bulk) else body
            digest = _Digest()
            try:
                with requests.request(
                    method, url, headers=headers, data=data, stream=True, timeout=120
                ) as reply:
                    for chunk in reply.iter_content(65536):
                        digest.update(chunk)
                    outcome = Outcome(reply.status_code, {k.lower(): v for k, v in reply.headers.items()})
            except requests.RequestException as e:
                return digest.fill(Outcome(None, error=f"{type(e).__name__}: {e}"))
            return digest.fill(outcome)

        result: Outcome = await deferToThread(run)
        return result


@implementer(IBodyProducer)
class _BulkProducer:
    """Streams a bulk body into treq, a chunk per reactor turn, pausing when asked."""

    def __init__(self, body: Bulk) -> None:
        self.length = body.length
        self._chunks = body.chunks()
        self._paused: Deferred[None] | None = None
        self._stopped = False

    def startProducing(self, consumer: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(self._produce(consumer))

    async def _produce(self, consumer: Any) -> None:
        for chunk in self._chunks:
            if self._stopped:
                return
            if self._paused is not None:
                await self._paused
            consumer.write(chunk)

    def pauseProducing(self) -> None:
        if self._paused is None:
            self._paused = Deferred()

    def resumeProducing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self) -> None:
        self._stopped = True
        self.resumeProducing()


class Treq(Sender):
    """treq on this test's reactor: bulk bodies come from a streaming body producer."""

    name = "treq"

    async def send(
        self, url: str, method: str = "GET", headers: dict[str, str] | None = None, body: Body | None = None
    ) -> Outcome:
        data: Any = _BulkProducer(body) if isinstance(body, Bulk) else body
        digest = _Digest()
        try:
            reply = await treq.request(method, url, headers=headers or {}, data=data, persistent=False)
            outcome = Outcome(
                reply.code,
                {
                    k.decode().lower(): ", ".join(v.decode() for v in vs)
                    for k, vs in reply.headers.getAllRawHeaders()
                },
            )
            if isinstance(reply.length, int) and method != "HEAD":
                # twisted's client keeps the framing headers apart from the others
                outcome.headers["content-length"] = str(reply.length)
            await treq.collect(reply, digest.update)
        except Exception as e:
            return digest.fill(Outcome(None, error=f"{type(e).__name__}: {e}"))
        return digest.fill(outcome)


class Node(Sender):
    """Node's http module, as the hyco-https samples use it (C{http-sender.js})."""

    name = "node"

    async def send(
        self, url: str, method: str = "GET", headers: dict[str, str] | None = None, body: Body | None = None
    ) -> Outcome:
        args = ["--url", url, "--method", method, "--timeout-ms", "120000"]
        for name, value in (headers or {}).items():
            args += ["--header", f"{name}: {value}"]
        if isinstance(body, Bulk):
            args += [
                "--body-size",
                str(body.length),
                "--body-kind",
                "bulk",
                "--seed",
                body.seed,
                "--chunk-size",
                "65536",
            ]
        elif body is not None:
            args += ["--body-text", body.decode("utf-8")]
        script = spawn_script(self.case, "http-sender.js", args)
        await script.exited(timeout=180)
        responses = script.named("response")
        if not responses:
            errors = script.named("error")
            message = (
                errors[0].get("message") if errors else bytes(script.stderr[-300:]).decode("utf-8", "replace")
            )
            return Outcome(None, error=f"node: {message} (exit {script.exit_code})")
        event = responses[0]
        return Outcome(
            int(event["status"]),
            {
                k.lower(): (", ".join(v) if isinstance(v, list) else str(v))
                for k, v in event["headers"].items()
            },
            length=int(event["length"]),
            sha256=str(event["sha256"]),
            head=str(event.get("text", "")).encode("utf-8"),
        )


SENDERS = (Curl, Requests, Treq, Node)


def sha(body: Body | None) -> str:
    """The SHA-256 a sender should report for C{body} echoed back."""
    return _body_sha256(body)


def dumps(outcome: Outcome) -> str:
    """An outcome for failure messages."""
    return json.dumps({**outcome.__dict__, "head": outcome.head[:200].decode("latin-1")})
