"""
Processes of a benchmark: start, watch and stop them.

Children run with this checkout first on C{PYTHONPATH}; the runner waits for their ready line, reads their
CPU time and resident memory from C{/proc}, and stops every one of them afterwards.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def raise_nofile_limit() -> int:
    """Raise this process's open-file limit to its hard limit (9,000 idle pairs need ~18,000 sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def child_env(first: Path | None = None) -> dict[str, str]:
    """
    The environment for children: this checkout first on the path, so they run this code.

    @param first: a checkout to put before this one (C{--gateway-from}: the gateway's C{relay} package
        comes from there, the benchmark's own modules still from here).
    """
    env = dict(os.environ)
    paths = [str(first)] if first is not None else []
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def children(pid: int) -> list[int]:
    """Direct children of a process (nginx's worker under its master)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its direct children."""
    total = cpu_seconds(pid)
    for child in children(pid):
        try:
            total += cpu_seconds(child)
        except OSError:
            pass
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of a process."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


@dataclass
class Proc:
    """
    A started child process.

    @ivar lines: what it printed on stdout (read by a thread so the pipe never fills).
    """

    name: str
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None
    _new_line: threading.Condition = field(default_factory=threading.Condition)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def start_reading(self) -> None:
        def read() -> None:
            assert self.popen.stdout is not None
            for line in self.popen.stdout:
                with self._new_line:
                    self.lines.append(line.rstrip("\n"))
                    self._new_line.notify_all()
            with self._new_line:
                self._new_line.notify_all()

        self._reader = threading.Thread(target=read, name=f"stdout-{self.name}", daemon=True)
        self._reader.start()

    def wait_for_line(self, prefix: str, timeout: float, start: int = 0) -> tuple[int, str]:
        """Wait until the process prints a line starting with C{prefix}; return its index and text."""
        deadline = time.monotonic() + timeout
        with self._new_line:
            while True:
                for i in range(start, len(self.lines)):
                    if self.lines[i].startswith(prefix):
                        return i, self.lines[i]
                if self.popen.poll() is not None and (self._reader is None or not self._reader.is_alive()):
                    raise RuntimeError(f"{self.name} exited with {self.popen.returncode}: {self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{self.name} did not print {prefix!r} within {timeout}s: {self.tail()}"
                    )
                self._new_line.wait(min(left, 0.5))

    def tail(self) -> str:
        return " | ".join(self.lines[-5:])

    def cpu(self) -> float:
        return tree_cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the process to stop (SIGTERM: Twisted shuts down cleanly), kill it if it does not."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 3.0)):
            if self.popen.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(wait)
        if self._reader is not None:
            self._reader.join(2.0)


class Processes:
    """Every process a scenario started; L{close} stops them all, newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ready: str | None = "READY",
        timeout: float = 30.0,
        code: Path | None = None,
    ) -> Proc:
        """
        Start a process; wait for its C{ready} line when given. Stderr goes to C{log_dir/name.err}.

        @param code: a checkout whose packages come first on the child's path (see L{child_env}).
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        err = open(self.log_dir / f"{name}.err", "a")  # handed to the child
        popen = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            env=child_env(code),
            cwd=str(code or ROOT),  # python -m puts the working directory first on the path
        )
        err.close()
        proc = Proc(name, popen)
        self.procs.append(proc)
        proc.start_reading()
        if ready is not None:
            proc.wait_for_line(ready, timeout)
        return proc

    def python(
        self,
        name: str,
        module: str,
        *args: str,
        ready: str | None = "READY",
        timeout: float = 30.0,
        code: Path | None = None,
        wrapper: Sequence[str] = (),
    ) -> Proc:
        """Start C{python -m module args...}, under C{wrapper} (a command and its options) if given."""
        return self.start(
            name,
            [*wrapper, sys.executable, "-m", module, *args],
            ready=ready,
            timeout=timeout,
            code=code,
        )

    def finish(self, proc: Proc, timeout: float) -> list[str]:
        """Wait for a process that ends by itself (a load generator); kill it past C{timeout}."""
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.stop(1.0)
            raise TimeoutError(f"{proc.name} ran longer than {timeout:.0f}s: {proc.tail()}") from None
        if proc._reader is not None:
            proc._reader.join(5.0)
        self.procs.remove(proc)
        if proc.popen.returncode != 0:
            err = (self.log_dir / f"{proc.name}.err").read_text()[-2000:]
            raise RuntimeError(f"{proc.name} failed ({proc.popen.returncode}): {err}")
        return proc.lines

    def stop(self, proc: Proc) -> None:
        """Stop one process before the scenario ends (a gateway that must start afresh)."""
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


@contextlib.contextmanager
def processes(log_dir: Path) -> Iterator[Processes]:
    """A L{Processes} that is closed however the block ends."""
    group = Processes(log_dir)
    try:
        yield group
    finally:
        group.close()
