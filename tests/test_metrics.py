"""Tests for the metrics registry and its Prometheus text rendering (no sockets)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from relay.metrics import (
    CONTENT_TYPE,
    OTHER,
    UNKNOWN,
    Registry,
    escape_help,
    escape_label,
    format_value,
    outcome,
    status_class,
)


class TextFormatTests(SynchronousTestCase):
    """Values, label values and help text are written as the exposition format requires."""

    def test_escape_label(self) -> None:
        """Backslash, double quote and line feed are escaped; nothing else is."""
        self.assertEqual(escape_label('a\\b"c\nd é'), 'a\\\\b\\"c\\nd é')

    def test_escape_help(self) -> None:
        """Help text escapes backslash and line feed but keeps double quotes."""
        self.assertEqual(escape_help('say "x"\\\n'), 'say "x"\\\\\\n')

    def test_format_value(self) -> None:
        """Integers have no fraction; infinities and NaN use the format's spelling."""
        cases = [(3, "3"), (2.0, "2"), (0.25, "0.25"), (float("inf"), "+Inf"), (float("-inf"), "-Inf")]
        for value, text in cases:
            self.assertEqual(format_value(value), text)
        self.assertEqual(format_value(float("nan")), "NaN")

    def test_outcome_and_status_class(self) -> None:
        """4xx refusals are client errors, 5xx server errors; statuses group by hundreds."""
        self.assertEqual(
            [outcome(s) for s in (401, 404, 500, 504)], ["client_error"] * 2 + ["server_error"] * 2
        )
        self.assertEqual([status_class(s) for s in (200, 404, 502, 42)], ["2xx", "4xx", "5xx", "other"])

    def test_content_type(self) -> None:
        """The media type Prometheus expects for version 0.0.4."""
        self.assertEqual(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")


class RegistryTests(SynchronousTestCase):
    """Families, labels, ordering and the bound on entity names."""

    def test_exposition_is_sorted_and_typed(self) -> None:
        """Families come by name with HELP and TYPE; samples by label values; unlabelled counters show 0."""
        registry = Registry()
        sends = registry.counter("relay_b_total", "B things.", ("entity", "outcome"))
        registry.counter("relay_a_total", "A things.")
        gauge = registry.gauge("relay_c", 'C "level".', ("entity",))
        sends.inc("zeta", "success")
        sends.inc("alpha", "success", amount=2)
        sends.inc("alpha", "client_error")
        gauge.inc("x")
        gauge.inc("x")
        gauge.dec("x")
        self.assertEqual(
            registry.exposition().decode("utf-8"),
            "# HELP relay_a_total A things.\n"
            "# TYPE relay_a_total counter\n"
            "relay_a_total 0\n"
            "# HELP relay_b_total B things.\n"
            "# TYPE relay_b_total counter\n"
            'relay_b_total{entity="alpha",outcome="client_error"} 1\n'
            'relay_b_total{entity="alpha",outcome="success"} 2\n'
            'relay_b_total{entity="zeta",outcome="success"} 1\n'
            '# HELP relay_c C "level".\n'
            "# TYPE relay_c gauge\n"
            'relay_c{entity="x"} 1\n',
        )

    def test_label_values_escaped_in_samples(self) -> None:
        """A hostile entity name cannot break the line it is on."""
        registry = Registry()
        registry.counter("relay_x_total", "X.", ("entity",)).inc('a"}\nevil 1')
        self.assertIn(b'relay_x_total{entity="a\\"}\\nevil 1"} 1\n', registry.exposition())

    def test_cells_are_shared(self) -> None:
        """labels() returns the same cell each time: hot paths can keep it and add to its value."""
        family = Registry().counter("relay_bytes_total", "Bytes.", ("entity",))
        cell = family.labels("a")
        cell.value += 10
        family.inc("a", amount=5)
        self.assertIs(family.labels("a"), cell)
        self.assertEqual(cell.value, 15)

    def test_wrong_label_count(self) -> None:
        """Giving the wrong number of label values is a programming error."""
        family = Registry().counter("relay_x_total", "X.", ("entity", "outcome"))
        self.assertRaises(ValueError, family.inc, "only-one")

    def test_duplicate_name(self) -> None:
        """A name is registered once."""
        registry = Registry()
        registry.counter("relay_x_total", "X.")
        self.assertRaises(ValueError, registry.gauge, "relay_x_total", "X again.")

    def test_entities_bounded(self) -> None:
        """Past the limit, new entity names are counted under _other; known names keep their series."""
        registry = Registry(max_entities=2)
        family = registry.counter("relay_x_total", "X.", ("entity", "outcome"))
        for name in ("a", "b", "c", "d", "a"):
            family.inc(name, "success")
        family.inc(UNKNOWN, "client_error")
        self.assertEqual(
            family.samples(),
            [
                (("_other", "success"), 2),
                (("_unknown", "client_error"), 1),
                (("a", "success"), 2),
                (("b", "success"), 1),
            ],
        )
        self.assertEqual(registry.value("relay_x_total", entity=OTHER, outcome="success"), 2)

    def test_reserved_entities(self) -> None:
        """Reserved names keep their series outside the limit, in families made before and after."""
        registry = Registry(max_entities=1)
        before = registry.counter("relay_x_total", "X.", ("entity",))
        registry.reserve(["configured"])
        after = registry.gauge("relay_g", "G.", ("entity",))
        levels = [(("a",), 1), (("b",), 1), (("configured",), 1)]
        registry.sampled("relay_level", "Levels.", ("entity",), lambda: levels)
        for family in (before, after):
            for name in ("a", "b", "configured"):
                family.inc(name)
            self.assertEqual(family.samples(), [(("_other",), 1), (("a",), 1), (("configured",), 1)])
        self.assertIn(b'relay_level{entity="configured"} 1\n', registry.exposition())

    def test_gauge_folding_balances(self) -> None:
        """A folded name's increments and decrements meet the same cell, so the level returns to 0."""
        gauge = Registry(max_entities=1).gauge("relay_g", "G.", ("entity",))
        gauge.inc("a")
        gauge.inc("b")
        gauge.inc("c")
        gauge.dec("b")
        gauge.dec("c")
        self.assertEqual(gauge.samples(), [(("_other",), 0), (("a",), 1)])

    def test_sampled_family(self) -> None:
        """A sampled family reads its levels at rendering, sums equal label sets and bounds entities."""
        levels = [(("a",), 1), (("b",), 2), (("c",), 3), (("a",), 1)]
        registry = Registry(max_entities=2)
        registry.sampled("relay_level", "Levels.", ("entity",), lambda: levels)
        self.assertIn(b'relay_level{entity="_other"} 3\nrelay_level{entity="a"} 2\n', registry.exposition())
        levels[:] = []
        self.assertNotIn(b"relay_level{", registry.exposition())

    def test_value(self) -> None:
        """value() reads one sample, 0 when absent."""
        registry = Registry()
        registry.counter("relay_x_total", "X.", ("entity",)).inc("a", amount=3)
        self.assertEqual(registry.value("relay_x_total", entity="a"), 3)
        self.assertEqual(registry.value("relay_x_total", entity="b"), 0)
