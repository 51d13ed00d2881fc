"""Shared helpers for the scenario tests: a small ground truth built from the
example record, and a tiny scenario file that runs in a couple of seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.core import wire
from collector.testing.examples import EXAMPLE_DEV_EUI, example_record
from scenarios.measure import Acked, Expected, Upload, expected_outcome

#: EU868 DR0: 658-byte record in 14 fragments of 51 bytes
SIZE = 51
T0 = 1_795_478_400.0

TINY = """
name = "tiny"
seed = 3
hours = 1
[devicesim]
region = "EU868"
devices = { count = 3, radius_m = 100, dr = { kind = "fixed", dr = 5 }, schedule = { kind = "every", every_min = 60, jitter_min = 0 } }
channel = { model = "bernoulli", p = 0.0 }
[expect]
delivered_ratio = ">= 1.0"
complete_documents_exact = "== 1.0"
"""


class Truth:
    """One record of the example device, fragmented at S=51."""

    def __init__(self, seq: int = 4711, msg_id: int = 5):
        rec = example_record()
        rec.record_seq = seq
        self.record = wire.encode_record(rec)
        self.fragments = wire.fragment(msg_id, self.record, SIZE)
        self.msg_id = msg_id
        self.seq = seq

    def acked(self, indices) -> dict[int, Acked]:
        return {i: Acked(int(T0 * 1000) + 60_000 * i, T0 + 60 * i + 0.5) for i in indices}

    def expected(self, indices, record_id: int = 0) -> Expected:
        return expected_outcome(record_id=record_id, dev_eui=EXAMPLE_DEV_EUI, msg_id=self.msg_id,
                                record=self.record, fragments=self.fragments, size=SIZE, created_at=T0 - 10,
                                acked=self.acked(indices))


def stored(e: Expected, vtime: float, epoch: int = 1, status: int = 201, xml: bytes | None = None) -> Upload:
    return Upload(e.key, status, vtime, e.xml if xml is None else xml, epoch)


@pytest.fixture
def truth_factory():
    return Truth


@pytest.fixture
def upload():
    """``upload(expected, vtime, epoch=1, status=201, xml=None)`` -> an Upload the Web App answered."""
    return stored


@pytest.fixture
def tiny_file(tmp_path: Path):
    def make(extra: str = "") -> Path:
        p = tmp_path / "tiny.toml"
        p.write_text(TINY + extra, encoding="utf-8")
        return p
    return make

