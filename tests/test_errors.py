"""Tracking ids: what a sender sees in a refusal and a listener in its request id."""

from __future__ import annotations

import uuid

from twisted.trial.unittest import SynchronousTestCase

from relay.errors import new_tracking_id


class TrackingIdTests(SynchronousTestCase):
    def test_random_guids(self) -> None:
        """Each is a version 4 GUID in its canonical lower-case text, as C{uuid.uuid4()} writes them."""
        ids = [new_tracking_id() for _ in range(2000)]
        self.assertEqual(len(set(ids)), len(ids))
        for text in ids:
            parsed = uuid.UUID(text)
            self.assertEqual((parsed.version, parsed.variant), (4, uuid.RFC_4122))
            self.assertEqual(str(parsed), text)

    def test_every_variant_digit_occurs(self) -> None:
        """The variant digit carries two random bits (8, 9, a, b), as in C{uuid.uuid4()}."""
        digits = {new_tracking_id()[19] for _ in range(2000)}
        self.assertEqual(digits, set("89ab"))
