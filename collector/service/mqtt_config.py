"""The MQTT settings read once: the broker URL taken apart, the topic filters, the
session's client id. Validation errors name the setting; the password never
appears in one (nor in a log line: :func:`public_url`)."""

from __future__ import annotations

import os
import socket
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from collector.core.mqtt import DEFAULT_TOPICS, INTEGRATIONS, Partition

PROTOCOLS = ("5", "3.1.1")


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    integration: str
    #: the filters as subscribed (``$share/<group>/...`` for a shared subscription)
    filters: tuple[str, ...]
    partition: Partition
    client_id: str
    protocol: str
    session_expiry: int
    keepalive: int
    inflight: int
    ca_file: str | None

    @property
    def public_url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def public_url(url: str) -> str:
    """The broker URL without user name and password (for logs and status)."""
    try:
        u = urlsplit(url)
        return f"{u.scheme}://{u.hostname or ''}:{u.port or ''}"
    except ValueError:
        return "<invalid URL>"


def mqtt_settings(cfg: Any) -> MqttSettings:
    """The MQTT settings of a :class:`~collector.service.config.ServiceConfig` with
    ``mqtt_url`` set; ValueError naming the bad setting."""
    try:
        u = urlsplit(cfg.mqtt_url)
        port = u.port
    except ValueError:
        raise ValueError(f"mqtt_url {public_url(cfg.mqtt_url)!r} is not a valid URL") from None
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ValueError(f"mqtt_url must look like mqtt://user:password@host:port or mqtts://..., "
                         f"not {public_url(cfg.mqtt_url)!r}")
    if u.path not in ("", "/") or u.query or u.fragment:
        raise ValueError("mqtt_url takes no path or query: set topics with mqtt_topic")
    if cfg.mqtt_integration not in INTEGRATIONS:
        raise ValueError(f"mqtt_integration must be one of {', '.join(INTEGRATIONS)}, not {cfg.mqtt_integration!r}")
    if cfg.mqtt_protocol not in PROTOCOLS:
        raise ValueError(f"mqtt_protocol must be one of {', '.join(PROTOCOLS)}, not {cfg.mqtt_protocol!r}")
    partition = Partition.parse(cfg.mqtt_partition)
    share = cfg.mqtt_share
    if share:
        if any(c in share for c in "/+#") or not share.strip():
            raise ValueError(f"mqtt_share {share!r}: a group name must not contain '/', '+' or '#'")
        if partition.count > 1:
            raise ValueError("mqtt_share and mqtt_partition exclude each other: a shared subscription hands "
                             "each message to one member of the group, so a collector filtering by partition "
                             "would drop the devices of the other partitions (docs/operations.md, MQTT)")
        if cfg.mqtt_protocol != "5":
            raise ValueError("mqtt_share needs mqtt_protocol 5 (shared subscriptions are MQTT 5)")
    topics = list(cfg.mqtt_topic) or [DEFAULT_TOPICS[cfg.mqtt_integration]]
    for t in topics:
        if not t or t.startswith("$share/") or "#" in t[:-1] or len(t.encode()) > 65535:
            raise ValueError(f"mqtt_topic {t!r} is not a topic filter (for a shared subscription set mqtt_share)")
    filters = tuple(f"$share/{share}/{t}" if share else t for t in topics)
    if not 0 < cfg.mqtt_session_expiry <= 0xFFFFFFFF:
        raise ValueError("mqtt_session_expiry must be 1..4294967295 seconds")
    if not 5 <= cfg.mqtt_keepalive <= 65535:
        raise ValueError("mqtt_keepalive must be 5..65535 seconds")
    if not 1 <= cfg.mqtt_inflight <= 65535:
        raise ValueError("mqtt_inflight must be 1..65535")
    if cfg.mqtt_ca_file and not os.path.isfile(cfg.mqtt_ca_file):
        raise ValueError(f"mqtt_ca_file {cfg.mqtt_ca_file!r} does not exist")
    tls = u.scheme == "mqtts"
    return MqttSettings(
        host=u.hostname, port=port or (8883 if tls else 1883), tls=tls,
        username=unquote(u.username) if u.username is not None else None,
        password=unquote(u.password) if u.password is not None else None,
        integration=cfg.mqtt_integration, filters=filters, partition=partition,
        client_id=cfg.mqtt_client_id or default_client_id(cfg.db),
        protocol=cfg.mqtt_protocol, session_expiry=cfg.mqtt_session_expiry, keepalive=cfg.mqtt_keepalive,
        inflight=cfg.mqtt_inflight, ca_file=cfg.mqtt_ca_file or None)


def default_client_id(db: str) -> str:
    """A client id that stays the same across restarts of the collector on this
    host with this database (the broker's session is bound to it) and differs
    between two collectors with their own stores."""
    where = zlib.crc32(os.path.abspath(db).encode())
    return f"lora-collector-{socket.gethostname()[:40]}-{where:08x}"


def validate_mqtt(cfg: Any) -> None:
    mqtt_settings(cfg)
