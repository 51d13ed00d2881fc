"""`collector decode` and `collector encode`, as a bench engineer uses them."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys

import pytest
from click.testing import CliRunner

from collector.cli.main import cli
from collector.core import wire
from collector.core.xmldoc import xsd_validate
from collector.testing.examples import example_record


@pytest.fixture
def runner():
    return CliRunner()


def encode_example(runner, *args):
    res = runner.invoke(cli, ["encode", "--example", *args])
    assert res.exit_code == 0, res.output
    return [line for line in res.stdout.splitlines() if line]


def test_round_trip_any_order_with_duplicates(runner):
    lines = encode_example(runner, "--region", "US915", "--dr", "0", "--msg-id", "9")
    assert len(lines) == 74
    rng = random.Random(4)
    mixed = lines + rng.sample(lines, 10)
    rng.shuffle(mixed)
    res = runner.invoke(cli, ["decode"], input="\n".join(mixed) + "\n")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("<?xml version='1.0' encoding='UTF-8'?>")
    assert 'fragmentsExpected="74" fragmentsReceived="74"' in res.stdout
    assert 'messageId="9"' in res.stdout
    assert xsd_validate(res.stdout.encode()) == []


def test_base64_input_and_dev_eui_option(runner):
    lines = encode_example(runner, "--size", "242", "--format", "base64")
    res = runner.invoke(cli, ["decode", "--dev-eui", "00112233aabbccdd"], input="\n".join(lines))
    assert res.exit_code == 0
    assert 'devEui="00112233AABBCCDD"' in res.stdout


def test_partial_message_is_a_document_with_what_is_missing(runner):
    lines = encode_example(runner, "--size", "51")
    res = runner.invoke(cli, ["decode"], input="\n".join(lines[:-1]))
    assert res.exit_code == 0
    assert 'complete="false"' in res.stdout and 'missingFragments="13"' in res.stdout
    assert 'missingBlocks="config site"' in res.stdout


def test_missing_required_bytes_is_an_incident_with_exit_1(runner):
    lines = encode_example(runner, "--size", "51")
    res = runner.invoke(cli, ["decode"], input="\n".join(lines[1:]))
    assert res.exit_code == 1
    assert "fragment0_missing" in res.stderr
    res = runner.invoke(cli, ["decode", "--json"], input="\n".join(lines[:3] + lines[4:]))
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert out["code"] == "required_missing" and out["missingFragments"] == [3]


@pytest.mark.parametrize(
    "text,problem",
    [("zz\n", "line 1: neither hex nor base64"), ("01 00 00 05\n", "line 1: invalid fragment: fragment 0 announces count 0"),
     ("# only a comment\n", "no fragments"), ("0102\n", "carries no record bytes")],
)
def test_bad_input_is_named_with_exit_2(runner, text, problem):
    res = runner.invoke(cli, ["decode"], input=text)
    assert res.exit_code == 2
    assert problem in res.output


def test_dev_eui_with_a_trailing_newline_is_refused(runner):
    res = runner.invoke(cli, ["decode", "--dev-eui", "00112233aabbccdd\n"], input="0102\n")
    assert res.exit_code == 2 and "is not 16 hex digits" in res.output


def test_fragments_from_a_file_and_a_bad_crc(runner, tmp_path):
    data = bytearray(wire.encode_record(example_record(samples=4, blocks=False)))
    data[30] ^= 1
    f = tmp_path / "frags.txt"
    f.write_text("\n".join(p.hex() for p in wire.fragment(1, bytes(data), 20)))
    res = runner.invoke(cli, ["decode", str(f)])
    assert res.exit_code == 1 and "CRC mismatch" in res.stderr


def test_encode_a_json_record_and_its_errors(runner, tmp_path):
    rec = example_record(samples=3)
    src = tmp_path / "rec.json"
    src.write_text(json.dumps(wire.record_to_dict(rec)))
    res = runner.invoke(cli, ["encode", str(src), "--region", "EU868", "--dr", "5", "--format", "base64"])
    assert res.exit_code == 0
    payloads = [base64.b64decode(x) for x in res.stdout.split()]
    assert wire.decode_record(wire.defragment(payloads)[1]) == rec
    assert runner.invoke(cli, ["encode", str(src)]).exit_code == 2
    src.write_text("{")
    res = runner.invoke(cli, ["encode", str(src), "--size", "51"])
    assert res.exit_code == 2 and "not JSON" in res.output
    res = runner.invoke(cli, ["encode", "--example", "--region", "US915", "--dr", "9"])
    assert res.exit_code == 2 and "DR9" in res.output


def test_the_installed_command_pipes_end_to_end():
    enc = subprocess.run([sys.executable, "-m", "collector", "encode", "--example", "--size", "115"],
                         capture_output=True, text=True, check=True)
    dec = subprocess.run([sys.executable, "-m", "collector", "decode"], input=enc.stdout,
                         capture_output=True, text=True)
    assert dec.returncode == 0 and 'fragmentsExpected="6"' in dec.stdout


def test_every_command_has_help(runner):
    for cmd in ([], ["decode"], ["encode"], ["example-record"]):
        res = runner.invoke(cli, [*cmd, "--help"])
        assert res.exit_code == 0 and "Usage:" in res.output
