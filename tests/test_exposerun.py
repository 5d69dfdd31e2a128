"""Tests for L{relay.exposerun}: what C{relay expose} writes on its terminal."""

from __future__ import annotations

import io

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from relay.exposerun import Exposer, stderr_observer

CONNECTION_STRING = (
    "Endpoint=sb://localhost:1/;SharedAccessKeyName=k;SharedAccessKey=c2VjcmV0;EntityPath=hyco"
)
HOSTILE = "id\rforged line\x1b[2K\x1b]0;title\x07\x00\x7f\x9bend"
ESCAPED = "id\\rforged line\\x1b[2K\\x1b]0;title\\x07\\x00\\x7f\\x9bend"


class StderrObserverTests(SynchronousTestCase):
    """The log on stderr: classic lines at the chosen level, controls from peers escaped."""

    def test_controls_escaped(self) -> None:
        """A request id or error text cannot put a lone CR or an escape sequence on the terminal."""
        err = io.StringIO()
        log = Logger(namespace="relay.expose.Forwarder", observer=stderr_observer(err, LogLevel.info))
        log.warn("request {request_id} not forwarded: {problem}", request_id=HOSTILE, problem="two\nlines\tx")
        self.assertTrue(
            err.getvalue().endswith(
                f" [relay.expose.Forwarder#warn] request {ESCAPED} not forwarded: two\n\tlines\tx\n"
            ),
            err.getvalue(),
        )

    def test_level(self) -> None:
        """Events below the level are not written."""
        err = io.StringIO()
        log = Logger(namespace="t", observer=stderr_observer(err, LogLevel.warn))
        log.info("quiet")
        log.warn("loud")
        self.assertEqual(err.getvalue().count("\n"), 1)
        self.assertIn("[t#warn] loud\n", err.getvalue())


class ExposerLinesTests(SynchronousTestCase):
    """Access lines (stdout) and notes (stderr) are one line each, whatever a peer put in them."""

    def setUp(self) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()
        self.exposer = Exposer(
            "http://127.0.0.1:8080",
            CONNECTION_STRING,
            None,
            reactor=MemoryReactorClock(),
            out=self.out,
            err=self.err,
        )

    def test_access_line(self) -> None:
        """A path with controls or a line feed is written escaped, on one line."""
        self.exposer.forwarder.log_line(f'"GET /{HOSTILE}\n" 200\t1ms')
        self.assertEqual(self.out.getvalue(), f'"GET /{ESCAPED}\\n" 200\t1ms\n')

    def test_quick_lane(self) -> None:
        """The listener offers requests to the forwarder's quick lane first."""
        self.assertIs(self.exposer.http._quick, self.exposer.forwarder.quick)

    def test_note(self) -> None:
        """An error text from the relay is written escaped, on one line."""
        self.exposer.listener.on_offline(ConnectionError(f"{HOSTILE}\nrelay expose: forged"))  # type: ignore[misc]
        self.assertEqual(
            self.err.getvalue(),
            f"relay expose: connection lost ({ESCAPED}\\nrelay expose: forged); reconnecting\n",
        )
