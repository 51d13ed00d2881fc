"""The measurement report document (``docs/spec/xml-format.md`` §1), built with lxml.

Element order and number formats follow the spec to the byte; every attribute
value goes through lxml, never through string formatting of XML. Numbers are
formatted with integer arithmetic where a float could round wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from operator import itemgetter
from pathlib import Path

from lxml import etree

from collector.core.timefmt import format_ms, format_s
from collector.core.wire import (
    BLOCK_NAMES,
    FIX_NAMES,
    FLAG_NAMES,
    MISSING_SAMPLE,
    RESET_REASONS,
    UNIT_NAMES,
    Record,
)

NAMESPACE = "urn:lora-collector:measurement-report:1"
_NS = "{" + NAMESPACE + "}"
XSD_PATH = Path(__file__).with_name("schema") / "measurement-report-1.xsd"


@dataclass
class Transport:
    message_id: int
    fragments_expected: int
    fragments_received: int
    #: earliest / latest network-server receive time, Unix milliseconds
    first_received_ms: int
    last_received_ms: int
    missing_fragments: list[int] = field(default_factory=list)
    missing_blocks: list[str] = field(default_factory=list)


def fixed(value: int, decimals: int) -> str:
    """``value / 10**decimals`` with exactly ``decimals`` decimals, exact."""
    if decimals == 0:
        return str(value)
    # %-formatting with a * width: about half the time of a nested f-string spec
    if value < 0:
        q, r = divmod(-value, 10**decimals)
        return "-%d.%0*d" % (q, decimals, r)  # noqa: UP031
    q, r = divmod(value, 10**decimals)
    return "%d.%0*d" % (q, decimals, r)  # noqa: UP031


@cache
def _sample_formatter(exponent: int):
    if exponent >= 0:
        mult = 10**exponent
        return lambda raw: "NaN" if raw == MISSING_SAMPLE else str(raw * mult)
    return lambda raw: "NaN" if raw == MISSING_SAMPLE else fixed(raw, -exponent)


def format_sample(raw: int, exponent: int) -> str:
    """``raw × 10^exponent`` as xml-format.md prescribes; ``NaN`` for a missing sample."""
    return _sample_formatter(exponent)(raw)


@cache
def _sample_table(exponent: int) -> tuple[str, ...]:
    """Every int16 sample's text at ``exponent``, laid out so that ``table[raw]``
    works for negative ``raw`` too (Python's negative indexing)."""
    f = _sample_formatter(exponent)
    return tuple(f(raw) for raw in range(32768)) + tuple(f(raw) for raw in range(-32768, 0))


def format_samples(samples: list[int], exponent: int) -> str:
    """The text of a channel element: one table look-up per sample (the table is
    built once per exponent from :func:`format_sample`)."""
    table = _sample_table(exponent)
    if len(samples) < 2:  # itemgetter of one index returns the item, not a tuple
        return " ".join([table[raw] for raw in samples])
    return " ".join(itemgetter(*samples)(table))  # all look-ups in one C call


def unit_name(code: int) -> str:
    return UNIT_NAMES[code] if 0 <= code < len(UNIT_NAMES) else f"code-{code}"


#: byte -> itself when printable ASCII, else ``?`` (for :func:`site_label`)
_PRINTABLE = bytes(b if 0x20 <= b <= 0x7E else 0x3F for b in range(256))


def site_label(raw: bytes) -> str:
    """The label without its NUL padding, anything but printable ASCII as ``?``."""
    return raw.rstrip(b"\0").translate(_PRINTABLE).decode("ascii")


def idempotency_key(dev_eui: str, rec: Record) -> str:
    return f"{dev_eui.upper()}-{rec.device_serial}-{rec.record_seq}-{rec.start_time}"


# Built once: the tags, the namespace map, the flags text of each flags nibble and
# the block order (build_document runs once per message).
_NSMAP = {None: NAMESPACE}
(_ROOT, _DEVICE, _RECORD, _STATUS, _CHANNEL, _LOCATION, _DIAGNOSTICS, _CONFIG, _SITE, _TRANSPORT) = (
    _NS + name for name in ("measurementReport", "device", "record", "status", "channel", "location",
                            "diagnostics", "config", "site", "transport"))
_FLAGS_TEXT = tuple(" ".join([name for bit, name in enumerate(FLAG_NAMES) if nibble & (1 << bit)])
                    for nibble in range(16))
_BLOCK_ORDER = {name: i for i, name in enumerate(BLOCK_NAMES)}


def build_document(rec: Record, dev_eui: str, transport: Transport, complete: bool) -> bytes:
    """The UTF-8 document, XML declaration included."""
    root = etree.Element(_ROOT, {"schemaVersion": str(rec.schema_version),
                                 "complete": "true" if complete else "false"}, nsmap=_NSMAP)
    sub = etree.SubElement
    sub(root, _DEVICE, {"devEui": dev_eui.upper(), "serial": str(rec.device_serial),
                        "firmware": f"{rec.fw_major}.{rec.fw_minor}"})
    sub(root, _RECORD, {"sequence": str(rec.record_seq), "start": format_s(rec.start_time),
                        "intervalSeconds": str(rec.interval_s), "samplesPerChannel": str(rec.sample_count)})
    status = {"batteryMillivolts": str(rec.battery_mv), "internalTemperature": fixed(rec.temp_centi, 2)}
    if rec.flags & 0x0F:
        status["flags"] = _FLAGS_TEXT[rec.flags & 0x0F]
    sub(root, _STATUS, status)
    for i, ch in enumerate(rec.channels):
        sub(root, _CHANNEL, {"index": str(i), "unit": unit_name(ch.unit)}).text = format_samples(
            ch.samples, ch.exponent)
    if rec.location is not None:
        loc = rec.location
        sub(root, _LOCATION, {
            "latitude": fixed(loc.lat_e7, 7), "longitude": fixed(loc.lon_e7, 7), "altitudeMeters": str(loc.alt_m),
            "hdop": fixed(loc.hdop_dm, 1), "fix": FIX_NAMES[loc.fix] if loc.fix < len(FIX_NAMES) else f"code-{loc.fix}",
        })
    if rec.diagnostics is not None:
        d = rec.diagnostics
        sub(root, _DIAGNOSTICS, {
            "uptimeSeconds": str(d.uptime_s), "resetCount": str(d.reset_count),
            "resetReason": RESET_REASONS.get(d.reset_reason, f"code-{d.reset_reason}"),
            "txFailures": str(d.tx_failures), "lastDownlinkRssi": str(d.last_dl_rssi),
            "lastDownlinkSnr": fixed(d.last_dl_snr_q * 25, 2),
            "modemFirmware": f"{d.modem_fw_major}.{d.modem_fw_minor}", "freeStorageKilobytes": str(d.free_storage_kb),
        })
    if rec.config is not None:
        c = rec.config
        exp0 = rec.channels[0].exponent
        sub(root, _CONFIG, {
            "version": str(c.config_version), "uploadHour": str(c.upload_hour),
            "preferredDataRate": str(c.preferred_dr), "alarmLow": format_sample(c.alarm_low, exp0),
            "alarmHigh": format_sample(c.alarm_high, exp0),
        })
    if rec.site is not None:
        sub(root, _SITE, {"label": site_label(rec.site.label)})
    t = transport
    tr = {"messageId": str(t.message_id), "fragmentsExpected": str(t.fragments_expected),
          "fragmentsReceived": str(t.fragments_received), "firstReceived": format_ms(t.first_received_ms),
          "lastReceived": format_ms(t.last_received_ms)}
    if t.missing_fragments:
        tr["missingFragments"] = " ".join(map(str, t.missing_fragments))
    if t.missing_blocks:
        tr["missingBlocks"] = " ".join(sorted(t.missing_blocks, key=_BLOCK_ORDER.__getitem__))
    sub(root, _TRANSPORT, tr)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


@cache
def _schema() -> etree.XMLSchema:
    data = XSD_PATH.read_bytes()
    return etree.XMLSchema(etree.fromstring(data))


def xsd_validate(xml: bytes) -> list[str]:
    """Errors of ``xml`` against the shipped XSD; empty when the document is valid."""
    try:
        doc = etree.fromstring(xml, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as e:
        return [f"not well-formed XML: {e}"]
    schema = _schema()
    if schema.validate(doc):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]
