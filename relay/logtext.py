r"""
twistd's classic log text, written for a fraction of the cost: the gateway's log observer under twistd.

twistd writes each event as C{"<time> [<system>] <text>"} through L{formatEventAsClassicLogText}, which
builds a timezone object and a datetime per event and runs even a format of one field, such as the
gateway's C{"{access}"} line, through C{string.Formatter} in Python. That was about a tenth of the
gateway's instructions per relayed request and per established pair (callgrind, C{cost.instructions}).
L{ClassicLines} writes the same text: the timestamp is made once per second, a format that is one field
holding a string (the gateway's access and pair lines) is that string, and every other event (other
formats, failures, flattened events) goes through Twisted's own formatter.

Every line is written with its control characters escaped (L{escape_controls}): a lone CR, an ESC
starting a terminal escape sequence, or a NUL from a request id, a path or an error text could otherwise
overwrite, forge or hide log lines on a terminal. A line feed stays Twisted's C{"\n\t"} and a tab stays.

L{twistd_observer} picks the same destination twistd would (stdout, a named file with SIGUSR1 rotation,
or C{twistd.log} for a daemon), writes there the lines of a reactor turn together (L{relay.turnlines}),
and leaves the rest to twistd: C{--logger}, C{--syslog}, and the errors
twistd reports itself.
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Mapping
from functools import lru_cache
from math import modf
from typing import Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.python.logfile import LogFile

from relay.turnlines import TurnLines

_ONE_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

_CONTROLS = "".join(map(chr, [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]))
"""C0 controls but tab and line feed, DEL, and the C1 controls (U+0085, U+009B CSI)."""
_ESCAPES = {ord(c): f"\\x{ord(c):02x}" for c in _CONTROLS} | {0x0D: "\\r"}
_ESCAPES_AND_LF = _ESCAPES | {0x0A: "\n\t"}
_ONE_LINE = _ESCAPES | {0x0A: "\\n"}
_CONTROL = re.compile(f"[{re.escape(_CONTROLS)}]")
_CONTROL_OR_LF = re.compile(f"[{re.escape(_CONTROLS)}\n]")


def escape_controls(text: str) -> str:
    r"""
    C{text} with its control characters written as escapes: CR as C{\r}, the others as C{\xNN}.

    Line feeds and tabs stay as they are.
    """
    if _CONTROL.search(text) is None:
        return text
    return text.translate(_ESCAPES)


def one_line(text: str) -> str:
    r"""C{text} as one log line: L{escape_controls}, and a line feed written as C{\n} too."""
    if _CONTROL_OR_LF.search(text) is None:
        return text
    return text.translate(_ONE_LINE)


@lru_cache(maxsize=256)
def _sole_field(log_format: str) -> str | None:
    """The field name when the format is exactly one plain field (C{"{access}"}), else L{None}."""
    match = _ONE_FIELD.fullmatch(log_format)
    return match.group(1) if match else None


def _datetime_second(when: float) -> int:
    """
    The whole second C{datetime.fromtimestamp(when)} shows, which rounds to microseconds first.

    C{floor} differs within half a microsecond before a second: C{3999999999.9999995} is C{...:40}.
    """
    fraction, whole = modf(when)
    micro = round(fraction * 1e6)
    if micro >= 1_000_000:
        whole += 1
    elif micro < 0:
        whole -= 1
    return int(whole)


class _Timestamps:
    """Twisted's RFC 3339 timestamp text, made once per second: it has no finer part."""

    def __init__(self) -> None:
        self._last: tuple[int, str] = (-1, "")  # one attribute, so a thread never sees half an update

    def __call__(self, when: float | None) -> str:
        """C{when} as Twisted's L{formatTime} writes it; C{"-"} for none."""
        if when is None:
            return "-"
        second = _datetime_second(when)
        last = self._last
        if second != last[0] or not last[1]:
            last = self._last = (second, formatTime(when))
        return last[1]


class ClassicLines:
    """
    L{formatEventAsClassicLogText} with a fast path: the same line for every event, cheaper for most.

    Control characters other than line feed and tab are escaped (L{escape_controls}), which Twisted does
    not do.

    An instance keeps the last second's timestamp, so each observer has its own.
    """

    def __init__(self) -> None:
        self._timestamp = _Timestamps()

    def __call__(self, event: LogEvent) -> str | None:
        """The event's line, or L{None} when it has no text (as Twisted's formatter)."""
        log_format = event.get("log_format")
        if log_format is None or "log_failure" in event or "log_flattened" in event:
            return self._twisted(event)
        field = _sole_field(log_format) if type(log_format) is str else None
        value = event.get(field) if field is not None else None
        text = value if type(value) is str else formatEvent(event)
        if not text:
            return None
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
        elif type(system) is not str:
            return self._twisted(event)
        line = f"{self._timestamp(event.get('log_time'))} [{system}] {text}"
        if _CONTROL_OR_LF.search(line) is not None:
            line = line.translate(_ESCAPES_AND_LF)
        return line + "\n"

    def _twisted(self, event: LogEvent) -> str | None:
        """Twisted's own line for the event, its controls escaped."""
        line = formatEventAsClassicLogText(event, formatTime=self._timestamp)
        return None if line is None else escape_controls(line)


def classic_observer(out: Any) -> ILogObserver:
    """A file observer writing L{ClassicLines} to C{out} (flushed per event, as twistd's is)."""
    return FileLogObserver(out, ClassicLines())


def _rotate_on_sigusr1(log_file: LogFile, lines: TurnLines, reactor: Any) -> None:
    """
    Rotate the log on SIGUSR1, as twistd does for its own log file, unless a handler is set.

    The lines held for the turn are written first, so each line lands in the file it was logged to.
    """
    if signal.getsignal(signal.SIGUSR1):
        return

    def rotate_now() -> None:
        lines.flush()
        log_file.rotate()

    def rotate(signum: int, frame: Any) -> None:
        reactor.callFromThread(rotate_now)

    signal.signal(signal.SIGUSR1, rotate)


def twistd_observer(twistd_options: Mapping[str, Any] | None, reactor: Any = None) -> ILogObserver | None:
    """
    The observer for twistd's own logging choice, or L{None} where twistd should decide.

    L{None} without twistd's options, off POSIX, with C{--logger} or C{--syslog}, and for a daemon asked to
    log to stdout (twistd refuses that with its own message). The lines of a reactor turn are written
    together (L{TurnLines}, on C{reactor}, by default the global one).
    """
    if twistd_options is None or sys.platform == "win32":
        return None
    if twistd_options.get("logger") or twistd_options.get("syslog"):
        return None
    logfile = twistd_options.get("logfile") or ""
    daemon = not twistd_options.get("nodaemon", False)
    if reactor is None:
        from twisted.internet import reactor
    if logfile == "-" or (not logfile and not daemon):
        return None if daemon else TurnLines(sys.stdout, ClassicLines(), reactor)
    log_file = LogFile.fromFullPath(logfile or "twistd.log")
    lines = TurnLines(log_file, ClassicLines(), reactor)
    _rotate_on_sigusr1(log_file, lines, reactor)
    return lines
