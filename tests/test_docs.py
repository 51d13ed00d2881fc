"""The docs stand on their own: every file they name exists in the repository, and the
contract the project implements (``docs/spec/``) is the one it was given, byte for byte."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "docs" / "spec"
#: the contract as handed to the project, beside the checkout (absent outside a workspace)
UPSTREAM = ROOT.parent / "shared" / "spec"
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "reports").glob("*.md")])

_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
_PATH = re.compile(r"`((?:collector|devicesim|hil|scenarios|docs|reports|tests)/[\w./-]+\.(?:py|md|toml|xsd|json|png))`")


def _named_files(doc: Path) -> list[tuple[str, Path]]:
    text = doc.read_text()
    out = []
    for m in _LINK.finditer(text):
        target = m.group(1)
        if "://" in target or target.startswith("mailto:"):
            continue
        out.append((target, (doc.parent / target).resolve()))
    for m in _PATH.finditer(text):
        out.append((m.group(1), ROOT / m.group(1)))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_named_file_exists_inside_the_repository(doc):
    for name, path in _named_files(doc):
        assert path.is_relative_to(ROOT), f"{doc.name} points outside the repository: {name}"
        assert path.exists(), f"{doc.name} names {name}, which does not exist"


def test_the_spec_copy_is_complete():
    names = {p.name for p in SPEC.glob("*.md")}
    assert {"wire-format.md", "wire-format-v2.md", "xml-format.md", "ingest-formats.md",
            "radio-facts.md", "modems.md"} <= names


@pytest.mark.skipif(not UPSTREAM.is_dir(), reason="the upstream contract is not beside this checkout")
def test_the_spec_copy_matches_the_contract():
    upstream = {p.name: p.read_bytes() for p in UPSTREAM.glob("*.md")}
    ours = {p.name: p.read_bytes() for p in SPEC.glob("*.md")}
    assert ours == upstream, "docs/spec/ differs from the contract; copy it again"
