"""Reading and writing hash lists: one-hash-per-line text, HMA/ThreatExchange CSV, NCMEC MD5 lists.

Parsing is separate from storing so an import is all-or-nothing: `parse_hash_list` validates
every line first and returns the good entries plus every bad line with its number; the caller
imports only when there are no errors, or when asked to skip them (`--skip-invalid`).

CSV columns follow HMA / ThreatExchange exports: a signal-type column (`signal_type`, `type`,
`hash_type`, `indicator_type`) and a value column (`signal_value`, `signal`, `hash`, `value`,
`indicator`); every other non-empty column becomes entry metadata. Type names such as
`pdq`, `hash_pdq`, `photo_md5` are accepted (see `hashers.SIGNAL_ALIASES`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

from childguard.hashing.hashers import (
    MD5,
    canonical_signal_type,
    guess_signal_type,
    normalize_hash,
)
from childguard.hashing.store import NewEntry

Format = Literal["auto", "text", "csv", "ncmec"]
FORMATS: tuple[str, ...] = ("auto", "text", "csv", "ncmec")

_TYPE_COLUMNS = ("signal_type", "type", "hash_type", "indicator_type", "signaltype")
_VALUE_COLUMNS = ("signal_value", "signal", "hash", "value", "indicator", "hash_value")


@dataclass(frozen=True)
class BadLine:
    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ParseResult:
    entries: list[NewEntry] = field(default_factory=list)
    errors: list[BadLine] = field(default_factory=list)
    lines: int = 0


def detect_format(path: Path | None, fmt: Format) -> Format:
    if fmt != "auto":
        return fmt
    if path is not None and path.suffix.lower() in (".csv", ".tsv"):
        return "csv"
    return "text"


def parse_hash_list(
    stream: TextIO, fmt: Format = "auto", *, signal_type: str | None = None,
    path: Path | None = None,
) -> ParseResult:
    """Validate a whole list. `signal_type` is the default for rows that do not name one."""
    fmt = detect_format(path, fmt)
    default_type = canonical_signal_type(signal_type) if signal_type else None
    if fmt == "csv":
        return _parse_csv(stream, default_type)
    if fmt == "ncmec":
        return _parse_lines(stream, default_type or MD5)
    return _parse_lines(stream, default_type)


def _parse_lines(stream: TextIO, default_type: str | None) -> ParseResult:
    res = ParseResult()
    for lineno, raw in enumerate(stream, start=1):
        res.lines = lineno
        text = raw.strip().lstrip("\ufeff")
        if not text or text.startswith("#"):
            continue
        # "hash", "hash,quality", "hash<TAB>name": the hash is the first field
        token = text.replace(",", " ").replace("\t", " ").split()[0]
        try:
            st = default_type or guess_signal_type(token)
            value = normalize_hash(st, token)
        except ValueError as exc:
            res.errors.append(BadLine(lineno, text[:80], str(exc)))
            continue
        res.entries.append(NewEntry(st, value, {}))
    return res


def _parse_csv(stream: TextIO, default_type: str | None) -> ParseResult:
    res = ParseResult()
    sample = stream.read()
    if not sample.strip():
        return res
    dialect: type[csv.Dialect] | csv.Dialect
    try:
        dialect = csv.Sniffer().sniff(sample.splitlines()[0], delimiters=",\t;")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(sample.lstrip("\ufeff")), dialect)
    header = next(reader, None)
    if header is None:
        return res
    cols = [h.strip().lower() for h in header]
    type_col = next((cols.index(c) for c in _TYPE_COLUMNS if c in cols), None)
    value_col = next((cols.index(c) for c in _VALUE_COLUMNS if c in cols), None)
    if value_col is None:
        res.errors.append(BadLine(
            1, ",".join(header)[:80],
            f"CSV header has no hash column; expected one of {', '.join(_VALUE_COLUMNS)} "
            f"(and optionally a type column: {', '.join(_TYPE_COLUMNS)})",
        ))
        return res
    for lineno, row in enumerate(reader, start=2):
        res.lines = lineno
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= value_col:
            res.errors.append(BadLine(lineno, ",".join(row)[:80], "row has no hash value"))
            continue
        value_raw = row[value_col]
        try:
            if type_col is not None and len(row) > type_col and row[type_col].strip():
                st = canonical_signal_type(row[type_col])
            else:
                st = default_type or guess_signal_type(value_raw)
            value = normalize_hash(st, value_raw)
        except ValueError as exc:
            res.errors.append(BadLine(lineno, ",".join(row)[:80], str(exc)))
            continue
        meta = {
            header[i].strip(): cell.strip()
            for i, cell in enumerate(row)
            if i not in (type_col, value_col) and i < len(header) and cell.strip()
        }
        res.entries.append(NewEntry(st, value, meta))
    return res


def write_hash_list(
    out: TextIO, rows: Iterable[tuple[str, str, dict[str, str], int]], fmt: Format,
    *, signal_type: str | None = None,
) -> int:
    """Write (signal type, value, metadata, entry id) rows; returns how many were written.

    text/ncmec: one value per line (filtered to `signal_type` if given); csv: `signal_type,
    signal_value,entry_id` plus one column per metadata key.
    """
    n = 0
    st_filter = canonical_signal_type(signal_type) if signal_type else None
    if fmt in ("text", "ncmec", "auto"):
        for st, value, _, _ in rows:
            if st_filter and st != st_filter:
                continue
            out.write(value + "\n")
            n += 1
        return n
    materialised = [r for r in rows if not st_filter or r[0] == st_filter]
    keys = sorted({k for _, _, meta, _ in materialised for k in meta})
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["signal_type", "signal_value", "entry_id", *keys])
    for st, value, meta, eid in materialised:
        w.writerow([st, value, eid, *(meta.get(k, "") for k in keys)])
        n += 1
    return n


def iter_errors(errors: list[BadLine], limit: int = 50) -> Iterator[str]:
    for e in errors[:limit]:
        yield str(e)
    if len(errors) > limit:
        yield f"... and {len(errors) - limit} more bad lines"
