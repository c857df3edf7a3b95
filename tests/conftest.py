"""Test-session settings shared by the unit and integration tests.

Property tests (hypothesis) run a fixed, reproducible set of examples per test by
default, so a CI run is deterministic and a failure reproduces on any machine.
`ZOT_HYPOTHESIS=explore` draws fresh random examples (and keeps failing ones in
.hypothesis/) to hunt for new edge cases before committing a change.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("explore", derandomize=False)
settings.register_profile("fixed", derandomize=True, database=None)
settings.load_profile("explore" if os.environ.get("ZOT_HYPOTHESIS") == "explore" else "fixed")
