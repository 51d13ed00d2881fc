"""The old home of :mod:`hil.drivers.rn2483`, kept so callers' imports keep working."""

import sys

from hil.drivers import rn2483

sys.modules[__name__] = rn2483
