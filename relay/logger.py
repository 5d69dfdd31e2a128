"""
twisted.logger's C{Logger}, with the same events for about half the cost per event.

The gateway logs an access line for every relayed request, pair and legacy message. Twisted's C{Logger}
checks each event's level with C{level in LogLevel.iterconstants()}, which sorts the five levels anew on
every call, and, used as a class attribute (C{log = Logger()}), builds the namespace string of a new
logger on every C{self.log} access. Together that was half the cost of an access line (12 µs against 6.7
on the machine that measured it, a slow one). L{Logger} here keeps Twisted's behaviour and events, field
for field: only those two steps are cheaper.
"""

from __future__ import annotations

from functools import lru_cache
from time import time

from twisted.logger import Logger as TwistedLogger
from twisted.logger import LogLevel

_LEVELS = frozenset(LogLevel.iterconstants())


@lru_cache(maxsize=1024)
def _class_namespace(owner: type) -> str:
    """Twisted's namespace for a logger declared on C{owner}: its module and name."""
    return f"{owner.__module__}.{owner.__name__}"


class Logger(TwistedLogger):
    """A drop-in C{twisted.logger.Logger}: the same events, fewer steps per event (see the module docstring)."""

    def __get__(self, instance: object, owner: type | None = None) -> Logger:
        """As Twisted's: a logger named after C{owner}, with the instance (or class) as its source."""
        if owner is None:  # Python passes the owner to a descriptor found on a class
            owner = type(instance)
        return self.__class__(_class_namespace(owner), owner if instance is None else instance, self.observer)

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        """As Twisted's C{emit}; an unknown level or a trace takes Twisted's own path."""
        if level not in _LEVELS or "log_trace" in kwargs:
            super().emit(level, format, **kwargs)
            return
        kwargs["log_logger"] = self
        kwargs["log_level"] = level
        kwargs["log_namespace"] = self.namespace
        kwargs["log_source"] = self.source
        kwargs["log_format"] = format
        kwargs["log_time"] = time()
        self.observer(kwargs)
