"""
Run the gateway for a benchmark the way C{twistd -n relay} does, and say which port it got.

The options are C{twistd relay}'s own (parsed by L{relay.tap.Options}); log events go to a file through
the observer C{twistd -n --logfile FILE relay} uses (L{relay.logtext}, or twistd's own text observer for
a gateway from before it), so per-connection logging costs what it costs in production.
Prints C{READY <port>} once listening. C{--cprofile FILE} wraps the reactor in cProfile (use py-spy
from the runner for sampling without the overhead).

    python -m benchmarks.gateway --log FILE [--cprofile FILE] -- --listen tcp:0:interface=127.0.0.1 --config F
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def log_observer(path: str) -> Any:
    """What twistd would log through with C{-n --logfile PATH}, for the gateway code being run."""
    try:
        from relay.logtext import twistd_observer
    except ImportError:  # --gateway-from a checkout older than relay.logtext: twistd's own observer
        from twisted.logger import textFileLogObserver

        return textFileLogObserver(open(path, "a"))  # open for the life of the process
    return twistd_observer({"logfile": path, "nodaemon": True})


def main(argv: list[str]) -> None:
    from benchmarks.procs import raise_nofile_limit

    limit = raise_nofile_limit()
    parser = argparse.ArgumentParser(prog="benchmarks.gateway")
    parser.add_argument("--log", required=True)
    parser.add_argument("--cprofile")
    parser.add_argument("relay_options", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from relay.tap import Options, makeService

    globalLogBeginner.beginLoggingTo([log_observer(args.log)], redirectStandardIO=False)

    options = Options()
    options.parseOptions([a for a in args.relay_options if a != "--"])
    service = makeService(options)
    service.startService()

    def ready(result: Any) -> None:
        port = getattr(service.ports[0].getHost(), "port", 0)
        # what relays WebSocket pairs: a --gateway-from checkout may predate the native thread
        native = getattr(getattr(service, "hybrid_factory", None), "native", None)
        print(
            f"READY {port} nofile={limit} splice={'native' if native is not None else 'python'}", flush=True
        )

    service.ready.addCallback(ready)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)  # type: ignore[attr-defined]
    if args.cprofile:
        import cProfile

        profile = cProfile.Profile()
        profile.runcall(reactor.run)  # type: ignore[attr-defined]
        profile.dump_stats(args.cprofile)
    else:
        reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
