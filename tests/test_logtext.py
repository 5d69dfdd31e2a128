"""Tests for L{relay.logtext}: twistd's classic log lines, the same text made more cheaply, and where they go."""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path
from typing import Any

import twisted.logger as twisted_logger
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.application.service import Application
from twisted.logger import ILogObserver, LogLevel, formatEventAsClassicLogText, formatTime
from twisted.python.failure import Failure
from twisted.scripts._twistd_unix import UnixAppLogger
from twisted.trial.unittest import SynchronousTestCase

from relay import logtext
from relay.logtext import ClassicLines, escape_controls, one_line, twistd_observer
from relay.tap import Options, makeService

FORMATS = [
    "{access}",
    "{pair}",
    "{missing}",
    "plain text",
    "",
    "a {access} and {pair}",
    "{access!r}",
    "{access:>5}",
    "{call()}",
    "{{access}}",
    "two\nlines {access}",
    "{0}",
]
TEXT = st.text(alphabet=st.sampled_from("ab {}\n\t:é\r\x1b\x00\x7f\x85\x9b"), max_size=12)
VALUES = st.one_of(TEXT, st.integers(), st.none(), st.just(b"bytes"))


def escaped(line: str | None) -> str | None:
    r"""Twisted's line as the gateway writes it: CR as C{\r}, other controls but LF and tab as C{\xNN}."""
    if line is None:
        return None

    def one(c: str) -> str:
        if c == "\r":
            return "\\r"
        if (c < " " and c not in "\n\t") or "\x7f" <= c <= "\x9f":
            return f"\\x{ord(c):02x}"
        return c

    return "".join(map(one, line))


def _failure() -> Failure:
    try:
        raise ValueError("boom")
    except ValueError:
        return Failure()


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """Events as the gateway, Twisted and legacy code emit them, odd ones included."""
    event: dict[str, Any] = {}
    if draw(st.integers(0, 4)):
        event["log_format"] = draw(st.one_of(st.sampled_from(FORMATS), st.none(), TEXT))
    for key in ("access", "pair"):
        if draw(st.booleans()):
            event[key] = draw(VALUES)
    event["call"] = lambda: "called"
    event["log_time"] = draw(st.one_of(st.none(), st.floats(0, 4e9)))
    if draw(st.booleans()):
        event["log_level"] = draw(st.sampled_from(list(LogLevel.iterconstants())))
    if draw(st.booleans()):
        event["log_namespace"] = draw(st.one_of(st.just("relay.web.RelaySite"), st.none(), TEXT))
    if draw(st.booleans()):
        event["log_system"] = draw(st.one_of(st.just("-"), TEXT, st.integers()))
    if draw(st.integers(0, 9)) == 0:
        event["log_failure"] = _failure()
    if draw(st.integers(0, 9)) == 0:
        event["log_flattened"] = {}
    return event


class ClassicLinesTests(SynchronousTestCase):
    """L{ClassicLines} writes what L{formatEventAsClassicLogText} writes, event for event, controls escaped."""

    @settings(max_examples=400, deadline=None)
    @given(st.lists(events(), min_size=1, max_size=6))
    def test_same_text_as_twisted(self, batch: list[dict[str, Any]]) -> None:
        """Every event, in any order through one formatter (its timestamp cache included)."""
        lines = ClassicLines()
        for event in batch:
            self.assertEqual(lines(event), escaped(formatEventAsClassicLogText(event)))

    def test_timestamp_rounded_as_datetime_rounds(self) -> None:
        """
        A time half a microsecond before a second is written as that second, as Twisted writes it.

        The once-per-second cache took the second with C{floor} and wrote the one before (Hypothesis found
        C{3999999999.9999995} after C{3999999999.0}).
        """
        lines = ClassicLines()
        for when in (3999999999.0, 3999999999.9999995, 0.9999996, 1.0, 1.4999994):
            event = {"log_format": "x", "log_time": when, "log_namespace": "t"}
            self.assertEqual(lines(event), formatEventAsClassicLogText(event))

    def test_controls_escaped(self) -> None:
        """
        A lone CR, an escape sequence, NUL, DEL and C1 CSI cannot rewrite the terminal or forge a line.

        Line feeds keep Twisted's continuation tab; tabs stay; the fast path and Twisted's formatter agree.
        """
        value = "GET /a\rforged\x1b[2K\x00\x7f\x9b\tb\r\nc"
        expected = "GET /a\\rforged\\x1b[2K\\x00\\x7f\\x9b\tb\\r\n\tc"
        fast = {"log_format": "{access}", "access": value, "log_time": 0.0, "log_namespace": "t"}
        slow = {"log_format": "{a} {access}", "a": 1, "access": value, "log_time": 0.0, "log_namespace": "t"}
        self.assertEqual(ClassicLines()(fast), f"1970-01-01T00:00:00+0000 [t#-] {expected}\n")
        self.assertEqual(ClassicLines()(slow), f"1970-01-01T00:00:00+0000 [t#-] 1 {expected}\n")
        failed = {"log_format": "x\x1b]0;t\x07", "log_failure": _failure(), "log_time": 0.0}
        line = str(ClassicLines()(failed))
        self.assertTrue(line.startswith("1970-01-01T00:00:00+0000 [-#-] x\\x1b]0;t\\x07\n\t"), line)

    def test_escape_functions(self) -> None:
        r"""L{escape_controls} keeps line feeds; L{one_line} writes them as C{\n}; plain text is returned as is."""
        plain = "GET /é 200\t1ms"
        self.assertIs(escape_controls(plain), plain)
        self.assertIs(one_line(plain), plain)
        self.assertEqual(escape_controls("a\r\nb\x1b\x85"), "a\\r\nb\\x1b\\x85")
        self.assertEqual(one_line("a\r\nb\x1b\x85"), "a\\r\\nb\\x1b\\x85")

    def test_gateway_line(self) -> None:
        """The gateway's one-field lines: the field's text after the time and system."""
        event = {
            "log_format": "{access}",
            "access": "GET /web 200",
            "log_time": 0.5,
            "log_level": LogLevel.info,
            "log_namespace": "relay.web.RelayRequest",
        }
        self.assertEqual(ClassicLines()(event), formatEventAsClassicLogText(event))
        self.assertTrue(ClassicLines()(event).endswith(" [relay.web.RelayRequest#info] GET /web 200\n"))  # type: ignore[union-attr]

    def test_timestamp_made_once_per_second(self) -> None:
        """Events within one second share one timestamp text; the next second makes a new one."""
        calls: list[float] = []
        real = formatTime

        def counting(when: float) -> str:
            calls.append(when)
            return real(when)

        self.patch(logtext, "formatTime", counting)
        lines = ClassicLines()
        times = [1000.1, 1000.9, 1000.0, 1001.0, 1001.5]
        for when in times:
            event = {"log_format": "{access}", "access": "x", "log_time": when}
            self.assertEqual(lines(event), formatEventAsClassicLogText(event))
        self.assertEqual(calls, [1000.1, 1001.0])


class TwistdObserverTests(SynchronousTestCase):
    """L{twistd_observer} writes where twistd would, and leaves twistd's other choices to twistd."""

    def setUp(self) -> None:
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    def emit(self, observer: Any, text: str) -> None:
        observer({"log_format": "{access}", "access": text, "log_time": 0.0, "log_namespace": "t"})

    def test_twistd_decides(self) -> None:
        """Not under twistd, with C{--logger}, with C{--syslog}, or a daemon told to log to stdout."""
        self.assertIsNone(twistd_observer(None))
        self.assertIsNone(twistd_observer({"logger": "some.factory", "nodaemon": True}))
        self.assertIsNone(twistd_observer({"syslog": True, "nodaemon": True}))
        self.assertIsNone(twistd_observer({"logfile": "-", "nodaemon": False}))

    def test_foreground_to_stdout(self) -> None:
        """C{twistd -n} and C{twistd -n -l -}: standard output."""
        for options in ({"nodaemon": True}, {"nodaemon": True, "logfile": "-"}):
            out = io.StringIO()
            self.patch(sys, "stdout", out)
            self.emit(twistd_observer(options), "to stdout")
            self.assertIn("[t#-] to stdout\n", out.getvalue())

    def test_named_file_rotates_on_sigusr1(self) -> None:
        """C{--logfile FILE}: that file, and SIGUSR1 rotates it, as twistd sets up for its own."""
        path = Path(self.mktemp())
        observer = twistd_observer({"nodaemon": True, "logfile": str(path)})
        self.emit(observer, "to a file")
        self.assertIn("to a file\n", path.read_text())
        self.assertTrue(callable(signal.getsignal(signal.SIGUSR1)))

    def test_daemon_default_file(self) -> None:
        """A daemon with no C{--logfile} writes C{twistd.log} in its working directory."""
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(directory)
        self.emit(twistd_observer({"nodaemon": False}), "daemon")
        self.assertIn("daemon\n", (directory / "twistd.log").read_text())

    def test_twistd_takes_the_gateways_observer(self) -> None:
        """twistd's logger starts logging to the observer the plugin's service gave the application."""
        path = Path(self.mktemp())
        twistd_options = {"nodaemon": True, "logfile": str(path)}
        options = Options()
        options.parseOptions(["--state-dir", self.mktemp()])
        options.parent = twistd_options  # type: ignore[assignment]  # usage.Options sets it for subcommands
        service = makeService(options)
        self.assertIsNotNone(service.log_observer)
        application = Application("relay")
        service.setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), service.log_observer)

        began: list[list[Any]] = []

        class Beginner:
            def beginLoggingTo(self, observers: list[Any]) -> None:
                began.append(observers)

        self.patch(twisted_logger, "globalLogBeginner", Beginner())
        UnixAppLogger(twistd_options).start(application)
        self.assertEqual(began, [[service.log_observer]])

    def test_not_under_twistd(self) -> None:
        """Built without twistd (tests, embedding), the gateway offers no observer."""
        options = Options()
        options.parseOptions(["--state-dir", self.mktemp()])
        self.assertIsNone(makeService(options).log_observer)
