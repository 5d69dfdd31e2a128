"""A ServiceHost leaving gracefully through the in-memory gateway: r:Unregister, the fence, the last replies."""

from __future__ import annotations

from twisted.internet import defer

from bindings.faults import SoapFault

from . import test_host
from .services import Calculator
from .wcfharness import BindingsTestCase


class LeavingTests(BindingsTestCase):
    """C{ServiceHost.close()} lets the calls it is serving finish; C{abort()} does not."""

    # the helpers of the host's other tests (the module is imported whole, so its tests are not collected here)
    host = test_host.HostOnGatewayTests.host
    channel = test_host.HostOnGatewayTests.channel
    opened = test_host.HostOnGatewayTests.opened

    def holding(self) -> tuple[Calculator, object, defer.Deferred[object], object]:
        """A host whose service holds the one call made: the service, the host, the call, the channel."""
        service = Calculator()
        service.hold = True
        host = self.host(service)
        self.opened(host)
        _, calc = self.channel()
        waiting = calc.Add(1, 2)  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual(len(service.held), 1)
        return service, host, waiting, calc

    def answer_then_closed(
        self, service: Calculator, waiting: defer.Deferred[object], closing: object
    ) -> None:
        """The held call ends: its caller gets the answer, and only then is the host's close complete."""
        self.assertNoResult(closing)
        service.held[0][0].callback(3)
        self.net.flush()
        self.assertEqual(self.successResultOf(waiting), 3)
        self.successResultOf(closing)

    def test_a_call_in_progress_gets_its_reply(self) -> None:
        """The held call's reply reaches its caller after close(); a call made meanwhile gets ListenerGone."""
        service, host, waiting, calc = self.holding()
        closing = host.close()  # type: ignore[attr-defined]
        self.net.flush()
        self.assertNoResult(closing)
        late = calc.Add(3, 4)  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual(self.failureResultOf(late, SoapFault).value.subcodes[-1][1], "ListenerGone")
        self.assertEqual(len(service.held), 1)  # nothing new reached the leaving host
        self.answer_then_closed(service, waiting, closing)

    def test_new_calls_go_to_the_other_listener(self) -> None:
        """With a second host on the name, calls made while the first one leaves are all served by it."""
        service, host, waiting, calc = self.holding()
        other = Calculator()
        second = self.host(other)
        second.open()
        self.net.flush()
        closing = host.close()  # type: ignore[attr-defined]
        self.net.flush()
        later = [calc.Add(i, i) for i in range(4)]  # type: ignore[attr-defined]
        self.net.flush()
        self.assertEqual([self.successResultOf(d) for d in later], [0, 2, 4, 6])
        self.assertEqual(len(service.held), 1)
        self.answer_then_closed(service, waiting, closing)

    def test_abort_fails_the_call_in_progress(self) -> None:
        """abort() leaves at once: the held call's caller gets ListenerGone."""
        _, host, waiting, _ = self.holding()
        aborting = host.abort()  # type: ignore[attr-defined]
        self.net.flush()
        self.successResultOf(aborting)
        self.assertEqual(self.failureResultOf(waiting, SoapFault).value.subcodes[-1][1], "ListenerGone")

    def test_close_timeout(self) -> None:
        """A call still held at the close timeout is cut off: its caller gets ListenerGone."""
        _, host, waiting, _ = self.holding()
        closing = host.close(2.0)  # type: ignore[attr-defined]
        self.net.advance(1.9)
        self.assertNoResult(closing)
        self.net.advance(0.2)
        self.successResultOf(closing)
        self.assertEqual(self.failureResultOf(waiting, SoapFault).value.subcodes[-1][1], "ListenerGone")
