"""The network servers' MQTT integrations as plain data (sans-IO).

Topics, which device a topic names, the partition a device belongs to, and the
shape of a downlink over MQTT. The service (:mod:`collector.service.mqtt`) owns the
connection; this module only decides.

- ChirpStack v4 publishes every event of a device on
  ``application/{application_id}/device/{dev_eui}/event/{event}`` (JSON when the
  integration is set to JSON) and enqueues a downlink published as
  ``{"devEui", "confirmed", "fPort", "data"}`` on
  ``application/{application_id}/device/{dev_eui}/command/down``.
- The Things Stack publishes uplinks on ``v3/{application_id}@{tenant_id}/devices/{device_id}/up``
  (the webhook's uplink message) and takes ``{"downlinks": [...]}`` on
  ``v3/{application_id}@{tenant_id}/devices/{device_id}/down/push`` (or ``/down/replace``).
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass

INTEGRATIONS = ("chirpstack", "ttn")

#: the network servers' own uplink topics (what a collector subscribes to unless told)
DEFAULT_TOPICS = {
    "chirpstack": "application/+/device/+/event/up",
    "ttn": "v3/+/devices/+/up",
}


class TopicError(ValueError):
    """A topic that is not one of the integration's uplink topics."""


@dataclass(frozen=True, slots=True)
class UplinkTopic:
    """What an uplink topic names."""
    #: ChirpStack: the application id; The Things Stack: ``{application_id}@{tenant_id}``
    application: str
    #: ChirpStack: the DevEUI (lower-case hex); The Things Stack: the device id
    device: str
    #: the event: ``up`` for an uplink (ChirpStack also publishes join, ack, txack, log, status, ...)
    event: str


def parse_topic(integration: str, topic: str) -> UplinkTopic:
    """The application, device and event a topic of ``integration`` names (TopicError
    for any other topic)."""
    parts = topic.split("/")
    if integration == "chirpstack":
        if len(parts) == 6 and parts[0] == "application" and parts[2] == "device" and parts[4] == "event" \
                and parts[1] and parts[3] and parts[5]:
            return UplinkTopic(parts[1], parts[3], parts[5])
        raise TopicError(f"not a ChirpStack event topic (application/<id>/device/<devEui>/event/<event>): {topic!r}")
    if integration == "ttn":
        if len(parts) >= 5 and parts[0] == "v3" and parts[2] == "devices" and parts[1] and parts[3]:
            return UplinkTopic(parts[1], parts[3], "/".join(parts[4:]))
        raise TopicError(f"not a The Things Stack device topic (v3/<app>@<tenant>/devices/<device>/...): {topic!r}")
    raise ValueError(f"unknown MQTT integration {integration!r}; known: {', '.join(INTEGRATIONS)}")


# --------------------------------------------------------------------------- partitions


@dataclass(frozen=True, slots=True)
class Partition:
    """Collector ``index`` of ``count``: it takes the devices whose key hashes to it."""
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Partition:
        """``"i/n"`` (0 <= i < n); ``""`` is the whole fleet."""
        if not text:
            return cls()
        i, sep, n = text.partition("/")
        try:
            if not sep:
                raise ValueError
            p = cls(int(i), int(n))
        except ValueError:
            raise ValueError(f"mqtt_partition must be 'i/n' (e.g. 0/2), not {text!r}") from None
        if not 1 <= p.count <= 1024 or not 0 <= p.index < p.count:
            raise ValueError(f"mqtt_partition {text!r}: need 0 <= i < n <= 1024")
        return p

    def owns(self, device: str) -> bool:
        """Whether this collector takes the device named ``device`` in the topic
        (CRC-32 of its lower-cased text, modulo the count)."""
        return self.count == 1 or device_partition(device, self.count) == self.index


def device_partition(device: str, count: int) -> int:
    """The partition of a device (the topic's device level) among ``count``."""
    return zlib.crc32(device.lower().encode()) % count


# --------------------------------------------------------------------------- downlinks


def downlink(integration: str, application: str, device: str, dev_eui: str, fport: int, payload: bytes,
             replace: bool = False) -> tuple[str, dict]:
    """``(topic, JSON body)`` that hands ``payload`` to a device over the network
    server's MQTT integration. ChirpStack has no replace over MQTT: its queue takes
    the downlink after the ones already there."""
    data = base64.b64encode(payload).decode()
    if integration == "chirpstack":
        return (f"application/{application}/device/{device}/command/down",
                {"devEui": dev_eui.lower(), "confirmed": False, "fPort": fport, "data": data})
    if integration == "ttn":
        return (f"v3/{application}/devices/{device}/down/{'replace' if replace else 'push'}",
                {"downlinks": [{"f_port": fport, "frm_payload": data, "priority": "NORMAL"}]})
    raise ValueError(f"unknown MQTT integration {integration!r}; known: {', '.join(INTEGRATIONS)}")
