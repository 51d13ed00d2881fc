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
    # the script's folder is first on sys.path when it runs as a script
    from hostile import reassemble_hostile

    from collector.core import wire


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
            reassemble_hostile(_fragments(body), max_open_per_device=4)
    except wire.WireError:
        pass


def main(argv: list[str]) -> None:
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
