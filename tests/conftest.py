"""Shared test configuration: the hypothesis profiles of the property tests (tests/test_properties_*.py) and a
count of the examples they ran, printed at the end of the session.

Profiles, chosen with RNNEXT_HYPOTHESIS_PROFILE (default "ci"):
- "ci": reproducible (derandomize=True: the same examples on every run, no example database), no deadline (the
  tests never depend on speed), and max_examples sized so the property tests run >= 10,000 examples in about two
  minutes on a 2-core machine. Every property test scales its own count from this profile's max_examples.
- "slow": 20x the examples, still without a deadline, random (not derandomized) so each run explores new inputs;
  for a nightly or pre-release run: RNNEXT_HYPOTHESIS_PROFILE=slow python -m pytest tests/test_properties_*.py
- "dev": a quick smoke run (10x fewer examples than "ci").
"""
import collections
import os
import sys
import time

import pytest
from hypothesis import HealthCheck, settings

# too_slow: the engine-vs-twin examples build several arrays per example and run the NumPy twin, which loops over
# time in Python; a few hundred ms for one example on a busy shared machine is expected, not a strategy problem.
_COMMON = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
CI_MAX_EXAMPLES = 300
settings.register_profile("ci", max_examples=CI_MAX_EXAMPLES, derandomize=True, database=None, **_COMMON)
settings.register_profile("slow", max_examples=20 * CI_MAX_EXAMPLES, **_COMMON)
settings.register_profile("dev", max_examples=CI_MAX_EXAMPLES // 10, derandomize=True, database=None, **_COMMON)
PROFILE = os.environ.get("RNNEXT_HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


class ExampleCounter:
    """Counts the examples each property test ran to completion (all checks passed or the expected exception
    was seen); a test calls it once per example, at its end."""

    def __init__(self):
        self.counts = collections.Counter()
        self.started = None

    def __call__(self):
        caller = sys._getframe(1).f_code.co_name
        self.counts[caller] += 1


_COUNTER = ExampleCounter()


@pytest.fixture(scope="session")
def example_counter():
    if _COUNTER.started is None:
        _COUNTER.started = time.perf_counter()
    return _COUNTER


def pytest_report_header(config):
    return f"rnnext hypothesis profile: {PROFILE} (max_examples={settings.default.max_examples})"


def pytest_terminal_summary(terminalreporter):
    if not _COUNTER.counts:
        return
    total = sum(_COUNTER.counts.values())
    elapsed = time.perf_counter() - _COUNTER.started
    terminalreporter.section("property-test examples")
    for name, count in sorted(_COUNTER.counts.items()):
        terminalreporter.write_line(f"{count:7d}  {name}")
    terminalreporter.write_line(f"{total:7d}  examples in total ({PROFILE} profile), {elapsed:.1f} s from the first "
                                "property test to the end of the session")
