"""The simulated devices' records: the project's one generator,
:func:`collector.testing.examples.make_record` (one seeded stream per device)."""

from collector.testing.examples import make_record

__all__ = ["make_record"]
