"""Service settings: defaults, then a TOML file, then ``COLLECTOR_*`` environment
variables, then command-line flags (each later source overrides the earlier).

Every field of :class:`ServiceConfig` is a TOML key of the same name (top level, or
inside the table of its group, :data:`TABLES`: ``[ingest]``, ``[reassembly]``,
``[delivery]``, ``[operations]``, ``[repair]``, ``[mqtt]``), an environment variable ``COLLECTOR_<NAME>``
(upper case) and a flag ``--<name-with-dashes>``. Lists are comma-separated in the
environment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.core.reassembly import Settings
from collector.core.repair import Policy
from collector.core.wire2 import FPORT_V2
from collector.service.outbound import header_problem, url_problem
from collector.tomlconfig import check_keys, read_toml
from collector.tomlconfig import table as tomltable

ENV_PREFIX = "COLLECTOR_"


@dataclass
class ServiceConfig:
    # ------------------------------------------------------------------ HTTP / ingest
    host: str = "127.0.0.1"
    port: int = 8080
    #: SQLite database file (created owner-only, 0600)
    db: str = "collector.db"
    #: tokens accepted on every ingest route
    ingest_token: list[str] = field(default_factory=list)
    #: tokens accepted only on /uplink/ttn, /uplink/chirpstack, /uplink
    ttn_token: list[str] = field(default_factory=list)
    chirpstack_token: list[str] = field(default_factory=list)
    generic_token: list[str] = field(default_factory=list)
    #: header that carries the ingest token; with ``Authorization`` the value is ``Bearer <token>``
    auth_header: str = "Authorization"
    #: serve without ingest authentication when no token is configured (logged loudly)
    allow_anonymous: bool = False
    #: token for the JSON APIs and /admin (default: any ingest token)
    api_token: list[str] = field(default_factory=list)
    #: request bodies above this many bytes are answered 413
    body_limit: int = 64 * 1024
    #: seconds a client gets to send a request body (408 and the connection closed after);
    #: also how long a connection may sit without a complete request (then it is closed)
    read_timeout: float = 60.0
    #: The Things Stack uplinks marked ``"simulated": true`` (sent from its console):
    #: ``ignore`` (202 ``ignored``, counted, not stored), ``reject`` (400) or ``accept``
    #: (stored as real data)
    simulated_uplinks: str = "ignore"
    #: connections held at most (0: what the file descriptor limit allows, less 128);
    #: over it the oldest connection not in a request is closed
    max_connections: int = 0
    #: writes waiting for the store above which ingest is answered 503
    max_pending_writes: int = 20_000
    #: most requests committed in one transaction
    commit_batch: int = 1000
    #: HTTP worker processes in front of the process that owns the state (0: one
    #: process does everything); see docs/operations.md, "Workers"
    workers: int = 0
    # ------------------------------------------------------------------ MQTT ingest (docs/operations.md, "MQTT")
    #: broker to subscribe to, ``mqtt://user:password@host:port`` or ``mqtts://...`` (empty: none)
    mqtt_url: str = ""
    #: ``chirpstack`` or ``ttn``: the topics' and payloads' shape
    mqtt_integration: str = "chirpstack"
    #: topic filters (default: the integration's uplink topic)
    mqtt_topic: list[str] = field(default_factory=list)
    #: the persistent session's client id (default: derived from the host name and the database path)
    mqtt_client_id: str = ""
    #: subscribe as a member of this MQTT 5 shared-subscription group (``$share/<group>/<topic>``)
    mqtt_share: str = ""
    #: ``i/n``: take only the devices whose topic hashes to partition i of n
    mqtt_partition: str = ""
    #: seconds the broker keeps the session (and queues QoS 1 uplinks) while the collector is away
    mqtt_session_expiry: int = 7 * 24 * 3600
    mqtt_keepalive: int = 30
    #: QoS 1 messages the broker may have in flight to the collector, unacknowledged
    mqtt_inflight: int = 1000
    #: CA certificates for mqtts:// (default: the system's)
    mqtt_ca_file: str = ""
    #: ``5`` or ``3.1.1`` (The Things Stack's MQTT server speaks 3.1.1)
    mqtt_protocol: str = "5"
    # ------------------------------------------------------------------ reassembly
    # (defaults and meaning: collector.core.reassembly.Settings, the one place they live)
    message_timeout: float = Settings.message_timeout
    deadline_policy: str = Settings.deadline_policy
    default_region: str = Settings.default_region
    duplicate_window: float = Settings.duplicate_window
    max_open_per_device: int = Settings.max_open_per_device
    max_open_total: int = Settings.max_open_total
    fport: int = Settings.fport
    repair_hold: float = Settings.repair_hold
    # ------------------------------------------------------------------ delivery
    webapp_url: str = ""
    webapp_token: str = ""
    upload_path: str = "/api/measurements/upload/"
    webapp_username: str = ""
    webapp_password: str = ""
    login_path: str = "/api/auth/login/"
    #: seconds a document is retried before it is dead-lettered (7 days)
    max_age: float = 7 * 24 * 3600.0
    delivery_concurrency: int = 4
    backoff_base: float = 2.0
    backoff_cap: float = 3600.0
    request_timeout: float = 30.0
    #: longest wait a ``Retry-After`` (429, 503) can impose, seconds; a longer one is
    #: cut to this (a year, or a date in 2100, would otherwise stop delivery)
    max_retry_after: float = 3600.0
    #: consecutive retryable failures that open the circuit
    circuit_threshold: int = 5
    #: seconds the circuit stays open before one probe request
    circuit_reset: float = 30.0
    #: seed of the jitter stream
    seed: int = 0
    # ------------------------------------------------------------------ repair (wire format v2)
    # (docs/repair.md, "The collector"; docs/operations.md, "Repair and downlinks")
    #: ChirpStack v4 REST API base URL, for downlinks to devices heard through ChirpStack
    chirpstack_api_url: str = ""
    chirpstack_api_token: str = ""
    #: ``Authorization`` or ``Grpc-Metadata-Authorization`` (its REST proxy's header)
    chirpstack_auth_header: str = "Authorization"
    #: where downlinks to devices heard on /uplink (the collector's own format) go
    downlink_url: str = ""
    downlink_token: str = ""
    #: predicted first-round rebuild the redundancy policy keeps (and one NEED round)
    repair_target: float = 0.99
    #: steer each device's parity with REDUNDANCY
    repair_adaptive: bool = True
    repair_min_parity: int = 0
    repair_max_parity: int = 32
    #: ACK a message as soon as it is rebuilt, not only when polled
    repair_ack_on_rebuild: bool = True
    #: repeat a NEED the device evidently did not hear at most this many times a message
    repair_need_repeats: int = 8
    #: repeat an ACK the device evidently did not hear (it still sends rows of the
    #: message) at most this many times a message; 0 = never (docs/repair.md)
    repair_ack_repeats: int = 3
    downlink_timeout: float = 10.0
    downlink_backoff_base: float = 5.0
    downlink_backoff_cap: float = 300.0
    #: seconds a downlink the network server does not take is retried before it is dropped
    downlink_expiry: float = 3600.0
    # ------------------------------------------------------------------ store / operations
    #: delivered documents and fragments older than this (seconds) are pruned
    retention: float = 30 * 24 * 3600.0
    prune_interval: float = 3600.0
    #: device registry file (TOML or CSV) imported at start
    devices_file: str = ""
    #: ``system`` or ``manual`` (virtual time driven by POST /admin/clock)
    clock: str = "system"
    #: start of the manual clock, Unix seconds (default: the wall time at start)
    clock_start: float | None = None
    log_level: str = "INFO"
    #: seconds to wait for in-flight requests on shutdown
    shutdown_timeout: float = 10.0

    def reassembly_settings(self) -> Settings:
        """The reassembler's settings: every field of :class:`Settings` this config has."""
        return Settings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Settings)
                           if f.name in FIELDS})

    def validate(self) -> None:
        if self.deadline_policy not in ("fixed", "adaptive"):
            raise ValueError(f"deadline_policy must be 'fixed' or 'adaptive', not {self.deadline_policy!r}")
        if self.clock not in ("system", "manual"):
            raise ValueError(f"clock must be 'system' or 'manual', not {self.clock!r}")
        if self.message_timeout <= 0:
            raise ValueError("message_timeout must be positive")
        if self.repair_hold < 0:
            raise ValueError("repair_hold must not be negative")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} outside 0..65535")
        if self.fport == FPORT_V2:
            raise ValueError(f"fport {self.fport} is wire format v2's port; v1 fragments need another")
        if self.read_timeout <= 0:
            raise ValueError("read_timeout must be positive")
        if self.body_limit < 1024:
            raise ValueError("body_limit must be at least 1024 bytes")
        if not 0 <= self.workers <= 64:
            raise ValueError(f"workers must be 0..64, not {self.workers}")
        if self.delivery_concurrency < 1:
            raise ValueError("delivery_concurrency must be at least 1")
        if self.webapp_url:
            problem = (url_problem(self.webapp_url)
                       or url_problem(self.webapp_url.rstrip("/") + self.upload_path, "webapp_url + upload_path")
                       or url_problem(self.webapp_url.rstrip("/") + self.login_path, "webapp_url + login_path")
                       or header_problem(self.webapp_token, "webapp_token"))
            if problem:
                raise ValueError(problem)
        if self.simulated_uplinks not in ("ignore", "reject", "accept"):
            raise ValueError(f"simulated_uplinks must be 'ignore', 'reject' or 'accept', not {self.simulated_uplinks!r}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
        if not 1 <= self.fport <= 223:
            raise ValueError(f"fport must be an application port 1..223, not {self.fport}")
        for name in TOKEN_LISTS:
            if any(not t.strip() for t in getattr(self, name)):
                raise ValueError(f"{name}: an empty token is not allowed (it would match nothing, or anything)")
        if self.max_connections < 0:
            raise ValueError("max_connections must be 0 (from the file descriptor limit) or positive")
        if self.max_retry_after <= 0:
            raise ValueError("max_retry_after must be positive")
        try:
            self.reassembly_settings()
        except ValueError as e:  # default_region and the other reassembly settings
            raise ValueError(str(e)) from None
        for name in ("chirpstack_api_url", "downlink_url"):
            if getattr(self, name) and not getattr(self, name).startswith(("http://", "https://")):
                raise ValueError(f"{name} {getattr(self, name)!r} must start with http:// or https://")
        if self.chirpstack_auth_header not in ("Authorization", "Grpc-Metadata-Authorization"):
            raise ValueError("chirpstack_auth_header must be 'Authorization' or 'Grpc-Metadata-Authorization'")
        if not 0.0 < self.repair_target < 1.0:
            raise ValueError(f"repair_target must be between 0 and 1 (exclusive), not {self.repair_target}")
        if not 0 <= self.repair_min_parity <= self.repair_max_parity <= 32:
            raise ValueError("need 0 <= repair_min_parity <= repair_max_parity <= 32")
        if not 0 <= self.repair_need_repeats <= 255 or not 0 <= self.repair_ack_repeats <= 255:
            raise ValueError("repair_need_repeats and repair_ack_repeats must be 0..255")
        for name in ("downlink_timeout", "downlink_backoff_base", "downlink_backoff_cap", "downlink_expiry"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.mqtt_url:
            from collector.service.mqtt_config import validate_mqtt
            validate_mqtt(self)

    def repair_policy(self) -> Policy:
        """The repair and redundancy policy (:class:`collector.core.repair.Policy`)."""
        return Policy(target=self.repair_target, lower_target=1 - (1 - self.repair_target) / 2,
                      min_r=self.repair_min_parity, max_r=self.repair_max_parity, adaptive=self.repair_adaptive,
                      ack_on_rebuild=self.repair_ack_on_rebuild, repeats=self.repair_need_repeats,
                      ack_repeats=self.repair_ack_repeats)

    @property
    def any_ingest_token(self) -> bool:
        return bool(self.ingest_token or self.ttn_token or self.chirpstack_token or self.generic_token)

    def redacted(self) -> dict[str, Any]:
        """The settings with every secret replaced by ``***`` (for logs and status)."""
        d = dataclasses.asdict(self)
        for k in SECRETS:
            if d.get(k):
                d[k] = "***" if isinstance(d[k], str) else ["***"] * len(d[k])
        d["webapp_url"] = redact_url(self.webapp_url)
        return d

    @property
    def shared_api_tokens(self) -> bool:
        """Whether an API token is also accepted on an ingest route."""
        ingest = {*self.ingest_token, *self.ttn_token, *self.chirpstack_token, *self.generic_token}
        return bool(ingest.intersection(self.api_token))


def redact_url(url: str) -> str:
    """``url`` with the user information (``user:password@``) replaced by ``***@``."""
    from urllib.parse import urlsplit, urlunsplit
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TOKEN_LISTS = ("ingest_token", "ttn_token", "chirpstack_token", "generic_token", "api_token")
#: ``COLLECTOR_*`` variables read elsewhere (not settings of the service)
OTHER_ENV = frozenset({"COLLECTOR_CONFIG", "COLLECTOR_DEVICE_TOKEN"})
SECRETS = ("ingest_token", "ttn_token", "chirpstack_token", "generic_token", "api_token",
           "webapp_token", "webapp_password", "chirpstack_api_token", "downlink_token", "mqtt_url")
FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(ServiceConfig)}


def _convert(name: str, value: Any) -> Any:
    """Coerce ``value`` (from TOML, the environment or a flag) to field ``name``'s type."""
    f = FIELDS[name]
    typ = str(f.type)
    try:
        if typ.startswith("list"):
            if isinstance(value, str):
                items = [v.strip() for v in value.split(",")]
                # an empty token is refused by validate(), however it was given
                return items if name in TOKEN_LISTS else [v for v in items if v]
            if isinstance(value, list | tuple):
                return [str(v) for v in value]
            raise TypeError
        if value is None:
            if "None" in typ:
                return None
            raise TypeError
        if typ.startswith("bool"):
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if typ.startswith("int"):
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if typ.startswith("float"):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {name}: {value!r} is not a valid {typ}") from None


#: the tables of the config file and the settings each may hold; any setting may also
#: sit at the top level. A setting no table lists is accepted in any of them.
TABLES: dict[str, tuple[str, ...]] = {
    "ingest": ("host", "port", "db", "ingest_token", "ttn_token", "chirpstack_token", "generic_token",
               "auth_header", "allow_anonymous", "api_token", "body_limit", "read_timeout",
               "max_pending_writes", "commit_batch", "workers"),
    "reassembly": ("message_timeout", "deadline_policy", "default_region", "duplicate_window",
                   "max_open_per_device", "max_open_total", "fport", "repair_hold"),
    "delivery": ("webapp_url", "webapp_token", "upload_path", "webapp_username", "webapp_password", "login_path",
                 "max_age", "delivery_concurrency", "backoff_base", "backoff_cap", "request_timeout",
                 "circuit_threshold", "circuit_reset", "seed"),
    "operations": ("retention", "prune_interval", "devices_file", "clock", "clock_start", "log_level",
                   "shutdown_timeout"),
    "repair": ("chirpstack_api_url", "chirpstack_api_token", "chirpstack_auth_header", "downlink_url",
               "downlink_token", "repair_target", "repair_adaptive", "repair_min_parity", "repair_max_parity",
               "repair_ack_on_rebuild", "repair_need_repeats", "repair_ack_repeats", "downlink_timeout",
               "downlink_backoff_base", "downlink_backoff_cap",
               "downlink_expiry"),
    "mqtt": ("mqtt_url", "mqtt_integration", "mqtt_topic", "mqtt_client_id", "mqtt_share", "mqtt_partition",
             "mqtt_session_expiry", "mqtt_keepalive", "mqtt_inflight", "mqtt_ca_file", "mqtt_protocol"),
}
_DOC = "see docs/operations.md"


def _flatten(doc: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The settings of a config file: top-level keys, and those of its known tables
    (each only the settings it holds); anything else is a :class:`ConfigError`."""
    unassigned = set(FIELDS) - {k for keys in TABLES.values() for k in keys}
    top = {k.replace("-", "_"): v for k, v in doc.items()}
    check_keys(top, FIELDS, TABLES, where=source, known=_DOC, noun="setting")
    out: dict[str, Any] = {}
    for k, v in top.items():
        if k not in TABLES:
            out[k] = v
            continue
        table = {kk.replace("-", "_"): vv for kk, vv in tomltable(top, k, source).items()}
        check_keys(table, set(TABLES[k]) | unassigned, where=f"{source}, [{k}]",
                   known=f"{', '.join(TABLES[k])} ({_DOC})", noun="setting")
        out.update(table)
    return out


def load_config(
    path: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServiceConfig:
    """Build the settings: defaults < TOML file ``path`` < ``env`` (``COLLECTOR_*``) <
    ``overrides`` (flags; ``None`` values mean "not given"). Raises ValueError naming
    the bad setting."""
    values: dict[str, Any] = {}
    if path:
        source = f"config file {str(path)!r}"
        values.update({k: _convert(k, v) for k, v in _flatten(read_toml(path), source).items()})
    env = os.environ if env is None else env
    for name in FIELDS:
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name] = _convert(name, env[key])
    for name, v in (overrides or {}).items():
        if v is None or (isinstance(v, tuple | list) and not v):
            continue
        if name not in FIELDS:
            raise ValueError(f"unknown setting {name!r}")
        values[name] = _convert(name, v)
    cfg = ServiceConfig(**values)
    cfg.validate()
    return cfg


def unknown_env(env: Mapping[str, str] | None = None) -> list[str]:
    """``COLLECTOR_*`` variables that name no setting (a typo would otherwise be
    ignored silently); ``collector serve`` warns about each."""
    env = os.environ if env is None else env
    known = {ENV_PREFIX + name.upper() for name in FIELDS} | OTHER_ENV
    return sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
