"""
Pytest set-up shared by every test.

Trial's C{TestCase.mktemp} makes paths relative to the working directory (trial itself runs in a
C{_trial_temp} directory). Under pytest that would litter the checkout, so the whole session runs in a
temporary directory instead; tests find their own files through C{__file__}.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# Property tests count examples, not seconds: a loaded machine must not turn a slow example into a failure
# (Hypothesis's default deadline is 200 ms of wall-clock time per example).
settings.register_profile("relay", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("relay")


@pytest.fixture(autouse=True, scope="session")
def _work_in_a_temporary_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("trial"))
    try:
        yield
    finally:
        os.chdir(previous)
