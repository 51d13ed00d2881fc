"""The document (xml-format.md §1): exact bytes, number formats, XSD."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given

from collector.core import wire, xmldoc
from collector.core.timefmt import parse_ms
from collector.testing.examples import example_record

from .conftest import records

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
