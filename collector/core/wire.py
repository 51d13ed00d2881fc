"""Wire format v1: fragments (one LoRaWAN uplink each) and the schema-1 record.

The layout is declared once, with ``construct``, in :data:`RECORD_V1`; that
declaration is the reference and documents every byte (see
``docs/spec/wire-format.md``). Decoding bytes that came over the air uses the
hand-written :mod:`struct` fast path below, which checks every length before it
reads and is tested field-for-field against the declaration.

Pure code: no clock, no I/O.

Over 400 lines on purpose: the record's declaration, its fast decoder and the
fragment rules are the one section of the contract each, kept side by side so the
declaration and the fast path can be read (and tested) against each other.
"""

from __future__ import annotations

import binascii
import functools
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import construct as cs

#: the FPort every fragment travels on
FPORT = 16
SCHEMA_VERSION = 1
MIN_SIZE = 4
MAX_SIZE = 242
MAX_FRAGMENTS = 255
REQUIRED_HEADER_LEN = 24

FLAG_NAMES = ("clock_synced", "battery_low", "tamper", "sensor_fault")
BLOCK_NAMES = ("location", "diagnostics", "config", "site")
BLOCK_SIZES = (12, 16, 8, 16)
UNIT_NAMES = (
    "none",
    "celsius",
    "percent_rh",
    "hectopascal",
    "volt",
    "ampere",
    "meter",
    "cubic_meter_per_hour",
    "ppm",
    "lux",
    "millimeter",
    "meter_per_second",
)
RESET_REASONS = {0: "power_on", 1: "watchdog", 2: "brownout", 3: "software", 4: "pin", 255: "unknown"}
FIX_NAMES = ("none", "2d", "3d")
MISSING_SAMPLE = -32768


class WireError(ValueError):
    """Bytes that do not follow the wire format. ``code`` is a stable short name."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


class FragmentError(WireError):
    pass


class RecordError(WireError):
    pass


class RequiredMissing(RecordError):
    """Bytes of the required section never arrived; ``ranges`` are [start, end) record
    offsets that are missing (the end of the last range may be an estimate)."""

    def __init__(self, ranges: list[tuple[int, int]], detail: str):
        super().__init__("required_missing", detail)
        self.ranges = ranges


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, xorout 0."""
    return binascii.crc_hqx(data, 0xFFFF)


# --------------------------------------------------------------------------- fragments


@dataclass(slots=True)
class Fragment:
    msg_id: int
    index: int
    #: number of fragments in the message; only fragment 0 carries it
    count: int | None
    chunk: bytes

    @property
    def header_len(self) -> int:
        return 3 if self.index == 0 else 2

    @property
    def size(self) -> int:
        """Total length of the uplink payload, header included."""
        return self.header_len + len(self.chunk)

    def encode(self) -> bytes:
        if self.index == 0:
            return bytes((self.msg_id, 0, self.count or 0)) + self.chunk
        return bytes((self.msg_id, self.index)) + self.chunk


def parse_fragment(payload: bytes) -> Fragment:
    """Parse one uplink payload. Raises :class:`FragmentError` naming the problem."""
    n = len(payload)
    if n < 2:
        raise FragmentError("fragment_short", f"fragment is {n} byte(s); a header needs at least 2")
    if n > MAX_SIZE:
        raise FragmentError("fragment_long", f"fragment is {n} bytes; at most {MAX_SIZE}")
    msg_id, index = payload[0], payload[1]
    if index == 0:
        if n < 3:
            raise FragmentError("fragment_short", "fragment 0 is 2 bytes; its header needs 3")
        count = payload[2]
        if count == 0:
            raise FragmentError("fragment_count_zero", "fragment 0 announces count 0; count must be 1..255")
        if n == 3:
            raise FragmentError("fragment_empty", "fragment 0 carries no record bytes")
        return Fragment(msg_id, 0, count, bytes(payload[3:]))
    if n == 2:
        raise FragmentError("fragment_empty", f"fragment {index} carries no record bytes")
    return Fragment(msg_id, index, None, bytes(payload[2:]))


def _check_size(size: int) -> None:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"fragment size {size} outside {MIN_SIZE}..{MAX_SIZE}")


def fragment_count(record_len: int, size: int) -> int:
    """Fragments needed for a record of ``record_len`` bytes at fragment size ``size``."""
    _check_size(size)
    if record_len <= size - 3:
        return 1
    return 1 + -(-(record_len - (size - 3)) // (size - 2))


def chunk_offset(index: int, size: int) -> int:
    """Record offset of the first byte carried by fragment ``index``."""
    return 0 if index == 0 else (size - 3) + (index - 1) * (size - 2)


def chunk_capacity(index: int, size: int) -> int:
    return size - 3 if index == 0 else size - 2


def fragment_lengths(record_len: int, size: int) -> list[int]:
    """Total payload length (header included) of each fragment of a record."""
    n = fragment_count(record_len, size)
    out = []
    for i in range(n):
        start = chunk_offset(i, size)
        chunk = min(chunk_capacity(i, size), record_len - start)
        out.append(chunk + (3 if i == 0 else 2))
    return out


def fragment(msg_id: int, record: bytes, size: int) -> list[bytes]:
    """Split ``record`` into the uplink payloads of one message (wire-format.md §1)."""
    _check_size(size)
    if not 0 <= msg_id <= 255:
        raise ValueError(f"msg_id {msg_id} outside 0..255")
    if not record:
        raise ValueError("empty record")
    n = fragment_count(len(record), size)
    if n > MAX_FRAGMENTS:
        raise ValueError(
            f"a {len(record)}-byte record needs {n} fragments at size {size}; at most {MAX_FRAGMENTS}"
        )
    out = [bytes((msg_id, 0, n)) + record[: size - 3]]
    for i in range(1, n):
        start = chunk_offset(i, size)
        out.append(bytes((msg_id, i)) + record[start : start + size - 2])
    return out


def defragment(payloads: Iterable[bytes]) -> tuple[int, bytes]:
    """Inverse of :func:`fragment` for a complete set (any order, duplicates allowed).
    Returns ``(msg_id, record)``; raises :class:`FragmentError` when incomplete or
    inconsistent."""
    frags: dict[int, Fragment] = {}
    msg_ids = set()
    for p in payloads:
        f = parse_fragment(p)
        msg_ids.add(f.msg_id)
        held = frags.get(f.index)
        if held is not None and held != f:
            raise FragmentError("fragment_conflict", f"two different fragments with index {f.index}")
        frags[f.index] = f
    if len(msg_ids) != 1:
        raise FragmentError("msg_id_mixed", f"fragments of several messages: {sorted(msg_ids)}")
    if 0 not in frags:
        raise FragmentError("fragment0_missing", "fragment 0 (which carries the count) is missing")
    count = frags[0].count or 0
    missing = [i for i in range(count) if i not in frags]
    if missing:
        raise FragmentError("fragments_missing", f"fragments missing: {missing}")
    extra = sorted(i for i in frags if i >= count)
    if extra:
        raise FragmentError("index_beyond_count", f"fragment index {extra[0]} >= count {count}")
    return msg_ids.pop(), b"".join(frags[i].chunk for i in range(count))


# --------------------------------------------------------------------------- record model


@dataclass
class Channel:
    unit: int
    exponent: int
    samples: list[int]


@dataclass
class Location:
    lat_e7: int
    lon_e7: int
    alt_m: int
    hdop_dm: int
    fix: int


@dataclass
class Diagnostics:
    uptime_s: int
    reset_count: int
    reset_reason: int
    tx_failures: int
    last_dl_rssi: int
    last_dl_snr_q: int
    modem_fw_major: int
    modem_fw_minor: int
    free_storage_kb: int


@dataclass
class Config:
    config_version: int
    upload_hour: int
    preferred_dr: int
    alarm_low: int
    alarm_high: int


@dataclass
class Site:
    #: the raw 16-byte label, NUL-padded
    label: bytes


@dataclass
class Record:
    device_serial: int
    record_seq: int
    start_time: int
    interval_s: int
    channels: list[Channel]
    flags: int = 0
    fw_major: int = 1
    fw_minor: int = 0
    battery_mv: int = 3600
    temp_centi: int = 2000
    location: Location | None = None
    diagnostics: Diagnostics | None = None
    config: Config | None = None
    site: Site | None = None
    schema_version: int = SCHEMA_VERSION
    reserved: int = 0
    #: meta_mask bits 4-7; only for building deliberately invalid records in tests
    mask_reserved_bits: int = field(default=0, repr=False)

    @property
    def blocks(self) -> tuple:
        return (self.location, self.diagnostics, self.config, self.site)

    @property
    def meta_mask(self) -> int:
        m = self.mask_reserved_bits & 0xF0
        for bit, block in enumerate(self.blocks):
            if block is not None:
                m |= 1 << bit
        return m

    @property
    def sample_count(self) -> int:
        return len(self.channels[0].samples) if self.channels else 0

    def encoded_len(self) -> int:
        return record_length(len(self.channels), self.sample_count, self.meta_mask)


def required_length(channel_count: int, sample_count: int) -> int:
    """Length of the required section, CRC included."""
    return REQUIRED_HEADER_LEN + 2 * channel_count + 2 * channel_count * sample_count + 2


def record_length(channel_count: int, sample_count: int, meta_mask: int) -> int:
    n = required_length(channel_count, sample_count)
    for bit, size in enumerate(BLOCK_SIZES):
        if meta_mask & (1 << bit):
            n += size
    return n


# --------------------------------------------------------------------------- reference declaration

_RequiredBody = cs.Struct(
    "schema_version" / cs.Int8ub,
    "flags" / cs.Int8ub,
    "device_serial" / cs.Int32ub,
    "fw_major" / cs.Int8ub,
    "fw_minor" / cs.Int8ub,
    "record_seq" / cs.Int16ub,
    "start_time" / cs.Int32ub,
    "interval_s" / cs.Int16ub,
    "channel_count" / cs.Int8ub,
    "sample_count" / cs.Int8ub,
    "battery_mv" / cs.Int16ub,
    "temp_centi" / cs.Int16sb,
    "meta_mask" / cs.Int8ub,
    "reserved" / cs.Int8ub,
    "channels" / cs.Array(cs.this.channel_count, cs.Struct("unit" / cs.Int8ub, "exponent" / cs.Int8sb)),
    # channel-major: all K samples of channel 0, then channel 1, ...
    "samples" / cs.Array(cs.this.channel_count * cs.this.sample_count, cs.Int16sb),
)

LOCATION_V1 = cs.Struct(
    "lat_e7" / cs.Int32sb,
    "lon_e7" / cs.Int32sb,
    "alt_m" / cs.Int16sb,
    "hdop_dm" / cs.Int8ub,
    "fix" / cs.Int8ub,
)
DIAGNOSTICS_V1 = cs.Struct(
    "uptime_s" / cs.Int32ub,
    "reset_count" / cs.Int16ub,
    "reset_reason" / cs.Int8ub,
    "tx_failures" / cs.Int16ub,
    "last_dl_rssi" / cs.Int16sb,
    "last_dl_snr_q" / cs.Int8sb,
    "modem_fw_major" / cs.Int8ub,
    "modem_fw_minor" / cs.Int8ub,
    "free_storage_kb" / cs.Int16ub,
)
CONFIG_V1 = cs.Struct(
    "config_version" / cs.Int16ub,
    "upload_hour" / cs.Int8ub,
    "preferred_dr" / cs.Int8ub,
    "alarm_low" / cs.Int16sb,
    "alarm_high" / cs.Int16sb,
)
SITE_V1 = cs.Struct("label" / cs.Bytes(16))

#: The schema-1 record, byte by byte (wire-format.md §2). The reference declaration.
RECORD_V1 = cs.Struct(
    "required" / cs.RawCopy(_RequiredBody),
    "crc16" / cs.Checksum(cs.Int16ub, lambda data: crc16(data), cs.this.required.data),
    "location" / cs.If(cs.this.required.value.meta_mask & 1, LOCATION_V1),
    "diagnostics" / cs.If(cs.this.required.value.meta_mask & 2, DIAGNOSTICS_V1),
    "config" / cs.If(cs.this.required.value.meta_mask & 4, CONFIG_V1),
    "site" / cs.If(cs.this.required.value.meta_mask & 8, SITE_V1),
    cs.Terminated,
)

# --------------------------------------------------------------------------- fast path

_HEADER = struct.Struct(">BBIBBHIHBBHhBB")
_LOCATION = struct.Struct(">iihBB")
_DIAGNOSTICS = struct.Struct(">IHBHhbBBH")
_CONFIG = struct.Struct(">HBBhh")
_BLOCK_STRUCTS = (_LOCATION, _DIAGNOSTICS, _CONFIG, None)
assert tuple(s.size for s in _BLOCK_STRUCTS if s) + (16,) == BLOCK_SIZES


def encode_record(rec: Record) -> bytes:
    """Encode a record. Raises ValueError when a field does not fit its type."""
    c = len(rec.channels)
    k = rec.sample_count
    if not 1 <= c <= 255:
        raise ValueError(f"a record needs 1..255 channels, got {c}")
    if any(len(ch.samples) != k for ch in rec.channels):
        raise ValueError("every channel must have the same number of samples")
    try:
        parts = [
            _HEADER.pack(
                rec.schema_version, rec.flags, rec.device_serial, rec.fw_major, rec.fw_minor,
                rec.record_seq, rec.start_time, rec.interval_s, c, k, rec.battery_mv,
                rec.temp_centi, rec.meta_mask, rec.reserved,
            ),
            b"".join(struct.pack(">Bb", ch.unit, ch.exponent) for ch in rec.channels),
        ]
        for ch in rec.channels:
            parts.append(struct.pack(f">{k}h", *ch.samples))
    except struct.error as e:
        raise ValueError(f"record field out of range: {e}") from None
    body = b"".join(parts)
    out = [body, crc16(body).to_bytes(2, "big")]
    try:
        if rec.location:
            loc = rec.location
            out.append(_LOCATION.pack(loc.lat_e7, loc.lon_e7, loc.alt_m, loc.hdop_dm, loc.fix))
        if rec.diagnostics:
            d = rec.diagnostics
            out.append(_DIAGNOSTICS.pack(
                d.uptime_s, d.reset_count, d.reset_reason, d.tx_failures, d.last_dl_rssi,
                d.last_dl_snr_q, d.modem_fw_major, d.modem_fw_minor, d.free_storage_kb,
            ))
        if rec.config:
            g = rec.config
            out.append(_CONFIG.pack(g.config_version, g.upload_hour, g.preferred_dr, g.alarm_low, g.alarm_high))
    except struct.error as e:
        raise ValueError(f"optional block field out of range: {e}") from None
    if rec.site:
        label = bytes(rec.site.label)
        if len(label) > 16:
            raise ValueError("site label longer than 16 bytes")
        out.append(label.ljust(16, b"\0"))
    return b"".join(out)


@dataclass
class Decoded:
    record: Record
    #: announced optional blocks that could not be decoded, in bit order
    missing_blocks: list[str]
    #: the record length its header announces
    expected_len: int


@functools.cache
def _descriptors(channel_count: int) -> struct.Struct:
    """The channel descriptors' struct (unit, exponent per channel), compiled once per count."""
    return struct.Struct(">" + "Bb" * channel_count)


@functools.cache
def _samples(sample_total: int) -> struct.Struct:
    """The samples' struct (all channels' int16 samples), compiled once per total
    (at most 4 x 255 layouts)."""
    return struct.Struct(f">{sample_total}h")


def _covered(have: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """Whether [start, end) lies inside the union of the sorted, merged ``have`` ranges."""
    for a, b in have:  # noqa: SIM110 (a plain loop: any() over a generator costs more)
        if a <= start and end <= b:
            return True
    return False


def _holes(have: Sequence[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    out = []
    pos = start
    for a, b in have:
        if b <= pos:
            continue
        if a >= end:
            break
        if a > pos:
            out.append((pos, min(a, end)))
        pos = max(pos, b)
        if pos >= end:
            break
    if pos < end:
        out.append((pos, end))
    return out


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _fmt_ranges(ranges: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"{a}..{b - 1}" if b - a > 1 else f"{a}" for a, b in ranges)


def _validate_header(h: tuple) -> None:
    schema, _flags, _serial, _fwa, _fwi, _seq, _start, interval, c, k, _bat, _temp, mask, _res = h
    if schema != SCHEMA_VERSION:
        raise RecordError("schema_version", f"schema_version is {schema}; only 1 is understood")
    if mask & 0xF0:
        raise RecordError("meta_mask_reserved", f"meta_mask 0x{mask:02X} sets reserved bits 4-7")
    if not 1 <= c <= 4:
        raise RecordError("channel_count", f"channel_count is {c}; must be 1..4")
    if k == 0:
        raise RecordError("sample_count", "sample_count is 0; must be 1..255")
    if interval == 0:
        raise RecordError("interval_s", "interval_s is 0; must be >= 1")


def decode_record(data: bytes) -> Record:
    """Decode a whole record (strict: its length must be exactly what its header says)."""
    d = decode_partial(data, [(0, len(data))])
    if d.expected_len != len(data):
        raise RecordError(
            "length", f"record is {len(data)} bytes but its header announces {d.expected_len}"
        )
    return d.record


def decode_partial(data: bytes, have: Sequence[tuple[int, int]]) -> Decoded:
    """Decode a record of which only the byte ranges ``have`` ([start, end) record
    offsets; ``data`` holds them at those offsets) arrived.

    The required section must be whole and its CRC must hold, else
    :class:`RequiredMissing` / :class:`RecordError`. Each announced optional block is
    decoded when all its bytes arrived, else named in ``missing_blocks``.
    """
    n = len(data)
    whole = len(have) == 1 and have[0][0] == 0 and have[0][1] >= n  # the usual case: everything arrived
    if whole:
        have = [(0, n)] if n else []
    else:
        have = merge_ranges((a, min(b, n)) for a, b in have if a < min(b, n))
    if not (whole and n >= REQUIRED_HEADER_LEN) and not _covered(have, 0, REQUIRED_HEADER_LEN):
        holes = _holes(have, 0, REQUIRED_HEADER_LEN)
        raise RequiredMissing(holes, f"required header bytes {_fmt_ranges(holes)} missing")
    h = _HEADER.unpack_from(data, 0)
    _validate_header(h)
    c, k, mask = h[8], h[9], h[12]
    req_len = required_length(c, k)
    if not (whole and n >= req_len) and not _covered(have, 0, req_len):
        holes = _holes(have, 0, req_len)
        raise RequiredMissing(holes, f"required section bytes {_fmt_ranges(holes)} missing (of 0..{req_len - 1})")
    body_end = req_len - 2
    expected_crc = (data[body_end] << 8) | data[body_end + 1]
    actual = crc16(memoryview(data)[:body_end])
    if actual != expected_crc:
        raise RecordError("crc", f"CRC mismatch: record says 0x{expected_crc:04X}, bytes give 0x{actual:04X}")
    # the channel descriptors and then all samples, each with one (cached) struct;
    # the coverage check above guarantees the bytes are there
    descs = _descriptors(c).unpack_from(data, REQUIRED_HEADER_LEN)
    exponents = descs[1::2]
    for exponent in exponents:
        if not -6 <= exponent <= 6:
            raise RecordError("exponent", f"channel exponent {exponent} outside -6..6")
    every = _samples(c * k).unpack_from(data, REQUIRED_HEADER_LEN + 2 * c)
    channels = [Channel(unit, exponent, list(every[i * k : (i + 1) * k]))
                for i, (unit, exponent) in enumerate(zip(descs[::2], exponents, strict=True))]
    rec = Record(
        schema_version=h[0], flags=h[1], device_serial=h[2], fw_major=h[3], fw_minor=h[4],
        record_seq=h[5], start_time=h[6], interval_s=h[7], battery_mv=h[10], temp_centi=h[11],
        reserved=h[13], channels=channels,
    )
    missing: list[str] = []
    pos = req_len
    for bit, size in enumerate(BLOCK_SIZES):
        if not mask & (1 << bit):
            continue
        if not (whole and pos + size <= n) and not _covered(have, pos, pos + size):
            missing.append(BLOCK_NAMES[bit])
        elif bit == 0:
            rec.location = Location(*_LOCATION.unpack_from(data, pos))
        elif bit == 1:
            rec.diagnostics = Diagnostics(*_DIAGNOSTICS.unpack_from(data, pos))
        elif bit == 2:
            rec.config = Config(*_CONFIG.unpack_from(data, pos))
        else:
            rec.site = Site(bytes(data[pos : pos + 16]))
        pos += size
    return Decoded(rec, missing, pos)


def announced_length(header: bytes) -> int | None:
    """The record length a (validated) 24-byte required header announces, or None."""
    if len(header) < REQUIRED_HEADER_LEN:
        return None
    h = _HEADER.unpack_from(header, 0)
    try:
        _validate_header(h)
    except RecordError:
        return None
    return record_length(h[8], h[9], h[12])


# --------------------------------------------------------------------------- JSON form


def record_to_dict(rec: Record) -> dict:
    """The record as JSON-able data (the form ``collector encode`` reads)."""
    d: dict = {
        "device_serial": rec.device_serial,
        "record_seq": rec.record_seq,
        "start_time": rec.start_time,
        "interval_s": rec.interval_s,
        "flags": rec.flags,
        "fw_major": rec.fw_major,
        "fw_minor": rec.fw_minor,
        "battery_mv": rec.battery_mv,
        "temp_centi": rec.temp_centi,
        "channels": [{"unit": c.unit, "exponent": c.exponent, "samples": list(c.samples)} for c in rec.channels],
    }
    if rec.location:
        d["location"] = dict(vars(rec.location))
    if rec.diagnostics:
        d["diagnostics"] = dict(vars(rec.diagnostics))
    if rec.config:
        d["config"] = dict(vars(rec.config))
    if rec.site:
        d["site"] = {"label": rec.site.label.rstrip(b"\0").decode("latin-1")}
    return d


def _site_from_json(site) -> Site | None:
    if site is None:
        return None
    try:
        label = str(site["label"]).encode("latin-1")
    except (KeyError, TypeError, UnicodeEncodeError):
        raise ValueError("site: needs a 'label' of at most 16 Latin-1 characters") from None
    if len(label) > 16:
        raise ValueError(f"site: label is {len(label)} bytes; at most 16")
    return Site(label.ljust(16, b"\0"))


_RECORD_FIELDS = ("device_serial", "record_seq", "start_time", "interval_s", "channels")


def record_from_dict(d: dict) -> Record:
    """Build a record from its JSON form; raises ValueError naming a bad or missing field."""
    if not isinstance(d, dict):
        raise ValueError("a record must be a JSON object")
    for name in _RECORD_FIELDS:
        if name not in d:
            raise ValueError(f"record field {name!r} is missing")
    known = set(_RECORD_FIELDS) | {"flags", "fw_major", "fw_minor", "battery_mv", "temp_centi",
                                   "location", "diagnostics", "config", "site"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown record field(s): {', '.join(unknown)}")

    def block(name: str, cls):
        v = d.get(name)
        if v is None:
            return None
        try:
            return cls(**v)
        except TypeError as e:
            raise ValueError(f"{name}: {e}") from None

    try:
        channels = [Channel(int(c["unit"]), int(c["exponent"]), [int(s) for s in c["samples"]]) for c in d["channels"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"channels: each needs unit, exponent and samples ({e})") from None
    site = d.get("site")
    kwargs = {k: int(d[k]) for k in known - {"channels", "location", "diagnostics", "config", "site"} if k in d}
    return Record(
        channels=channels,
        location=block("location", Location),
        diagnostics=block("diagnostics", Diagnostics),
        config=block("config", Config),
        site=_site_from_json(site),
        **kwargs,
    )
