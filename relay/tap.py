"""
C{twistd relay}: command-line options and the service they build.

With no options the gateway is the embedded default: in-memory state, plain WebSocket/HTTP on
127.0.0.1:9080, and a development namespace whose key is generated once in the state directory.

Everything an operator names is checked before anything starts: the configuration file, every endpoint
string (its syntax, its port, and for C{ssl:} the certificate and key files it names) and the public
URL. Under twistd a mistake is one line on stderr and exit status 2 for the command line, 1 for a file
that cannot be used (the configuration file, a certificate, the state directory).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.python import usage
from typing_extensions import override

from bindings.gateway import install as install_bindings
from bindings.settings import ENTITY_SECTIONS
from relay.config import ConfigError, GatewayConfig, load_config, public_url_problem
from relay.endpointcheck import EndpointProblem, check_endpoint, serves_on_a_port
from relay.logtext import twistd_observer
from relay.service import DEFAULT_LISTEN, GatewayService, GatewaySettings
from relay.state import default_state_dir


class FileProblem(usage.UsageError):
    """A file the options or the configuration name cannot be used: C{twistd relay} exits with 1, not 2."""

    exit_status = 1


class Options(usage.Options):
    """Options of C{twistd relay}."""

    synopsis = (
        "[--listen ENDPOINT]... [--config FILE] [--public-url URL] [--state-dir DIR] [--admin ENDPOINT]"
    )
    longdesc = (
        "Run the relay gateway. Without options it serves a development namespace on "
        f"{DEFAULT_LISTEN} and prints a connection string. Exit status: 2 for a mistake on the command "
        "line, 1 for a file that cannot be used (configuration, certificate, state directory)."
    )
    optParameters = [
        ["config", "c", None, "Configuration file (TOML): namespaces, rules, entities, limits."],
        [
            "public-url",
            None,
            None,
            "Base URL that rendezvous addresses use (e.g. https://relay.example.org) "
            "[default: gateway.public_url, else derived from the first tcp, tcp6 or ssl endpoint].",
        ],
        [
            "state-dir",
            None,
            None,
            "Directory for the development key and state [default: gateway.state_dir, else "
            "$XDG_STATE_HOME/relay].",
        ],
        [
            "admin",
            None,
            None,
            "Serve GET /metrics (Prometheus), /healthz and /readyz on this endpoint, e.g. "
            "tcp:9090:interface=127.0.0.1 [default: gateway.admin, else off].",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Serve on a Twisted endpoint, e.g. tcp:9080:interface=127.0.0.1 or ssl:443:privateKey=k.pem:certKey=c.pem (repeatable; replaces gateway.listen) [default: tcp:9080:interface=127.0.0.1]."""
        self["listen"].append(endpoint)

    opt_l = opt_listen

    @override
    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse the command line; under twistd, report a mistake as one line on stderr.

        twistd would print its whole usage text and the error on stdout and exit with 1 for any mistake.
        Run directly (tests, embedding), the L{usage.UsageError} is raised as usual.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            sys.stderr.write(f"twistd relay: {e}\n")
            raise SystemExit(getattr(e, "exit_status", 2)) from None

    @override
    def postOptions(self) -> None:
        """Load and check the configuration file and every endpoint; merge the file with the command line."""
        from twisted.internet import reactor

        config = GatewayConfig()
        source = self["config"]
        if source is not None:
            try:
                config = load_config(source, ENTITY_SECTIONS)
            except ConfigError as e:
                raise FileProblem(str(e)) from None
        now = datetime.datetime.now(datetime.UTC)
        if self["listen"]:
            for description in self["listen"]:
                self._check(description, f"--listen {description}", None, reactor, now)
        else:
            for i, description in enumerate(config.listen):
                self._check(description, f"gateway.listen[{i}]", source, reactor, now)
        self["listen"] = tuple(self["listen"]) or config.listen or (DEFAULT_LISTEN,)
        if self["admin"] is not None:
            self._check(self["admin"], f"--admin {self['admin']}", None, reactor, now)
        elif config.admin is not None:
            self._check(config.admin, "gateway.admin", source, reactor, now)
        if self["public-url"] is not None:
            problem = public_url_problem(self["public-url"])
            if problem is not None:
                raise usage.UsageError(f"--public-url: {problem}")
        if self["state-dir"] is not None and not self["state-dir"].strip():
            raise usage.UsageError("--state-dir: must not be empty")
        public_url = self["public-url"] or config.public_url
        if public_url is None and not any(serves_on_a_port(d) for d in self["listen"]):
            raise usage.UsageError(
                "--public-url: needed, as no endpoint is tcp, tcp6 or ssl (a UNIX socket has no address "
                "that listeners can dial)"
            )
        state_dir = self["state-dir"] or config.state_dir
        admin = self["admin"] or config.admin
        self["settings"] = GatewaySettings(
            listen=self["listen"],
            public_url=public_url,
            state_dir=Path(state_dir) if state_dir else default_state_dir(),
            config=config,
            admin=admin,
        )

    @staticmethod
    def _check(
        description: str, where: str, source: str | None, reactor: Any, now: datetime.datetime
    ) -> None:
        """Check one endpoint; name the option, or the file and key it came from."""
        try:
            check_endpoint(description, reactor, now)
        except EndpointProblem as e:
            if source is not None:
                raise FileProblem(str(ConfigError(source, where, f"{description}: {e}"))) from None
            if e.files:
                raise FileProblem(f"{where}: {e}") from None
            raise usage.UsageError(f"{where}: {e}") from None


def _start_problem(settings: GatewaySettings, error: OSError) -> str:
    """One line for a file the gateway could not use while it was being built (the state directory)."""
    state_dir = settings.state_dir
    if state_dir.exists() and not state_dir.is_dir():
        return f"state directory {state_dir}: not a directory"
    name = error.filename if error.filename is not None else state_dir
    return f"cannot use {name}: {error.strerror or error}"


def makeService(options: Options, reactor: Any = None) -> GatewayService:
    """Build the gateway service tree from parsed options, with twistd's log observer when twistd runs it."""
    parent = getattr(options, "parent", None)
    try:
        service = GatewayService(
            options["settings"],
            reactor=reactor,
            extensions=(install_bindings,),
            log_observer=twistd_observer(parent),
        )
    except OSError as e:
        if parent is None:
            raise
        raise SystemExit(f"twistd relay: {_start_problem(options['settings'], e)}") from None
    if parent is not None:
        service.on_listen_failure = lambda problem: _exit_with(problem, parent)
        service.hurry_on_signal = True
    return service


def _exit_with(problem: str, twistd_options: Mapping[str, Any]) -> None:
    """
    End C{twistd relay} with one line and status 1 (a port is taken, say), removing twistd's pid file.

    By then twistd logs what is written to stderr, so the line goes to the log; it is also written to the
    original stderr, the terminal of C{twistd -n}. twistd wrote its pid file already and would leave it
    behind on this way out.

    A daemon's stderr is no terminal: twistd's parent process waits for the daemon's word on its status
    pipe (with its own end of the pipe open, so the daemon's exit alone would leave it waiting for ever),
    and prints what it is told, then ends with status 1.
    """
    pidfile = twistd_options.get("pidfile")
    status_pipe = twistd_options.get("statusPipe")
    # The pid file goes first: once told, the waiting parent ends at once, and whoever started it may look
    # for the pid file before this process would have got round to removing it.
    if pidfile:
        with contextlib.suppress(OSError):
            if Path(pidfile).read_text().strip() == str(os.getpid()):
                Path(pidfile).unlink()
    if status_pipe is not None:
        with contextlib.suppress(OSError):
            # As twistd writes a failure there: "1 " and the message, at most 100 bytes in all.
            os.write(status_pipe, f"1 {problem}".encode("ascii", "backslashreplace")[:100])
            os.close(status_pipe)
    line = f"twistd relay: {problem}"
    if sys.__stderr__ is not None and sys.stderr is not sys.__stderr__:
        sys.__stderr__.write(line + "\n")
        sys.__stderr__.flush()
    raise SystemExit(line)
