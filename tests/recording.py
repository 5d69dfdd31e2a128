"""Test doubles shared by several test modules."""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class RecordingProducer:
    """A push producer (or a transport's reading) that records how it is throttled: pause, resume, stop."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        """Record a pause."""
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        """Record a resume."""
        self.calls.append("resume")

    def stopProducing(self) -> None:
        """Record a stop."""
        self.calls.append("stop")
