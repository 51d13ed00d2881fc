"""Suite-wide settings.

Hypothesis' per-example deadline is a timed assertion: on a shared or loaded machine a
single pause fails a correct property. Properties here check behaviour only; speed is
measured by the benchmarks, as ratios against a baseline in the same run.
"""

from hypothesis import settings

settings.register_profile("suite", deadline=None)
settings.load_profile("suite")
