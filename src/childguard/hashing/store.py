"""Hash banks and their entries, persisted through the shared store (`childguard.store.db.Base`).

Why tombstones: a removed entry keeps its row (`removed_at`, `removed_by`) so an audit can show
what a bank contained when an item was blocked. Why no unique constraint on (bank, type, value):
a hash removed and later re-added gets a new row (both visible in history); duplicates among
*live* entries are merged in code (`BankRepository.add_entries`), which works the same on SQLite
and PostgreSQL.

Quarantine (flood guard) is a column on the entry, so it survives a restart and every replica
loading the bank sees it.

A video is one entry (`signal_type` 'vpdq', value = SHA-256 of its frame list in Meta's text
format, so the same hashes imported twice merge) whose frame hashes live in `hash_video_frames`;
its file MD5, when known, is an ordinary `md5` entry. Tombstones, quarantine and banks work on
the video entry exactly as on an image hash.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from childguard.errors import NotFound, UserError
from childguard.schema import Severity
from childguard.store.db import Base, session_factory, transaction

#: the signal type of a video entry (its frames are in `hash_video_frames`)
VPDQ = "vpdq"

#: sqlite autoincrement needs INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity
_BigId = BigInteger().with_variant(Integer(), "sqlite")


def _now() -> datetime:
    return datetime.now(UTC)


class HashBankRow(Base):
    __tablename__ = "hash_banks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    category: Mapped[str | None] = mapped_column(String(64))
    severity: Mapped[str | None] = mapped_column(String(16))
    negative: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    radius: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(256), default="local", nullable=False)
    description: Mapped[str] = mapped_column(Text, default="", nullable=False)
    added_by: Mapped[str] = mapped_column(String(128), default="system", nullable=False)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class HashEntryRow(Base):
    __tablename__ = "hash_entries"
    __table_args__ = (
        Index("ix_hash_entries_lookup", "signal_type", "value"),
        Index("ix_hash_entries_bank", "bank_id", "signal_type"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("hash_banks.id"), nullable=False)
    signal_type: Mapped[str] = mapped_column(String(16), nullable=False)
    value: Mapped[str] = mapped_column(String(64), nullable=False)
    meta: Mapped[str] = mapped_column("metadata", Text, default="{}", nullable=False)
    added_by: Mapped[str] = mapped_column(String(128), default="system", nullable=False)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    removed_by: Mapped[str | None] = mapped_column(String(128))
    quarantined_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    quarantine_reason: Mapped[str | None] = mapped_column(Text)


class HashVideoFrameRow(Base):
    """One frame hash of a video entry (vPDQ): its position in the entry, the frame number in
    the decoded stream, PDQ quality, hash and time."""

    __tablename__ = "hash_video_frames"

    entry_id: Mapped[int] = mapped_column(
        _BigId, ForeignKey("hash_entries.id"), primary_key=True, autoincrement=False)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    frame: Mapped[int] = mapped_column(Integer, nullable=False)
    quality: Mapped[int] = mapped_column(Integer, nullable=False)
    pdq: Mapped[str] = mapped_column(String(64), nullable=False)
    timestamp: Mapped[float] = mapped_column(Float, nullable=False)


@dataclass(frozen=True)
class BankInfo:
    id: int
    name: str
    category: str | None
    severity: Severity | None
    negative: bool
    enabled: bool
    radius: int | None
    source: str
    description: str
    added_by: str
    added_at: datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name, "category": self.category,
            "severity": self.severity.value if self.severity else None,
            "negative": self.negative, "enabled": self.enabled, "radius": self.radius,
            "source": self.source, "description": self.description, "added_by": self.added_by,
            "added_at": self.added_at.isoformat() if self.added_at else None,
        }


@dataclass(frozen=True)
class EntryRecord:
    """One live entry as loaded into the matcher."""

    id: int
    bank_id: int
    signal_type: str
    value: str
    quarantined: bool


@dataclass(frozen=True)
class NewEntry:
    signal_type: str
    value: str
    metadata: dict[str, str]


@dataclass(frozen=True)
class AddResult:
    added: list[int]      # ids of new rows
    merged: list[int]     # ids of existing live rows the input duplicated (metadata merged)
    added_keys: list[tuple[str, str]]  # (signal type, value) of each new row, same order

    @property
    def ids(self) -> list[int]:
        return self.added + self.merged


def _bank_info(row: HashBankRow) -> BankInfo:
    return BankInfo(
        id=row.id, name=row.name, category=row.category,
        severity=Severity(row.severity) if row.severity else None,
        negative=bool(row.negative), enabled=bool(row.enabled), radius=row.radius,
        source=row.source, description=row.description, added_by=row.added_by,
        added_at=row.added_at,
    )


class BankRepository:
    """All reads and writes of bank tables; one short transaction per call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)

    # -- banks -----------------------------------------------------------------------------
    def ensure_bank(
        self, name: str, *, category: str | None = None, severity: Severity | None = None,
        negative: bool = False, source: str = "local", added_by: str = "system",
        radius: int | None = None, description: str = "",
    ) -> tuple[BankInfo, bool]:
        """(bank, created). An existing bank is returned unchanged."""
        _check_name(name)
        with transaction(self._sessions) as s:
            row = s.scalar(select(HashBankRow).where(HashBankRow.name == name))
            if row is not None:
                return _bank_info(row), False
            row = HashBankRow(
                name=name, category=category, severity=severity.value if severity else None,
                negative=negative, enabled=True, radius=radius, source=source,
                description=description, added_by=added_by, added_at=_now(), updated_at=_now(),
            )
            s.add(row)
            s.flush()
            return _bank_info(row), True

    def list_banks(self) -> list[BankInfo]:
        with self._sessions() as s:
            return [_bank_info(r) for r in s.scalars(select(HashBankRow).order_by(HashBankRow.id))]

    def get_bank(self, name: str) -> BankInfo:
        with self._sessions() as s:
            row = s.scalar(select(HashBankRow).where(HashBankRow.name == name))
            if row is None:
                known = ", ".join(r.name for r in s.scalars(select(HashBankRow))) or "none"
                raise NotFound(f"no hash bank named {name!r}; existing banks: {known}")
            return _bank_info(row)

    def set_enabled(self, name: str, enabled: bool) -> BankInfo:
        bank = self.get_bank(name)
        with transaction(self._sessions) as s:
            s.execute(
                update(HashBankRow).where(HashBankRow.id == bank.id)
                .values(enabled=enabled, updated_at=_now())
            )
        return self.get_bank(name)

    # -- entries ---------------------------------------------------------------------------
    def add_entries(
        self, bank_id: int, entries: Sequence[NewEntry], *, added_by: str
    ) -> AddResult:
        """Insert entries, merging duplicates (within the input and with live rows)."""
        merged_input: dict[tuple[str, str], dict[str, str]] = {}
        for e in entries:
            merged_input.setdefault((e.signal_type, e.value), {}).update(e.metadata)
        added: list[int] = []
        merged: list[int] = []
        with transaction(self._sessions) as s:
            existing = self._live_rows(s, bank_id, list(merged_input))
            now = _now()
            new_rows: list[dict[str, object]] = []
            added_keys: list[tuple[str, str]] = []
            for key, meta in merged_input.items():
                row = existing.get(key)
                if row is not None:
                    if meta:
                        old = json.loads(row.meta or "{}")
                        old.update(meta)
                        row.meta = json.dumps(old, sort_keys=True)
                    merged.append(row.id)
                    continue
                added_keys.append(key)
                new_rows.append({
                    "bank_id": bank_id, "signal_type": key[0], "value": key[1],
                    "meta": json.dumps(meta, sort_keys=True), "added_by": added_by,
                    "added_at": now,
                })
            # one multi-row INSERT ... RETURNING per batch (SQLite >= 3.35 and PostgreSQL),
            # ids in input order: imports of millions of hashes stay fast
            for i in range(0, len(new_rows), 10_000):
                res = s.scalars(
                    insert(HashEntryRow).returning(
                        HashEntryRow.id, sort_by_parameter_order=True
                    ),
                    new_rows[i : i + 10_000],
                )
                added.extend(res.all())
        return AddResult(added=added, merged=merged, added_keys=added_keys)

    @staticmethod
    def _live_rows(
        s: Session, bank_id: int, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], HashEntryRow]:
        out: dict[tuple[str, str], HashEntryRow] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            values = [v for _, v in part]
            rows = s.scalars(
                select(HashEntryRow).where(
                    HashEntryRow.bank_id == bank_id,
                    HashEntryRow.removed_at.is_(None),
                    HashEntryRow.value.in_(values),
                )
            )
            wanted = set(part)
            for r in rows:
                if (r.signal_type, r.value) in wanted:
                    out[(r.signal_type, r.value)] = r
        return out

    def remove_entries(
        self, bank_id: int, keys: Iterable[tuple[str, str]], *, removed_by: str
    ) -> list[int]:
        """Tombstone the live entries with these (signal type, value); returns their ids."""
        ids: list[int] = []
        with transaction(self._sessions) as s:
            rows = self._live_rows(s, bank_id, list(dict.fromkeys(keys)))
            now = _now()
            for row in rows.values():
                row.removed_at = now
                row.removed_by = removed_by
                ids.append(row.id)
        return ids

    def add_video(
        self, bank_id: int, value: str, frames: Sequence[tuple[int, int, str, float]],
        metadata: dict[str, str], *, added_by: str,
    ) -> tuple[int, bool]:
        """One video entry and its frame hashes (frame, quality, pdq hex, seconds) in one
        transaction; (entry id, created). A live entry with the same value gets the metadata
        merged and keeps its frames."""
        with transaction(self._sessions) as s:
            live = self._live_rows(s, bank_id, [(VPDQ, value)]).get((VPDQ, value))
            if live is not None:
                if metadata:
                    old = json.loads(live.meta or "{}")
                    old.update(metadata)
                    live.meta = json.dumps(old, sort_keys=True)
                return live.id, False
            row = HashEntryRow(bank_id=bank_id, signal_type=VPDQ, value=value,
                               meta=json.dumps(metadata, sort_keys=True), added_by=added_by,
                               added_at=_now())
            s.add(row)
            s.flush()
            eid = int(row.id)
            rows = [{"entry_id": eid, "position": i, "frame": f, "quality": q, "pdq": h,
                     "timestamp": float(t)} for i, (f, q, h, t) in enumerate(frames)]
            for i in range(0, len(rows), 10_000):
                s.execute(insert(HashVideoFrameRow), rows[i : i + 10_000])
        return eid, True

    def video_frames(self, entry_ids: Sequence[int]
                     ) -> dict[int, list[tuple[int, int, str, float]]]:
        """Frame hashes of video entries, in position order."""
        out: dict[int, list[tuple[int, int, str, float]]] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(entry_ids), 500):
                q = (select(HashVideoFrameRow.entry_id, HashVideoFrameRow.frame,
                            HashVideoFrameRow.quality, HashVideoFrameRow.pdq,
                            HashVideoFrameRow.timestamp)
                     .where(HashVideoFrameRow.entry_id.in_(list(entry_ids[i : i + 500])))
                     .order_by(HashVideoFrameRow.entry_id, HashVideoFrameRow.position))
                for eid, f, qual, h, t in conn.execute(q):
                    out.setdefault(int(eid), []).append((int(f), int(qual), h, float(t)))
        return out

    def quarantine(self, entry_id: int, reason: str) -> None:
        with transaction(self._sessions) as s:
            s.execute(
                update(HashEntryRow).where(HashEntryRow.id == entry_id)
                .values(quarantined_at=_now(), quarantine_reason=reason)
            )

    def release(self, entry_id: int) -> bool:
        with transaction(self._sessions) as s:
            res = s.execute(
                update(HashEntryRow)
                .where(HashEntryRow.id == entry_id, HashEntryRow.quarantined_at.is_not(None))
                .values(quarantined_at=None, quarantine_reason=None)
            )
            return bool(getattr(res, "rowcount", 0))

    def quarantined(self) -> list[dict[str, object]]:
        with self._sessions() as s:
            q = (
                select(HashEntryRow, HashBankRow.name)
                .join(HashBankRow, HashBankRow.id == HashEntryRow.bank_id)
                .where(HashEntryRow.quarantined_at.is_not(None), HashEntryRow.removed_at.is_(None))
            )
            return [
                {"entry_id": r.id, "bank": name, "signal_type": r.signal_type,
                 "value": r.value, "quarantined_at": r.quarantined_at.isoformat()
                 if r.quarantined_at else None, "reason": r.quarantine_reason}
                for r, name in s.execute(q)
            ]

    def iter_live(self, *, after_id: int = 0, batch: int = 50_000) -> Iterator[list[EntryRecord]]:
        """Live entries in id order, in batches (streams 10M rows without holding ORM objects)."""
        last = after_id
        cols = (
            HashEntryRow.id, HashEntryRow.bank_id, HashEntryRow.signal_type, HashEntryRow.value,
            HashEntryRow.quarantined_at,
        )
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(*cols)
                    .where(HashEntryRow.id > last, HashEntryRow.removed_at.is_(None))
                    .order_by(HashEntryRow.id)
                    .limit(batch)
                ).all()
            if not rows:
                return
            yield [EntryRecord(r[0], r[1], r[2], r[3], r[4] is not None) for r in rows]
            last = rows[-1][0]

    def removed_since(self, since: datetime) -> list[int]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(
                select(HashEntryRow.id).where(HashEntryRow.removed_at >= since)
            )]

    def export_entries(self, bank_id: int) -> Iterator[tuple[str, str, dict[str, str], int]]:
        with self._sessions() as s:
            q = (
                select(HashEntryRow)
                .where(HashEntryRow.bank_id == bank_id, HashEntryRow.removed_at.is_(None))
                .order_by(HashEntryRow.id)
                .execution_options(yield_per=10_000)
            )
            for r in s.scalars(q):
                yield r.signal_type, r.value, json.loads(r.meta or "{}"), r.id

    def export_videos(self, bank_id: int) -> Iterator[
            tuple[int, str, dict[str, str], list[tuple[int, int, str, float]]]]:
        """Live video entries of a bank with their frames: (id, vpdq id, metadata, frames)."""
        with self._sessions() as s:
            rows = s.execute(
                select(HashEntryRow.id, HashEntryRow.value, HashEntryRow.meta)
                .where(HashEntryRow.bank_id == bank_id, HashEntryRow.signal_type == VPDQ,
                       HashEntryRow.removed_at.is_(None))
                .order_by(HashEntryRow.id)
            ).all()
        for i in range(0, len(rows), 200):
            part = rows[i : i + 200]
            frames = self.video_frames([r[0] for r in part])
            for eid, value, meta in part:
                yield int(eid), value, json.loads(meta or "{}"), frames.get(int(eid), [])

    def entry_meta(self, entry_ids: Sequence[int]) -> dict[int, dict[str, str]]:
        if not entry_ids:
            return {}
        with self._sessions() as s:
            rows = s.execute(
                select(HashEntryRow.id, HashEntryRow.meta).where(HashEntryRow.id.in_(entry_ids))
            )
            return {i: json.loads(m or "{}") for i, m in rows}

    def stats(self) -> list[dict[str, object]]:
        """Per bank: live / removed / quarantined counts per signal type."""
        with self._sessions() as s:
            live = s.execute(
                select(HashEntryRow.bank_id, HashEntryRow.signal_type, func.count())
                .where(HashEntryRow.removed_at.is_(None))
                .group_by(HashEntryRow.bank_id, HashEntryRow.signal_type)
            ).all()
            removed = s.execute(
                select(HashEntryRow.bank_id, func.count())
                .where(HashEntryRow.removed_at.is_not(None)).group_by(HashEntryRow.bank_id)
            ).all()
            quarantined = s.execute(
                select(HashEntryRow.bank_id, func.count())
                .where(HashEntryRow.quarantined_at.is_not(None),
                       HashEntryRow.removed_at.is_(None))
                .group_by(HashEntryRow.bank_id)
            ).all()
        banks = self.list_banks()
        out = []
        for b in banks:
            per_type = {st: int(n) for bid, st, n in live if bid == b.id}
            out.append({
                **b.as_dict(),
                "live": per_type,
                "live_total": sum(per_type.values()),
                "removed": next((int(n) for bid, n in removed if bid == b.id), 0),
                "quarantined": next((int(n) for bid, n in quarantined if bid == b.id), 0),
            })
        return out


def _check_name(name: str) -> None:
    if not name or len(name) > 128 or not all(c.isalnum() or c in "-_.:" for c in name):
        raise UserError(
            f"bank name {name!r} is not allowed; use 1-128 characters from letters, digits and "
            "'-_.:'"
        )
