"""The one way the project reads a TOML configuration file.

Used by the collector's settings, ``hil --config``, the simulator's configuration and
the scenario files. Two rules everywhere:

- a file that cannot be read or is not TOML is one clear line (:class:`ConfigError`);
- every key and every table must be known: a typo is an error naming it and what
  is known there, never a setting silently ignored or applied elsewhere.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration that cannot be used; the message (one line) names the key."""


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The TOML document in ``path``; :class:`ConfigError` when it cannot be read
    or parsed."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"cannot read {what} {str(p)!r}: it does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {what} {str(p)!r}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what} {str(p)!r} is not valid TOML: {e}") from None


def _show(names: Collection[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def check_keys(table: Mapping[str, Any], keys: Collection[str] = (), tables: Collection[str] = (),
               where: str = "", known: str | None = None, noun: str = "key") -> None:
    """Raise :class:`ConfigError` unless every entry of ``table`` is one of ``keys``
    (a value) or one of ``tables`` (a sub-table).

    The message is one line: ``<where>: unknown key(s) a, b; known: ...`` (or
    ``unknown table(s) [a]; known tables: ...``). That a known table is a table is
    the caller's check (:func:`table`).
    ``where`` names ``table`` (e.g. ``"devices"``, ``"config file 'c.toml', [delivery]"``);
    ``known`` replaces the list of known keys (for long lists: where they are
    documented); ``noun`` is what a key is called there ("setting")."""
    prefix = f"{where}: " if where else ""
    unknown = [n for n in table if n not in keys and n not in tables]
    bad_tables = sorted(n for n in unknown if isinstance(table[n], Mapping))
    if bad_tables:
        raise ConfigError(f"{prefix}unknown table(s) {', '.join(f'[{t}]' for t in bad_tables)}; "
                          f"known tables: {', '.join(f'[{t}]' for t in sorted(tables)) or 'none'}")
    if unknown:
        raise ConfigError(f"{prefix}unknown {noun}(s) {', '.join(sorted(unknown))}; known: {known or _show(keys)}")


def table(parent: Mapping[str, Any], name: str, where: str = "") -> Mapping[str, Any]:
    """``parent[name]``, a table (empty when absent); :class:`ConfigError` when it is
    something else."""
    v = parent.get(name, {})
    if not isinstance(v, Mapping):
        raise ConfigError(f"{where + ': ' if where else ''}{name}: expected a table, got {type(v).__name__}")
    return v
