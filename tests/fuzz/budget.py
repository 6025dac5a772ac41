"""How hard the fuzz targets try: briefly in `make test`, much longer in `make soak`.

`STRANGLER_FUZZ_EXAMPLES=N` sets every target's max_examples to N (the soak
sets it high); without it each target uses its own small default so that all
of tests/fuzz stays well under 15 s.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_OVERRIDE = int(os.environ.get("STRANGLER_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(default_examples: int, **extra: object) -> settings:
    return settings(
        max_examples=_OVERRIDE or default_examples,
        deadline=None,                      # a loaded CI machine is not a bug
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.function_scoped_fixture],
        **extra,
    )
