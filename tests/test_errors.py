"""Tracking ids: what a sender sees in a refusal and a listener in its request id."""

from __future__ import annotations

import uuid

from twisted.trial.unittest import SynchronousTestCase

from relay.errors import new_tracking_id, tracked_close_reason


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


class TrackedCloseReasonTests(SynchronousTestCase):
    def test_short_reason_is_whole(self) -> None:
        """A reason that fits is the reason and the id."""
        self.assertEqual(tracked_close_reason("Token expired", "abc"), "Token expired. TrackingId:abc")

    def test_long_reason_is_shortened_before_the_id(self) -> None:
        """A long reason (multi-byte characters too) gives way to the id, on a character boundary."""
        tracking_id = new_tracking_id()
        text = tracked_close_reason("é" * 200, tracking_id)
        self.assertTrue(text.endswith(f". TrackingId:{tracking_id}"), text)
        self.assertLessEqual(len(text.encode()), 123)
        self.assertGreaterEqual(len(text.encode()), 122)

    def test_an_id_too_long_is_clipped_with_the_rest(self) -> None:
        """A listener's own id too long to leave room for the reason is clipped as the whole text."""
        text = tracked_close_reason("Token expired", "x" * 300)
        self.assertTrue(text.startswith("Token expired. TrackingId:xxx"), text)
        self.assertEqual(len(text.encode()), 123)
