"""
Every fuzz target's committed inputs (seeds and fixed findings) replayed through its check.

No fuzzer runs here: these are fixed inputs, so the test is deterministic and needs no atheris.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.runner import load, seeds, targets

CASES = [(name, path) for name in targets() for path in seeds(name)]


def test_every_target_has_seeds() -> None:
    """A target without inputs would replay nothing here."""
    assert targets(), "no fuzz targets found"
    assert [name for name in targets() if not seeds(name)] == []


@pytest.mark.parametrize(("name", "path"), CASES, ids=[f"{n}/{p.name}" for n, p in CASES])
def test_input(name: str, path: Path) -> None:
    load(name)(path.read_bytes())
