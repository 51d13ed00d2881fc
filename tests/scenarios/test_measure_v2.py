"""The v2 branch of the expected outcome: any k distinct frames (data or parity) make
the complete document; fewer make a partial one of the data chunks held, or an
incident. Each case is checked against the collector's own reassembly of the same
frames, with the same receive times."""

from __future__ import annotations

import pytest

from collector.core.assemble import assemble
from collector.core.reassembly import Reassembler, Settings
from collector.core.uplink import Uplink
from collector.core.wire2 import FPORT_V2, encode_message
from collector.testing.examples import EXAMPLE_DEV_EUI
from scenarios.measure import expected_outcome
from tests.scenarios.conftest import SIZE, T0, Truth

K = 14


def _frames(t: Truth) -> list[bytes]:
    return encode_message(t.record, t.msg_id, SIZE, 4)  # 14 data fragments, then 4 parity rows


def _expected(t: Truth, have: list[int]):
    acked = t.acked(have)
    return expected_outcome(record_id=0, dev_eui=EXAMPLE_DEV_EUI, msg_id=t.msg_id, record=t.record,
                            fragments=_frames(t)[:K], size=SIZE, created_at=T0 - 10, acked=acked, need=K), acked


def _collector(t: Truth, have: list[int], acked):
    frames = _frames(t)
    r = Reassembler(Settings(message_timeout=900, deadline_policy="fixed"))
    closed = []
    for i in have:
        up = Uplink(EXAMPLE_DEV_EUI, FPORT_V2, frames[i], acked[i].received_ms, fcnt=i, data_rate="SF12BW125")
        closed += r.feed(up, acked[i].arrived).closed
    closed += r.expire(1e12)
    return assemble(closed[0])


@pytest.mark.parametrize("have, kind", [
    (list(range(K)), "complete"),
    ([i for i in range(K) if i not in (3, 9)] + [14, 16], "complete"),          # two data chunks rebuilt from parity
    ([i for i in range(K) if i != 0] + [15, 17], "complete"),                   # no fragment 0: parity stands in
    ([i for i in range(K) if i != 13] + [14, 15, 16], "complete"),              # more than k: the first k count
    ([i for i in range(K) if i != 13], "partial"),                              # k-1 data: the tail blocks missing
    ([i for i in range(K) if i not in (12, 13)] + [14], "incident"),            # a parity row covers no data bytes
    ([i for i in range(K) if i != 5] + [], "incident"),                         # a hole in the required section
])
def test_v2_expected_document_equals_the_collectors(have, kind):
    t = Truth()
    exp, acked = _expected(t, have)
    assert exp.kind == kind
    outcome = _collector(t, have, acked)
    if kind == "incident":
        assert outcome.kind == "incident"
    else:
        assert outcome.xml == exp.xml
        assert (b'complete="true"' in exp.xml) == (kind == "complete")
        assert f'fragmentsExpected="{K}"'.encode() in exp.xml
