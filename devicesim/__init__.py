"""devicesim: a SimPy discrete-event simulator of LoRaWAN devices, radio channel,
gateways and network server, producing exactly what the application receives.

Entry points: :func:`simulate` (a :class:`SimConfig` in, a :class:`SimResult` out),
:func:`write_trace`, and the reusable :class:`NetworkServer` model. See docs/simulator.md.
"""

from devicesim.config import ConfigError, SimConfig, config_from_dict, load_config
from devicesim.network import Delivery, Frame, NetworkServer, Reception
from devicesim.rng import dev_eui
from devicesim.sim import RecordTruth, SimResult, Stats, simulate
from devicesim.trace import read_trace, trace_lines, write_trace

__all__ = [
    "ConfigError",
    "Delivery",
    "Frame",
    "NetworkServer",
    "Reception",
    "RecordTruth",
    "SimConfig",
    "SimResult",
    "Stats",
    "config_from_dict",
    "dev_eui",
    "load_config",
    "read_trace",
    "simulate",
    "trace_lines",
    "write_trace",
]
