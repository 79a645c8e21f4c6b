"""Hypothesis profiles for the reliability tests, and the size switch for the heavier ones.

``HYPOTHESIS_PROFILE`` picks a profile: ``dev`` (the default: a modest number of
examples, so ``make test`` stays fast), ``ci`` (the same count, derandomized so every
CI run tries the same sequences; chosen automatically when ``CI`` is set) or
``thorough`` (many more examples, for ``make soak``).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = settings(
    deadline=None,  # a step's duration on a loaded 2-core machine is not the property
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", _COMMON, max_examples=100, stateful_step_count=60)
settings.register_profile(
    "ci", _COMMON, max_examples=100, stateful_step_count=60, derandomize=True, database=None
)
settings.register_profile("thorough", _COMMON, max_examples=1000, stateful_step_count=80)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)
