"""Coverage-guided fuzzing of the fragment and record decoders with atheris.

    python tests/fuzz/fuzz_decoders.py -runs=200000          # a bounded run
    python tests/fuzz/fuzz_decoders.py -max_total_time=600   # ten minutes

The first input byte picks the target; the rest is fed to it. Only the project's own
decode errors may escape a decoder; anything else is a crash libFuzzer reports.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from collector import wire
    from collector.assemble import assemble
    from collector.reassembly import Reassembler, Settings
    from collector.uplink import Uplink


def _fragments(data: bytes) -> list[bytes]:
    """Split the input into payloads: each is prefixed by its length byte."""
    out, i = [], 0
    while i < len(data):
        n = data[i]
        out.append(data[i + 1 : i + 1 + n])
        i += 1 + n
    return out


def one_input(data: bytes) -> None:
    if not data:
        return
    target, body = data[0] % 3, data[1:]
    try:
        if target == 0:
            wire.decode_record(body)
        elif target == 1:
            wire.parse_fragment(body)
        else:
            r = Reassembler(Settings(message_timeout=1, deadline_policy="fixed", max_open_per_device=4))
            closed = []
            for i, p in enumerate(_fragments(body)):
                try:
                    closed += r.feed(Uplink("0000000000000001", 16, p, i), float(i)).closed
                except wire.FragmentError:
                    pass
            closed += r.expire(float("inf"))
            for m in closed:
                out = assemble(m)
                assert (out.kind == "document") == (out.xml is not None)
    except wire.WireError:
        pass


def main(argv: list[str]) -> None:
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
