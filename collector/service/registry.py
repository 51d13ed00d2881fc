"""The device registry file: per-device upload tokens (and names) for delivery.

Two forms are read, chosen by the file's extension:

TOML (``.toml``)::

    [[device]]
    dev_eui = "70B3D57ED005A1B2"
    token = "f3c1..."          # optional: without it the collector's token is used
    name = "logger-0042"       # optional

    # or, keyed by DevEUI:
    [devices.70B3D57ED005A1B3]
    token = "..."

CSV (``.csv``) with a header row naming ``dev_eui`` (or ``devEui``), and optionally
``token`` and ``name``.

The registry lives in the database (``devices`` table); the file is imported into
it (``collector devices import`` or the ``devices_file`` setting at start).
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from collector.service.outbound import header_problem
from collector.tomlconfig import check_keys

_EUI = re.compile(r"^[0-9A-Fa-f]{16}\Z")


@dataclass(frozen=True)
class Device:
    dev_eui: str
    token: str | None = None
    name: str | None = None


def check_eui(value: str, where: str = "dev_eui") -> str:
    if not isinstance(value, str) or not _EUI.match(value.strip()):
        raise ValueError(f"{where}: {value!r} is not a DevEUI (16 hex digits)")
    return value.strip().upper()


def check_token(value: str | None, where: str = "token") -> str | None:
    """A device's upload token as given (None stays None); ValueError when it cannot
    be sent in the upload request's ``Authorization`` header."""
    if value:
        problem = header_problem(value, where)
        if problem:
            raise ValueError(problem)
    return value


def _device(d: dict, where: str, eui: str | None = None) -> Device:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a table")
    check_keys(d, ("dev_eui", "devEui", "token", "name"), where=where)
    raw = eui if eui is not None else d.get("dev_eui", d.get("devEui"))
    if raw is None:
        raise ValueError(f"{where}: dev_eui is missing")
    tok = d.get("token")
    name = d.get("name")
    for key, v in (("token", tok), ("name", name)):
        if v is not None and not isinstance(v, str):
            raise ValueError(f"{where}: {key} must be a string")
    return Device(check_eui(raw, f"{where}: dev_eui"), check_token(tok, f"{where}: token") or None, name or None)


def parse_toml(text: str) -> list[Device]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"not valid TOML: {e}") from None
    check_keys(doc, ("device",), ("devices",))
    out = []
    for i, d in enumerate(doc.get("device", [])):
        out.append(_device(d, f"device[{i}]"))
    devices = doc.get("devices", {})
    if not isinstance(devices, dict):
        raise ValueError("devices: expected a table keyed by DevEUI")
    for eui, d in devices.items():
        out.append(_device(d, f"devices.{eui}", eui))
    return _unique(out)


def parse_csv(text: str) -> list[Device]:
    rows = list(csv.DictReader(io.StringIO(text)))
    out = []
    for n, row in enumerate(rows, 2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        eui = row.get("dev_eui") or row.get("devEui")
        if eui is None:
            raise ValueError("the CSV header must name a dev_eui column")
        out.append(Device(check_eui(eui, f"line {n}: dev_eui"), check_token(row.get("token"), f"line {n}: token") or None,
                          row.get("name") or None))
    return _unique(out)


def _unique(devices: list[Device]) -> list[Device]:
    seen: set[str] = set()
    for d in devices:
        if d.dev_eui in seen:
            raise ValueError(f"device {d.dev_eui} is listed twice")
        seen.add(d.dev_eui)
    return devices


def load_file(path: str | Path) -> list[Device]:
    """Read a registry file (``.toml`` or ``.csv``); ValueError names the problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"device file {str(p)!r} does not exist") from None
    try:
        if p.suffix.lower() == ".csv":
            return parse_csv(text)
        if p.suffix.lower() == ".toml":
            return parse_toml(text)
    except ValueError as e:
        raise ValueError(f"{p.name}: {e}") from None
    raise ValueError(f"device file {p.name!r}: use a .toml or .csv file")
