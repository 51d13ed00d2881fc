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


# Built once (build_document runs once per message): the namespace map, the tags, the
# flags text of each flags nibble, the name of every unit, fix and reset code (one-byte
# fields of the record) and the block order. Tags and attribute names are bytes: lxml
# takes bytes without encoding and re-checking them, which is a tenth of the document's
# cost with some 45 attributes a document.
_NSMAP = {None: NAMESPACE}
_ROOT = _NS + "measurementReport"
#: The children are made without a namespace: under the root, which declares the
#: report's namespace as the default, libxml2 writes them exactly as namespaced children
#: (the bytes are the same; ``tests/collector/test_xmldoc.py`` checks it against a tree
#: built with every tag namespaced) and lxml skips the namespace look-up of each one.
#: The tree never leaves :func:`build_document`: only its bytes do.
(_DEVICE, _RECORD, _STATUS, _CHANNEL, _LOCATION, _DIAGNOSTICS, _CONFIG, _SITE, _TRANSPORT) = (
    b"device", b"record", b"status", b"channel", b"location", b"diagnostics", b"config", b"site", b"transport")
_FLAGS_TEXT = tuple(" ".join([name for bit, name in enumerate(FLAG_NAMES) if nibble & (1 << bit)])
                    for nibble in range(16))
_UNIT_TEXT = tuple(unit_name(code) for code in range(256))
_FIX_TEXT = tuple(FIX_NAMES[code] if code < len(FIX_NAMES) else f"code-{code}" for code in range(256))
_RESET_TEXT = tuple(RESET_REASONS.get(code, f"code-{code}") for code in range(256))
_BLOCK_ORDER = {name: i for i, name in enumerate(BLOCK_NAMES)}


def build_document(rec: Record, dev_eui: str, transport: Transport, complete: bool) -> bytes:
    """The UTF-8 document, XML declaration included."""
    root = etree.Element(_ROOT, {b"schemaVersion": str(rec.schema_version),
                                 b"complete": "true" if complete else "false"}, nsmap=_NSMAP)
    sub = etree.SubElement
    sub(root, _DEVICE, {b"devEui": dev_eui.upper(), b"serial": str(rec.device_serial),
                        b"firmware": f"{rec.fw_major}.{rec.fw_minor}"})
    sub(root, _RECORD, {b"sequence": str(rec.record_seq), b"start": format_s(rec.start_time),
                        b"intervalSeconds": str(rec.interval_s), b"samplesPerChannel": str(rec.sample_count)})
    status = {b"batteryMillivolts": str(rec.battery_mv), b"internalTemperature": fixed(rec.temp_centi, 2)}
    if rec.flags & 0x0F:
        status[b"flags"] = _FLAGS_TEXT[rec.flags & 0x0F]
    sub(root, _STATUS, status)
    for i, ch in enumerate(rec.channels):
        sub(root, _CHANNEL, {b"index": str(i), b"unit": _UNIT_TEXT[ch.unit]}).text = format_samples(
            ch.samples, ch.exponent)
    if rec.location is not None:
        loc = rec.location
        sub(root, _LOCATION, {
            b"latitude": fixed(loc.lat_e7, 7), b"longitude": fixed(loc.lon_e7, 7), b"altitudeMeters": str(loc.alt_m),
            b"hdop": fixed(loc.hdop_dm, 1), b"fix": _FIX_TEXT[loc.fix],
        })
    if rec.diagnostics is not None:
        d = rec.diagnostics
        sub(root, _DIAGNOSTICS, {
            b"uptimeSeconds": str(d.uptime_s), b"resetCount": str(d.reset_count),
            b"resetReason": _RESET_TEXT[d.reset_reason],
            b"txFailures": str(d.tx_failures), b"lastDownlinkRssi": str(d.last_dl_rssi),
            b"lastDownlinkSnr": fixed(d.last_dl_snr_q * 25, 2),
            b"modemFirmware": f"{d.modem_fw_major}.{d.modem_fw_minor}", b"freeStorageKilobytes": str(d.free_storage_kb),
        })
    if rec.config is not None:
        c = rec.config
        alarm = _sample_table(rec.channels[0].exponent)
        sub(root, _CONFIG, {
            b"version": str(c.config_version), b"uploadHour": str(c.upload_hour),
            b"preferredDataRate": str(c.preferred_dr), b"alarmLow": alarm[c.alarm_low],
            b"alarmHigh": alarm[c.alarm_high],
        })
    if rec.site is not None:
        sub(root, _SITE, {b"label": site_label(rec.site.label)})
    t = transport
    tr = {b"messageId": str(t.message_id), b"fragmentsExpected": str(t.fragments_expected),
          b"fragmentsReceived": str(t.fragments_received), b"firstReceived": format_ms(t.first_received_ms),
          b"lastReceived": format_ms(t.last_received_ms)}
    if t.missing_fragments:
        tr[b"missingFragments"] = " ".join(map(str, t.missing_fragments))
    if t.missing_blocks:
        tr[b"missingBlocks"] = " ".join(sorted(t.missing_blocks, key=_BLOCK_ORDER.__getitem__))
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
