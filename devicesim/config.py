"""Simulation configuration: plain dataclasses, loadable from a TOML document.

(Longer than 400 lines on purpose: the schema, its loader and its checks are one
contract and read best side by side.)

Every section has working defaults, so ``SimConfig()`` is a runnable 10-device,
24-hour EU868 simulation. :func:`config_from_dict` accepts the TOML form (see
docs/simulator.md) and raises :class:`ConfigError` naming the offending key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.core.lorawan import region as lookup_region
from collector.core.timefmt import parse_ms
from collector.core.wire import BLOCK_NAMES
from collector.tomlconfig import ConfigError, check_keys, read_toml, table

#: 2026-11-24T00:00:00Z, the default virtual start time (fixed so output is reproducible)
DEFAULT_START = 1_795_478_400

#: the optional blocks a record may carry
BLOCKS = BLOCK_NAMES




@dataclass
class ScheduleConfig:
    #: "daily": one record a day at ``hour`` (or a per-device random hour when None)
    #: plus a uniform jitter of +-``jitter_min`` minutes; "every": one record every
    #: ``every_min`` minutes with a random per-device phase, each moved by a uniform
    #: +-``jitter_min`` minutes (at most a quarter of the period; 0: lockstep);
    #: "poisson": no records, raw
    #: frames of ``payload_bytes`` with exponential gaps of mean ``mean_interval_s``
    #: (the classic LoRaSim workload).
    kind: str = "daily"
    hour: int | None = None
    jitter_min: float = 30.0
    every_min: float = 60.0
    mean_interval_s: float = 1000.0
    payload_bytes: int = 7


@dataclass
class RecordShape:
    channels: int = 2
    samples: int = 144
    #: optional blocks included in every record
    blocks: tuple[str, ...] = BLOCKS


@dataclass
class DRPolicy:
    #: "fixed": always ``dr``; "adr": the fastest 125 kHz DR whose mean link margin to
    #: the best gateway is at least ``margin_db``; "mix": drawn per device from ``weights``
    kind: str = "adr"
    dr: int = 0
    margin_db: float = 5.0
    weights: tuple[float, ...] = ()


@dataclass
class RebootConfig:
    #: expected reboots per device per day (Poisson); 0 disables random reboots
    per_day: float = 0.0
    #: explicit reboots: seconds after the start, applied to ``devices`` (all when empty)
    at_s: tuple[float, ...] = ()
    devices: tuple[int, ...] = ()
    #: time a rebooted device needs (re-join) before it transmits again
    rejoin_s: float = 10.0


@dataclass
class WireConfig:
    """How a group of devices sends its records: wire format v1 (FPort 16, uplinks
    only) or v2 (FPort 17, parity and the repair loop, wire-format-v2.md section 4)."""

    #: devices in the group (groups take the device indices in order)
    count: int = 0
    wire: str = "v1"
    #: v2: parity rows per message, or "adaptive" (start at 2; the collector steers r)
    parity: int | str = 2
    #: v2: polls per round, repair rounds per message (the spec's defaults)
    polls: int = 3
    rounds: int = 3
    #: v2: least time between two polls of one message (0: at the next opportunity)
    poll_interval_s: float = 0.0


@dataclass
class DevicesConfig:
    count: int = 10
    #: devices are placed uniformly in a disc of this radius (m) around the origin
    radius_m: float = 250.0
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    record: RecordShape = field(default_factory=RecordShape)
    dr: DRPolicy = field(default_factory=DRPolicy)
    #: fragment size S; None means the DR's maximum payload N
    fragment_size: int | None = None
    reboots: RebootConfig = field(default_factory=RebootConfig)
    tx_power_dbm: float = 14.0
    #: obey the sub-band duty cycle (turn off only to reproduce LoRaSim)
    duty_cycle: bool = True
    #: smallest gap between the end of one uplink and the start of the next (class A
    #: receive windows)
    min_gap_s: float = 3.0
    #: override the region's default uplink channels (Hz)
    channels_hz: tuple[int, ...] = ()
    #: wire format of every device (``wire``, ``parity``, ``polls``, ``rounds``,
    #: ``poll_interval_s``), unless ``groups`` split the fleet
    wire: str = "v1"
    parity: int | str = 2
    polls: int = 3
    rounds: int = 3
    poll_interval_s: float = 0.0
    #: groups of devices with their own wire settings; their counts add up to ``count``
    groups: tuple[WireConfig, ...] = ()

    def wire_of(self, index: int) -> WireConfig:
        """The wire settings of device ``index``."""
        first = 0
        for g in self.groups:
            if index < first + g.count:
                return g
            first += g.count
        return WireConfig(self.count, self.wire, self.parity, self.polls, self.rounds, self.poll_interval_s)

    @property
    def any_v2(self) -> bool:
        return any(g.wire == "v2" for g in self.groups) if self.groups else self.wire == "v2"


@dataclass
class ChannelConfig:
    #: "physical" (path loss, shadowing, sensitivity, collisions with capture),
    #: "bernoulli" (each uplink lost with probability ``p``) or "gilbert" (two-state
    #: Gilbert-Elliott chain per device)
    model: str = "physical"
    p: float = 0.0
    p_gb: float = 0.05
    p_bg: float = 0.3
    loss_good: float = 0.0
    loss_bad: float = 1.0
    #: log-distance path loss PL(d) = pl_d0_db + 10 * gamma * log10(d / d0_m) + N(0, sigma)
    pl_d0_db: float = 127.41
    d0_m: float = 40.0
    gamma: float = 2.08
    shadowing_db: float = 3.57
    noise_figure_db: float = 6.0
    collisions: bool = True
    capture: bool = True
    capture_db: float = 6.0


@dataclass
class GatewaysConfig:
    count: int = 1
    #: explicit positions (m); when empty gateway 0 is at the origin and the others on a
    #: circle of half the device radius
    positions: tuple[tuple[float, float], ...] = ()


@dataclass
class Latency:
    """A delay: ``base_s`` plus a random part of mean ``jitter_s``."""

    base_s: float = 0.0
    jitter_s: float = 0.0
    #: "exponential", "uniform" (0..2*jitter) or "lognormal" (sigma 1, mean jitter)
    dist: str = "exponential"


@dataclass
class Outage:
    gateway: int
    start_s: float
    duration_s: float


@dataclass
class DownlinkConfig:
    """Class A downlinks of the network server and the gateways (closed loop only)."""

    #: RX1 opens this long after an uplink ends (1 s: ChirpStack's default; 5 s: The
    #: Things Stack's); RX2 one second later
    rx1_delay_s: float = 1.0
    rx1_dr_offset: int = 0
    #: RX2 frequency (Hz) and DR; 0 and -1: the region's default
    rx2_frequency_hz: int = 0
    rx2_dr: int = -1
    #: the server takes a queued downlink for an uplink's windows this long after its
    #: deduplication window closed (ChirpStack's get_downlink_data_delay, 100 ms); a
    #: downlink queued later waits for the device's next uplink
    read_delay_s: float = 0.1
    #: the application's downlink reaches the server's queue this long after it was sent
    push_latency_s: float = 0.05
    gateway_tx_power_dbm: float = 14.0
    #: gateways obey the sub-band duty cycle for downlinks (EU868: 1 % / 10 % on 869.525 MHz)
    duty_cycle: bool = True
    #: a transmitting gateway hears nothing on any channel
    half_duplex: bool = True


@dataclass
class NetworkConfig:
    enabled: bool = True
    dedup_window_s: float = 0.2
    fcnt_check: bool = True
    #: gateway -> network server
    backhaul: Latency = field(default_factory=lambda: Latency(0.05, 0.0))
    #: network server -> application (the integration's asynchronous delivery)
    delivery: Latency = field(default_factory=lambda: Latency(0.1, 0.0))
    outages: tuple[Outage, ...] = ()
    #: spacing of frames flushed from a gateway's buffer when its backhaul returns
    flush_spacing_s: float = 0.05
    duplicate_p: float = 0.0
    duplicate_delay: Latency = field(default_factory=lambda: Latency(1.0, 20.0))
    application_id: str = "field-loggers"
    downlinks: DownlinkConfig = field(default_factory=DownlinkConfig)


@dataclass
class SimConfig:
    region: str = "EU868"
    #: records are made during the first ``hours``
    hours: float = 24.0
    #: a message started before the end is sent to its last fragment (False: the
    #: transmitter stops at ``hours``, cutting messages in flight)
    finish_messages: bool = True
    seed: int = 1
    #: virtual start, Unix seconds
    start: float = DEFAULT_START
    format: str = "generic"
    #: "auto" (the closed loop when a device group uses v2, else staged), "staged" or "loop"
    engine: str = "auto"
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    gateways: GatewaysConfig = field(default_factory=GatewaysConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)

    def validate(self) -> SimConfig:
        _validate(self)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- loading


def _build(cls: type, data: Any, where: str):
    if dataclasses.is_dataclass(data):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    tables = {name for (owner, name) in _NESTED if owner is cls}
    check_keys(data, [n for n in fields if n not in tables], tables, where=where or "config",
               known=", ".join(n for n in fields if n not in tables))
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _convert(cls, name, value, key)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or 'config'}: {e}") from None


_NESTED = {
    (SimConfig, "devices"): DevicesConfig,
    (SimConfig, "channel"): ChannelConfig,
    (SimConfig, "gateways"): GatewaysConfig,
    (SimConfig, "network"): NetworkConfig,
    (DevicesConfig, "schedule"): ScheduleConfig,
    (DevicesConfig, "record"): RecordShape,
    (DevicesConfig, "dr"): DRPolicy,
    (DevicesConfig, "reboots"): RebootConfig,
    (NetworkConfig, "backhaul"): Latency,
    (NetworkConfig, "delivery"): Latency,
    (NetworkConfig, "duplicate_delay"): Latency,
    (NetworkConfig, "downlinks"): DownlinkConfig,
}


def _convert(cls: type, name: str, value: Any, key: str):
    sub = _NESTED.get((cls, name))
    if sub is not None:
        return _build(sub, value, key)
    if cls is NetworkConfig and name == "outages":
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list of {{gateway, start_s, duration_s}} tables")
        return tuple(_build(Outage, v, f"{key}[{i}]") for i, v in enumerate(value))
    if cls is DevicesConfig and name == "groups":
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list of {{count, wire, parity, polls, rounds}} tables")
        return tuple(_build(WireConfig, v, f"{key}[{i}]") for i, v in enumerate(value))
    if cls is GatewaysConfig and name == "positions":
        try:
            return tuple((float(x), float(y)) for x, y in value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a list of [x, y] pairs (m)") from None
    if cls is SimConfig and name == "start" and isinstance(value, str):
        try:
            return parse_ms(value) / 1000.0
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None
    if hasattr(value, "timestamp"):  # TOML datetime
        return float(value.timestamp())
    _check_scalar(str(next(f.type for f in dataclasses.fields(cls) if f.name == name)), value, key)
    if isinstance(value, list):
        return tuple(value)
    return value


def _check_scalar(typ: str, value: Any, key: str) -> None:
    """A TOML value of the wrong kind for a field (``hours = "abc"``) is a ConfigError
    naming the key, not a TypeError later in validation or the simulation."""
    if isinstance(value, bool):
        ok = "bool" in typ
    elif isinstance(value, int):
        ok = "int" in typ or "float" in typ
    elif isinstance(value, float):
        ok = "float" in typ
    elif isinstance(value, str):
        ok = "str" in (t.strip() for t in typ.split("|"))  # str, or a union with str (parity: int | str)
    elif isinstance(value, list):
        ok = typ.startswith("tuple")
    else:
        ok = False
    if not ok:
        want = typ.split(" |")[0].replace("tuple[", "a list of ").rstrip(", .]")
        raise ConfigError(f"{key}: expected {want}, got {value!r}")


def config_from_dict(data: dict) -> SimConfig:
    """Build and validate a :class:`SimConfig` from its TOML/JSON form."""
    return _build(SimConfig, data, "").validate()


def load_config(path: str | Path) -> SimConfig:
    """Read a TOML configuration file (a ``[devicesim]`` table, or the whole file)."""
    data = read_toml(path, "config")
    if "devicesim" in data:  # the simulator's table of a larger file: nothing else may be in it
        check_keys(data, tables=("devicesim",), where=f"config {str(path)!r}")
        data = dict(table(data, "devicesim"))
    return config_from_dict(data)


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _validate(c: SimConfig) -> None:
    from devicesim.formats import FORMATS

    try:
        reg = lookup_region(c.region)
    except ValueError as e:
        raise ConfigError(f"region: {e}") from None
    c.region = reg.name
    _need(c.hours > 0, f"hours must be > 0, got {c.hours}")
    _need(isinstance(c.seed, int) and c.seed >= 0, f"seed must be an integer >= 0, got {c.seed!r}")
    _need(c.format in FORMATS, f"format must be one of {', '.join(FORMATS)}, got {c.format!r}")
    d = c.devices
    _need(isinstance(d.count, int) and d.count >= 0, f"devices.count must be an integer >= 0, got {d.count!r}")
    _need(d.radius_m > 0, "devices.radius_m must be > 0")
    s = d.schedule
    _need(s.kind in ("daily", "every", "poisson"), f"devices.schedule.kind must be daily|every|poisson, got {s.kind!r}")
    _need(s.hour is None or 0 <= s.hour <= 23, "devices.schedule.hour must be 0..23")
    _need(s.every_min > 0 and s.mean_interval_s > 0, "devices.schedule intervals must be > 0")
    _need(s.jitter_min >= 0, f"devices.schedule.jitter_min must be >= 0, got {s.jitter_min}")
    _need(1 <= s.payload_bytes <= 242, "devices.schedule.payload_bytes must be 1..242")
    r = d.record
    _need(1 <= r.channels <= 4, f"devices.record.channels must be 1..4, got {r.channels}")
    _need(1 <= r.samples <= 255, f"devices.record.samples must be 1..255, got {r.samples}")
    bad = [b for b in r.blocks if b not in BLOCKS]
    _need(not bad, f"devices.record.blocks: unknown block(s) {bad}; known: {', '.join(BLOCKS)}")
    p = d.dr
    _need(p.kind in ("fixed", "adr", "mix"), f"devices.dr.kind must be fixed|adr|mix, got {p.kind!r}")
    try:
        if p.kind == "fixed":
            reg.dr(p.dr)
    except ValueError as e:
        raise ConfigError(f"devices.dr.dr: {e}") from None
    if p.kind == "mix":
        _need(len(p.weights) == len(reg.data_rates) and sum(p.weights) > 0 and min(p.weights) >= 0,
              f"devices.dr.weights needs {len(reg.data_rates)} non-negative weights (one per DR)")
    if d.fragment_size is not None:
        _need(4 <= d.fragment_size <= 242, "devices.fragment_size must be 4..242")
    _need(d.reboots.per_day >= 0, "devices.reboots.per_day must be >= 0")
    _need(d.min_gap_s >= 0, "devices.min_gap_s must be >= 0")
    _validate_wire(d)
    _need(c.engine in ("auto", "staged", "loop"), f"engine must be auto|staged|loop, got {c.engine!r}")
    _need(c.engine != "staged" or not d.any_v2, "engine = \"staged\" cannot run v2 devices (they need the loop)")
    _need(s.kind != "poisson" or not (c.engine == "loop" or d.any_v2),
          "devices.schedule.kind = \"poisson\" (raw frames, no records) runs on the staged engine only")
    ch = c.channel
    _need(ch.model in ("physical", "bernoulli", "gilbert"), f"channel.model must be physical|bernoulli|gilbert, got {ch.model!r}")
    for name in ("p", "p_gb", "p_bg", "loss_good", "loss_bad"):
        v = getattr(ch, name)
        _need(0.0 <= v <= 1.0, f"channel.{name} must be a probability 0..1, got {v}")
    _need(ch.shadowing_db >= 0, "channel.shadowing_db must be >= 0")
    g = c.gateways
    _need(isinstance(g.count, int) and g.count >= 1, "gateways.count must be an integer >= 1")
    _need(not g.positions or len(g.positions) == g.count, "gateways.positions must list one [x, y] per gateway")
    n = c.network
    _need(n.dedup_window_s >= 0, "network.dedup_window_s must be >= 0")
    _need(0 <= n.duplicate_p <= 1, "network.duplicate_p must be 0..1")
    for name in ("backhaul", "delivery", "duplicate_delay"):
        lat = getattr(n, name)
        _need(lat.base_s >= 0 and lat.jitter_s >= 0, f"network.{name}: base_s and jitter_s must be >= 0")
        _need(lat.dist in ("exponential", "uniform", "lognormal"),
              f"network.{name}.dist must be exponential|uniform|lognormal, got {lat.dist!r}")
    dl = n.downlinks
    _need(dl.rx1_delay_s >= 1.0, "network.downlinks.rx1_delay_s must be >= 1 (LoRaWAN RX1 delays are 1-15 s)")
    _need(dl.read_delay_s >= 0 and dl.push_latency_s >= 0, "network.downlinks delays must be >= 0")
    _need(0 <= dl.rx1_dr_offset <= 5, "network.downlinks.rx1_dr_offset must be 0..5")
    try:
        if dl.rx2_dr >= 0:
            reg.downlink_dr(dl.rx2_dr)
    except ValueError as e:
        raise ConfigError(f"network.downlinks.rx2_dr: {e}") from None
    for i, o in enumerate(n.outages):
        _need(0 <= o.gateway < g.count, f"network.outages[{i}].gateway {o.gateway} is not a gateway index 0..{g.count - 1}")
        _need(o.duration_s >= 0, f"network.outages[{i}].duration_s must be >= 0")


def _validate_wire(d: DevicesConfig) -> None:
    if d.groups:
        total = sum(g.count for g in d.groups)
        _need(total == d.count, f"devices.groups: the group counts add up to {total}, devices.count is {d.count}")
    items = [(f"devices.groups[{i}]", g) for i, g in enumerate(d.groups)] or [("devices", d.wire_of(0))]
    for where, g in items:
        _need(isinstance(g.count, int) and g.count >= 0, f"{where}.count must be an integer >= 0")
        _need(g.wire in ("v1", "v2"), f"{where}.wire must be v1|v2, got {g.wire!r}")
        ok = g.parity == "adaptive" or (isinstance(g.parity, int) and not isinstance(g.parity, bool)
                                        and 0 <= g.parity <= 32)
        _need(ok, f"{where}.parity must be 0..32 or \"adaptive\", got {g.parity!r}")
        _need(isinstance(g.polls, int) and g.polls >= 1, f"{where}.polls must be an integer >= 1")
        _need(isinstance(g.rounds, int) and g.rounds >= 0, f"{where}.rounds must be an integer >= 0")
        _need(g.poll_interval_s >= 0, f"{where}.poll_interval_s must be >= 0")
