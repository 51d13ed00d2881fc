"""The document (xml-format.md §1): exact bytes, number formats, XSD."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from collector.core import wire, xmldoc
from collector.core.timefmt import format_ms, format_s, parse_ms
from collector.testing.examples import example_record

from .conftest import records, u8, u16

SPEC_EXAMPLE = Path(__file__).parent / "golden" / "spec-example.xml"


def spec_example_record() -> wire.Record:
    return wire.Record(
        device_serial=1234567, record_seq=4711, start_time=1795478400, interval_s=600,
        channels=[wire.Channel(1, -2, [2137, 2140, -32768, 2152]), wire.Channel(2, -1, [551, 550, 548, 549])],
        flags=0b0011, fw_major=2, fw_minor=7, battery_mv=3612, temp_centi=2137,
        location=wire.Location(525200066, 134049540, 34, 9, 2),
        diagnostics=wire.Diagnostics(86400, 2, 1, 3, -90, 28, 1, 0, 100),
        config=wire.Config(1, 6, 3, -100, 100),
        site=wire.Site(b"PUMP-7".ljust(16, b"\0")),
    )


def test_the_spec_example_byte_for_byte():
    t = xmldoc.Transport(17, 3, 3, parse_ms("2026-11-24T06:00:01.120Z"), parse_ms("2026-11-24T06:04:12.532Z"))
    xml = xmldoc.build_document(spec_example_record(), "70b3d57ed005a1b2", t, complete=True)
    assert xml == SPEC_EXAMPLE.read_bytes()
    assert xmldoc.xsd_validate(xml) == []


@pytest.mark.parametrize(
    "raw,exp,text",
    [(2137, -2, "21.37"), (-5, -2, "-0.05"), (12, 2, "1200"), (0, -3, "0.000"), (-32768, -1, "NaN"),
     (-32767, -6, "-0.032767"), (32767, 0, "32767"), (-1, 6, "-1000000"), (5, -1, "0.5")],
)
def test_sample_formats(raw, exp, text):
    assert xmldoc.format_sample(raw, exp) == text


def test_fixed_point_helpers():
    assert xmldoc.fixed(-1, 2) == "-0.01"
    assert xmldoc.fixed(525200066, 7) == "52.5200066"
    assert xmldoc.fixed(-1234567, 7) == "-0.1234567"
    assert xmldoc.site_label(b"A\x01B\xffC\0\0") == "A?B?C"
    assert xmldoc.site_label(b"x\0y\0\0") == "x?y"


def test_flags_left_out_when_none_set_and_unknown_codes_written_as_code_n():
    rec = example_record(samples=2)
    rec.flags = 0xF0  # reserved bits only
    rec.channels[0].unit = 42
    rec.diagnostics.reset_reason = 9
    rec.location.fix = 7
    xml = xmldoc.build_document(rec, "70B3D57ED005A1B2", xmldoc.Transport(1, 1, 1, 0, 0), True).decode()
    assert "flags=" not in xml
    assert 'unit="code-42"' in xml and 'resetReason="code-9"' in xml and 'fix="code-7"' in xml
    assert xmldoc.xsd_validate(xml.encode()) == []


def test_partial_transport_attributes():
    t = xmldoc.Transport(3, 14, 12, 1000, 2000, missing_fragments=[13, 4], missing_blocks=["site", "config"])
    rec = example_record(samples=2)
    rec.config = rec.site = None
    xml = xmldoc.build_document(rec, "70B3D57ED005A1B2", t, complete=False).decode()
    assert 'complete="false"' in xml
    assert 'missingFragments="13 4"' in xml  # as given: the caller sorts
    assert 'missingBlocks="config site"' in xml
    assert xmldoc.xsd_validate(xml.encode()) == []


def test_site_label_is_escaped_by_the_library():
    rec = example_record(samples=2)
    rec.site = wire.Site(b'<a href="&">\'x'.ljust(16, b"\0"))
    xml = xmldoc.build_document(rec, "70B3D57ED005A1B2", xmldoc.Transport(1, 1, 1, 0, 0), True)
    assert b'label="&lt;a href=&quot;&amp;&quot;&gt;\'x"' in xml
    assert xmldoc.xsd_validate(xml) == []


@given(records())
def test_every_valid_record_gives_a_valid_document(rec):
    xml = xmldoc.build_document(rec, "0123456789ABCDEF", xmldoc.Transport(255, 9, 9, 0, 10**12), True)
    assert xmldoc.xsd_validate(xml) == []
    text = xml.decode()
    assert len(re.findall("<channel ", text)) == len(rec.channels)


def test_xsd_rejects_a_wrong_document():
    bad = SPEC_EXAMPLE.read_bytes().replace(b'complete="true"', b'complete="maybe"')
    assert xmldoc.xsd_validate(bad)
    assert xmldoc.xsd_validate(b"<not-closed")


def test_fast_sample_formatting_equals_integer_arithmetic_for_every_raw_value():
    raws = list(range(-32768, 32768))
    for exp in range(-6, 7):
        assert xmldoc.format_samples(raws, exp).split(" ") == [xmldoc.format_sample(v, exp) for v in raws]


def reference_document(rec: wire.Record, dev_eui: str, t: xmldoc.Transport, complete: bool) -> bytes:
    """xml-format.md §1 the plain way: every element namespaced, every value through the
    one-value helpers. The reference :func:`xmldoc.build_document` (built for speed: tag
    and name tables, children without a namespace of their own) must equal byte for byte."""
    ns = "{" + xmldoc.NAMESPACE + "}"
    root = etree.Element(ns + "measurementReport", {"schemaVersion": str(rec.schema_version),
                                                    "complete": "true" if complete else "false"},
                         nsmap={None: xmldoc.NAMESPACE})

    def sub(tag: str, attrib: dict) -> etree._Element:
        return etree.SubElement(root, ns + tag, attrib)

    sub("device", {"devEui": dev_eui.upper(), "serial": str(rec.device_serial),
                   "firmware": f"{rec.fw_major}.{rec.fw_minor}"})
    sub("record", {"sequence": str(rec.record_seq), "start": format_s(rec.start_time),
                   "intervalSeconds": str(rec.interval_s), "samplesPerChannel": str(rec.sample_count)})
    status = {"batteryMillivolts": str(rec.battery_mv), "internalTemperature": xmldoc.fixed(rec.temp_centi, 2)}
    if rec.flags & 0x0F:
        status["flags"] = " ".join(n for bit, n in enumerate(wire.FLAG_NAMES) if rec.flags & (1 << bit))
    sub("status", status)
    for i, ch in enumerate(rec.channels):
        sub("channel", {"index": str(i), "unit": xmldoc.unit_name(ch.unit)}).text = " ".join(
            xmldoc.format_sample(v, ch.exponent) for v in ch.samples)
    if (loc := rec.location) is not None:
        sub("location", {"latitude": xmldoc.fixed(loc.lat_e7, 7), "longitude": xmldoc.fixed(loc.lon_e7, 7),
                         "altitudeMeters": str(loc.alt_m), "hdop": xmldoc.fixed(loc.hdop_dm, 1),
                         "fix": wire.FIX_NAMES[loc.fix] if loc.fix < len(wire.FIX_NAMES) else f"code-{loc.fix}"})
    if (d := rec.diagnostics) is not None:
        sub("diagnostics", {
            "uptimeSeconds": str(d.uptime_s), "resetCount": str(d.reset_count),
            "resetReason": wire.RESET_REASONS.get(d.reset_reason, f"code-{d.reset_reason}"),
            "txFailures": str(d.tx_failures), "lastDownlinkRssi": str(d.last_dl_rssi),
            "lastDownlinkSnr": xmldoc.fixed(d.last_dl_snr_q * 25, 2),
            "modemFirmware": f"{d.modem_fw_major}.{d.modem_fw_minor}", "freeStorageKilobytes": str(d.free_storage_kb)})
    if (c := rec.config) is not None:
        exp0 = rec.channels[0].exponent
        sub("config", {"version": str(c.config_version), "uploadHour": str(c.upload_hour),
                       "preferredDataRate": str(c.preferred_dr), "alarmLow": xmldoc.format_sample(c.alarm_low, exp0),
                       "alarmHigh": xmldoc.format_sample(c.alarm_high, exp0)})
    if rec.site is not None:
        sub("site", {"label": xmldoc.site_label(rec.site.label)})
    tr = {"messageId": str(t.message_id), "fragmentsExpected": str(t.fragments_expected),
          "fragmentsReceived": str(t.fragments_received), "firstReceived": format_ms(t.first_received_ms),
          "lastReceived": format_ms(t.last_received_ms)}
    if t.missing_fragments:
        tr["missingFragments"] = " ".join(map(str, t.missing_fragments))
    if t.missing_blocks:
        tr["missingBlocks"] = " ".join(n for n in wire.BLOCK_NAMES if n in t.missing_blocks)
    sub("transport", tr)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def test_the_reference_builder_gives_the_spec_example():
    t = xmldoc.Transport(17, 3, 3, parse_ms("2026-11-24T06:00:01.120Z"), parse_ms("2026-11-24T06:04:12.532Z"))
    assert reference_document(spec_example_record(), "70b3d57ed005a1b2", t, True) == SPEC_EXAMPLE.read_bytes()


ms = st.integers(0, 4_102_444_800_000)  # 1970 to 2100


@st.composite
def transports(draw) -> xmldoc.Transport:
    expected = draw(st.integers(1, 255))
    return xmldoc.Transport(
        draw(u8), expected, draw(st.integers(0, expected)), draw(ms), draw(ms),
        draw(st.lists(st.integers(0, expected - 1), unique=True, max_size=8)),
        draw(st.lists(st.sampled_from(wire.BLOCK_NAMES), unique=True)))


@st.composite
def odd_records(draw) -> wire.Record:
    """Records with codes the spec names and codes it does not (written ``code-N``)."""
    rec = draw(records(max_samples=12))
    for ch in rec.channels:
        ch.unit = draw(u8)
    if rec.location is not None:
        rec.location.fix = draw(st.sampled_from([0, 1, 2, 3, 255]))
    if rec.diagnostics is not None:
        rec.diagnostics.reset_reason = draw(st.sampled_from([0, 1, 4, 5, 254, 255]))
    if rec.config is not None:
        rec.config.alarm_low = draw(st.sampled_from([-32768, draw(u16) - 32768]))
    return rec


@given(odd_records(), st.text("0123456789abcdefABCDEF<&\"'> ", min_size=1, max_size=16), transports(),
       st.booleans())
def test_the_document_equals_the_plain_reference_byte_for_byte(rec, dev_eui, t, complete):
    assert xmldoc.build_document(rec, dev_eui, t, complete) == reference_document(rec, dev_eui, t, complete)
