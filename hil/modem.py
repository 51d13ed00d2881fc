"""The old home of :mod:`hil.drivers.modem`, kept so callers' imports keep working."""

import sys

from hil.drivers import modem

sys.modules[__name__] = modem
