"""The old home of :mod:`hil.drivers.rak3172`, kept so callers' imports keep working."""

import sys

from hil.drivers import rak3172

sys.modules[__name__] = rak3172
