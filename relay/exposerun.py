"""
Run C{relay expose} as a command.

The listener and its forwarder (L{relay.expose}), retries while the relay is unreachable, the access log
and notes, signals and the exit status.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.logger import FilteringLogObserver, ILogObserver, LogLevel, LogLevelFilterPredicate
from twisted.python.failure import Failure

from relay.client.errors import ConnectError
from relay.client.http import HttpListener
from relay.client.listener import HybridConnectionListener, ListenerState
from relay.client.options import WebSocketOptions
from relay.eventloop import lean_dispatch, on_second_signal
from relay.expose import LOCAL_TIMEOUT, Forwarder
from relay.exposeaddress import ExposeError
from relay.logger import Logger
from relay.logtext import classic_observer, one_line
from relay.turnlines import TurnWriter

DRAIN_TIMEOUT = 10.0
"""Seconds a stop waits for the answers in flight before the listener closes."""


def stderr_observer(err: IO[str], level: LogLevel) -> ILogObserver:
    """
    C{relay expose}'s log: events at C{level} and above, as twistd's classic lines, on C{err}.

    The lines are the gateway's (L{relay.logtext.ClassicLines}): a request id, path or error text from a
    peer cannot put a lone CR, an escape sequence or another control character on the terminal.
    """
    return FilteringLogObserver(classic_observer(err), [LogLevelFilterPredicate(level)])


class Exposer:
    """
    Run C{relay expose}: open the listener (retrying while the relay is unreachable) and serve until stopped.

    @ivar listener: the hybrid connection listener.
    @ivar forwarder: the HTTP app and WebSocket handler.
    @ivar out: where the access log goes, or C{None} for none (C{--quiet}: no line is even formatted).
    """

    log = Logger()

    def __init__(
        self,
        url: str,
        connection_string: str,
        name: str | None,
        *,
        reactor: Any,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        options: WebSocketOptions | None = None,
        retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
        quiet: bool = False,
        local_timeout: float | None = LOCAL_TIMEOUT,
        drain_timeout: float = DRAIN_TIMEOUT,
    ) -> None:
        self.reactor = reactor
        self.drain_timeout = drain_timeout
        self.out: IO[str] | None = None if quiet else (out or sys.stdout)
        self.err = err or sys.stderr
        self.retry_delays = retry_delays
        # A turn that answered many requests writes their lines in one system call, not one each.
        self._access = TurnWriter(self.out, reactor) if self.out is not None else None
        self.forwarder = Forwarder(
            url, reactor=reactor, log_line=self._line, options=options, local_timeout=local_timeout
        )
        try:
            self.listener = HybridConnectionListener(
                connection_string,
                name,
                reactor=reactor,
                options=options,
                accept_handler=self.forwarder.accept,
                on_connection=self.forwarder.connected,
                on_accept_failed=self.forwarder.accept_failed,
                on_online=self._online,
                on_offline=self._offline,
                # The connection string is read once: a key the relay refuses now stays refused.
                give_up_statuses=(401, 404),
            )
        except ValueError as e:
            raise ExposeError(str(e)) from None
        self.http = HttpListener(
            self.listener,
            self.forwarder,
            reactor=reactor,
            on_response=None if quiet else self.forwarder.access_line,
            quick_lane=self.forwarder.quick,
        )
        self._finished: Deferred[int] = Deferred()
        self._sleep: Deferred[None] | None = None
        self._hurried = False

    def _line(self, text: str) -> None:
        """One access line on stdout, written with the rest of its reactor turn's (L{TurnWriter})."""
        if self._access is not None:
            self._access.write(one_line(text) + "\n")

    def _note(self, text: str) -> None:
        self.err.write(f"relay expose: {one_line(text)}\n")
        self.err.flush()

    def _online(self) -> None:
        address = self.listener.address
        self._note(f"online: {address.base}/{address.path} -> {self.forwarder.base}")

    def _offline(self, error: BaseException | None) -> None:
        if error is None:
            return
        if self.listener.state is ListenerState.OFFLINE:
            self._note(f"the relay refused the listener on reconnecting: {error}; giving up")
            self._finish(1)
        else:
            self._note(f"connection lost ({error}); reconnecting")

    async def run(self) -> int:
        """Open the listener and serve until L{stop} or a permanent failure; return the exit status."""
        attempt = 0
        while not self._finished.called:
            try:
                await self.listener.open()
                break
            except ConnectError as e:
                if e.status_code is not None and 400 <= e.status_code < 500:
                    self._note(f"the relay refused the listener: {e}")
                    self._finish(1)
                    break
                error: Exception = e
            except Exception as e:
                error = e
            if self._finished.called:
                break
            delay = self.retry_delays[min(attempt, len(self.retry_delays) - 1)]
            attempt += 1
            self._note(f"cannot reach the relay ({error}); retrying in {delay:g}s")
            self._sleep = deferLater(self.reactor, delay)
            try:
                await self._sleep
            except CancelledError:
                pass
            self._sleep = None
        return await self._finished

    def _finish(self, status: int) -> None:
        if not self._finished.called:
            self._finished.callback(status)

    async def stop(self) -> None:
        """
        Close the listener and end L{run} with status 0.

        Answers in flight finish first, for up to L{drain_timeout} seconds: the relay fails every request
        still due on a control channel that closes. Meanwhile new requests and senders get 503.
        """
        self._finish(0)
        if self._sleep is not None:
            self._sleep.cancel()
        self.forwarder.drain()
        await self._drain()
        await self.listener.close()
        self.forwarder.client.close()

    async def _drain(self) -> None:
        """Wait for the answers in flight (while the listener is online) and the WebSockets' closes."""
        busy = self.http.active if self.listener.is_online else 0
        if busy:
            answers = "answer" if busy == 1 else "answers"
            self._note(
                f"stopping: {busy} {answers} in flight, waiting for them (at most {self.drain_timeout:g}s)"
            )
        deadline = self.reactor.seconds() + self.drain_timeout
        while (
            not self._hurried
            and self.reactor.seconds() < deadline
            and ((self.http.active and self.listener.is_online) or self.forwarder.connections)
        ):
            await deferLater(self.reactor, min(0.05, deadline - self.reactor.seconds()))

    def hurry(self) -> None:
        """Stop waiting for what is in flight (a second SIGINT or SIGTERM): L{stop} closes now."""
        if not self._hurried:
            self._hurried = True
            self._note("stopping now")


def load_ca(ca_file: str, option: str = "--ca") -> Any:
    """
    The certificate of C{--ca} (or another C{option}), to trust for a C{wss} relay.

    @raise ExposeError: when the file cannot be read or holds no PEM certificate.
    """
    from OpenSSL.crypto import Error as OpenSSLError
    from twisted.internet.ssl import Certificate

    try:
        with open(ca_file, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ExposeError(f"cannot use {option} {ca_file}: {e.strerror or e}") from None
    try:
        return Certificate.loadPEM(data)
    except (OpenSSLError, ValueError):
        raise ExposeError(f"cannot use {option} {ca_file}: no PEM certificate in it") from None


def run_expose(
    url: str,
    connection_string: str,
    name: str | None,
    *,
    ca_file: str | None = None,
    verbose: bool = False,
    quiet: bool = False,
    local_timeout: float | None = LOCAL_TIMEOUT,
) -> int:
    """
    Run C{relay expose} on the global reactor until interrupted (SIGINT/SIGTERM: status 0).

    @param ca_file: PEM file of a certificate authority to trust for C{wss} relays (a development CA).
    @param verbose: log at info level on stderr (default: warnings only).
    @param quiet: no access log on stdout.
    @param local_timeout: seconds the local server has to start each answer (then 504), or C{None}.
    @return: the exit status.
    @raise ExposeError: for a bad URL, connection string or CA file.
    """
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    options = WebSocketOptions()
    if ca_file is not None:
        options = WebSocketOptions(trust_root=load_ca(ca_file))
    level = LogLevel.info if verbose else LogLevel.warn
    globalLogBeginner.beginLoggingTo(
        [stderr_observer(sys.stderr, level)],
        redirectStandardIO=False,
    )
    exposer = Exposer(
        url,
        connection_string,
        name,
        reactor=reactor,
        options=options,
        quiet=quiet,
        local_timeout=local_timeout,
    )
    status = [1]

    def start() -> None:
        running = Deferred.fromCoroutine(exposer.run())

        def record(code: int) -> None:
            status[0] = code

        def crashed(failure: Failure) -> None:
            sys.stderr.write(f"relay expose: {one_line(failure.getErrorMessage())}\n")

        def stop_reactor(_: object) -> None:
            if not stopping:
                reactor.stop()  # type: ignore[attr-defined]

        running.addCallbacks(record, crashed)
        running.addBoth(stop_reactor)

    stopping: list[bool] = []

    def shutting_down() -> Deferred[None]:
        stopping.append(True)
        on_second_signal(reactor, exposer.hurry)
        return Deferred.fromCoroutine(exposer.stop())

    reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", shutting_down)  # type: ignore[attr-defined]
    lean_dispatch(reactor)  # as the gateway's: no log context built per socket event
    reactor.run()  # type: ignore[attr-defined]
    return status[0]
