"""`collector encode --wire v2` and `collector decode` of v2 input, as a bench engineer uses them."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
from click.testing import CliRunner

from collector.cli.main import cli
from collector.core import wire, wire2
from collector.core.xmldoc import xsd_validate
from collector.testing.examples import example_record

DATA = wire.encode_record(example_record())


@pytest.fixture
def runner():
    return CliRunner()


def encode(runner, *args) -> list[str]:
    res = runner.invoke(cli, ["encode", "--example", "--wire", "v2", *args])
    assert res.exit_code == 0, res.output
    return [line for line in res.stdout.splitlines() if line]


def test_encode_v2_matches_the_core_and_says_what_it_made(runner):
    lines = encode(runner, "--size", "51", "--parity", "3", "--msg-id", "4", "--poll")
    assert [bytes.fromhex(x) for x in lines[:-1]] == wire2.encode_message(DATA, 4, 51, 3)
    assert lines[-1] == wire2.poll(4, 14, 17).hex()
    res = runner.invoke(cli, ["encode", "--example", "--wire", "v2", "--size", "51"])
    assert "658-byte record, v2: 14 data + 2 parity fragment(s) of 51 bytes" in res.stderr


def test_decode_any_k_in_any_order_with_duplicates_and_polls(runner):
    lines = encode(runner, "--size", "51", "--parity", "4", "--msg-id", "9", "--poll")
    rng = random.Random(7)
    frags, poll = lines[:-1], lines[-1]
    kept = rng.sample(frags, 14)  # any 14 of the 18
    mixed = kept + rng.sample(kept, 5) + [poll]
    rng.shuffle(mixed)
    res = runner.invoke(cli, ["decode"], input="\n".join(mixed) + "\n")
    assert res.exit_code == 0, res.output
    assert 'complete="true"' in res.stdout and 'messageId="9"' in res.stdout
    assert 'fragmentsExpected="14" fragmentsReceived="14"' in res.stdout
    assert xsd_validate(res.stdout.encode()) == []


def test_v1_and_v2_messages_in_one_input(runner):
    v2 = encode(runner, "--size", "115", "--msg-id", "1")
    v1 = runner.invoke(cli, ["encode", "--example", "--size", "115", "--msg-id", "2"]).stdout.split()
    mixed = v2[2:] + v1  # two v2 data fragments lost, made up by parity
    random.Random(3).shuffle(mixed)
    res = runner.invoke(cli, ["decode"], input="\n".join(mixed))
    assert res.exit_code == 0, res.output
    assert res.stdout.count('complete="true"') == 2
    assert 'messageId="1"' in res.stdout and 'messageId="2"' in res.stdout


def test_too_few_fragments_give_a_partial_document_or_an_incident(runner):
    lines = encode(runner, "--size", "51", "--parity", "0")
    res = runner.invoke(cli, ["decode", "--wire", "v2"], input="\n".join(lines[:13]))
    assert res.exit_code == 0
    assert 'complete="false"' in res.stdout and 'missingFragments="13"' in res.stdout
    res = runner.invoke(cli, ["decode", "--wire", "v2"], input="\n".join(lines[1:13]))
    assert res.exit_code == 1 and "required_missing" in res.stderr


@pytest.mark.parametrize("text,problem", [
    ("07000402 0102030405060708\n07ff040600\n", "a poll (index 255) is exactly 4 bytes, not 5"),
    ("0700ff02 0102\n", "k is 255"),
    ("07000408 0102030405060708\n", "pad 8 is not below the chunk length 8"),
])
def test_bad_v2_input_is_refused_with_exit_2(runner, text, problem):
    res = runner.invoke(cli, ["decode", "--wire", "v2"], input=text)
    assert res.exit_code == 2 and problem in res.output


def test_contradicting_headers_are_two_messages(runner):
    lines = encode(runner, "--size", "115", "--parity", "0")
    bad = bytearray.fromhex(lines[3])
    bad[3] += 1  # another pad
    res = runner.invoke(cli, ["decode", "--wire", "v2", "--json"], input="\n".join(lines[:3] + [bad.hex()]))
    assert res.exit_code == 1 and res.stdout.count('"kind": "incident"') == 2


def test_encode_refuses_v2_options_without_v2(runner):
    res = runner.invoke(cli, ["encode", "--example", "--size", "51", "--parity", "2"])
    assert res.exit_code == 2 and "--parity and --poll need --wire v2" in res.output
    res = runner.invoke(cli, ["encode", "--example", "--wire", "v2", "--size", "5"])
    assert res.exit_code == 2 and "at most 254" in res.output
    res = runner.invoke(cli, ["decode", "--fport", "17"], input="00")
    assert res.exit_code == 2 and "use --wire v2" in res.output


def test_the_installed_command_pipes_v2_end_to_end():
    enc = subprocess.run([sys.executable, "-m", "collector", "encode", "--example", "--size", "242",
                          "--wire", "v2", "--parity", "2"], capture_output=True, text=True, check=True)
    lines = enc.stdout.split()
    dec = subprocess.run([sys.executable, "-m", "collector", "decode"], input="\n".join(lines[2:]),
                         capture_output=True, text=True)
    assert dec.returncode == 0, dec.stderr
    assert 'fragmentsExpected="3"' in dec.stdout and 'complete="true"' in dec.stdout


@pytest.mark.parametrize("wire_arg", [[], ["--wire", "v2"]])
def test_decode_of_a_poll_alone_says_so_instead_of_a_v1_fragment_255(runner, wire_arg):
    """A poll whose fragments all got lost is a v2 message with nothing to decode: no
    document (exit 1) and one line saying what arrived, not a v1 incident about a
    fragment 255 (a v1 index is below its count, so never 255)."""
    res = runner.invoke(cli, ["decode", *wire_arg], input=wire2.poll(7, 4, 6).hex() + "\n")
    assert res.exit_code == 1, res.output
    assert res.stdout == ""
    assert res.stderr.strip() == "message 7: only its poll arrived (v2, k=4, sent=6): no fragment to decode"
