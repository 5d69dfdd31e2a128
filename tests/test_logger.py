"""L{relay.logger.Logger} emits exactly the events Twisted's C{Logger} does."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger as TwistedLogger
from twisted.logger import LogLevel, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from relay.logger import Logger

_published_twisted: list[dict[str, Any]] = []
_published_relay: list[dict[str, Any]] = []
_twisted_publisher = LogPublisher(_published_twisted.append)
_relay_publisher = LogPublisher(_published_relay.append)


class WithTwisted:
    log = TwistedLogger(observer=_twisted_publisher)


class WithRelay:
    log = Logger(observer=_relay_publisher)


module_logger = Logger()


def _comparable(event: dict[str, Any]) -> dict[str, Any]:
    """The event without what differs between the two loggers by construction."""
    return {
        k: v for k, v in event.items() if k not in ("log_time", "log_logger", "log_source", "log_namespace")
    }


class LoggerTests(SynchronousTestCase):
    def setUp(self) -> None:
        _published_twisted.clear()
        _published_relay.clear()

    def test_events_are_twisteds_field_for_field(self) -> None:
        twisted_owner, relay_owner = WithTwisted(), WithRelay()
        for level in LogLevel.iterconstants():
            twisted_owner.log.emit(level, "{access}", access="GET / -> 200", size=5)
            relay_owner.log.emit(level, "{access}", access="GET / -> 200", size=5)
        twisted_owner.log.info("plain {x}", x=1)
        relay_owner.log.info("plain {x}", x=1)
        self.assertEqual(len(_published_relay), 6)
        self.assertEqual(
            [_comparable(e) for e in _published_relay], [_comparable(e) for e in _published_twisted]
        )
        self.assertEqual(set(_published_relay[0]), set(_published_twisted[0]))
        for event in _published_relay:
            self.assertIs(event["log_source"], relay_owner)
            self.assertEqual(event["log_namespace"], f"{__name__}.WithRelay")
            self.assertIsInstance(event["log_logger"], Logger)
            self.assertIsInstance(event["log_time"], float)

    def test_descriptor_names_the_class_and_binds_the_source(self) -> None:
        owner = WithRelay()
        self.assertEqual(owner.log.namespace, WithTwisted().log.namespace.replace("WithTwisted", "WithRelay"))
        self.assertIs(owner.log.source, owner)
        self.assertIs(WithRelay.log.source, WithRelay)
        self.assertIs(owner.log.observer, _relay_publisher)
        self.assertIsInstance(owner.log, Logger)

    def test_module_logger_is_named_after_its_module(self) -> None:
        self.assertEqual(module_logger.namespace, __name__)

    def test_an_invalid_level_is_reported_as_twisted_reports_it(self) -> None:
        WithRelay().log.emit("not a level", "x")  # type: ignore[arg-type]
        WithTwisted().log.emit("not a level", "x")  # type: ignore[arg-type]
        (relay_event,) = _published_relay
        (twisted_event,) = _published_twisted
        self.assertEqual(relay_event["log_level"], LogLevel.critical)
        self.assertEqual(relay_event["log_format"], twisted_event["log_format"])

    def test_traces_take_twisteds_path(self) -> None:
        trace: list[Any] = []
        twisted_trace: list[Any] = []
        logger = WithRelay().log
        logger.info("traced", log_trace=trace)
        WithTwisted().log.info("traced", log_trace=twisted_trace)
        self.assertEqual(len(trace), len(twisted_trace))
        self.assertIs(trace[0][0], logger)
        self.assertEqual(len(_published_relay), 1)
