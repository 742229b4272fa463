"""The hash stage the pipeline runs first: bytes in, bank matches out.

`HashService` holds every live bank entry in memory (PDQ in the multi-index `MatchIndex`, MD5 and
SHA-256 in sorted-prefix tables), persists every change through `BankRepository`, and turns hits
into a `HashCheck`:

- a hit in an enabled *positive* bank, not quarantined and not suppressed, is `decisive`: the
  pipeline blocks and reports without running models;
- a hit in an enabled *negative* bank (allowlist of known false positives) suppresses positive
  hits: a negative exact-hash hit suppresses everything; a negative PDQ hit suppresses positive
  PDQ hits, but never a positive exact (MD5/SHA-256) hit, because exact identity with a listed
  file beats perceptual similarity to an allowlisted one;
- the flood guard: an entry that matches more than `flood_max_hits` times within
  `flood_window_s` is quarantined (persisted, so every replica and restart sees it), reported as
  `HashMatch.quarantined=True` and never decisive, until a person releases it;
- a PDQ hash below `pdq_quality_min` is not used for matching (featureless images match
  everything); the check says so in `note`, and exact hashes still match.
- videos: a bank video entry ('vpdq') keeps its frame hashes in a `VideoIndex` (frames in the
  same PDQ multi-index, each under its entry); `check_video` looks up the file's exact hashes and
  matches the frames by vPDQ's rule (both match shares over the configured thresholds), with the
  same negative-bank, tombstone and flood-guard handling as images.

Entries are addressed internally by a dense row number (`gid`) so per-entry state is a few numpy
arrays, not Python objects, at 10 million entries.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from childguard.errors import DependencyError, UserError
from childguard.hashing.hashers import (
    EXACT_TYPES,
    MD5,
    PDQ,
    SHA256,
    ImageHashes,
    hash_image_bytes,
    normalize_hash,
)
from childguard.hashing.index import MatchIndex, pack_hex
from childguard.hashing.store import (
    VPDQ,
    AddResult,
    BankInfo,
    BankRepository,
    EntryRecord,
    NewEntry,
)
from childguard.hashing.video import (
    FrameHash,
    VideoHashes,
    VideoIndex,
    VideoMatch,
    format_vpdq,
    hash_video,
    video_limits,
)
from childguard.schema import HashMatch, Severity, VideoMatchInfo, VideoSegment
from childguard.settings import HashingSettings, LimitsSettings, Settings

_TYPE_CODE = {PDQ: 0, MD5: 1, SHA256: 2, VPDQ: 3}
_CODE_TYPE = {v: k for k, v in _TYPE_CODE.items()}


class HashCheck(BaseModel):
    """The result of hashing one image and looking it up in every bank."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hashes: dict[str, str]
    pdq_quality: int | None = None
    pdq_used: bool = False
    note: str = ""
    matches: tuple[HashMatch, ...] = ()
    decisive: HashMatch | None = None
    suppressed: tuple[HashMatch, ...] = ()


class _Grow:
    """A growable 1-D numpy array (amortised doubling)."""

    def __init__(self, dtype: Any, cap: int = 1024) -> None:
        self.a = np.zeros(cap, dtype=dtype)
        self.n = 0

    def extend(self, values: npt.ArrayLike) -> None:
        v = np.asarray(values, dtype=self.a.dtype).reshape(-1)
        need = self.n + v.size
        if need > self.a.size:
            b = np.zeros(max(need, 2 * self.a.size), dtype=self.a.dtype)
            b[: self.n] = self.a[: self.n]
            self.a = b
        self.a[self.n : need] = v
        self.n = need

    @property
    def view(self) -> np.ndarray:
        return self.a[: self.n]


class _ExactIndex:
    """Exact digests (MD5 or SHA-256): sorted 64-bit prefixes + full digests, plus a dict tail."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.keys = np.empty(0, np.uint64)
        self.gids = np.empty(0, np.int64)
        self.full = np.empty((0, nbytes), np.uint8)
        self.tail: dict[bytes, list[int]] = {}

    def bulk(self, digests: list[bytes], gids: npt.NDArray[np.int64]) -> None:
        if not digests:
            return
        full = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, self.nbytes)
        keys = np.ascontiguousarray(full[:, :8]).view(np.uint64).reshape(-1)
        keys = np.concatenate([self.keys, keys])
        full = np.concatenate([self.full, full])
        gids = np.concatenate([self.gids, gids])
        order = np.argsort(keys, kind="stable")
        self.keys, self.full, self.gids = keys[order], full[order], gids[order]

    def add(self, digest: bytes, gid: int) -> None:
        self.tail.setdefault(digest, []).append(gid)
        if len(self.tail) > 65_536:
            items = [(d, g) for d, gs in self.tail.items() for g in gs]
            self.tail = {}
            self.bulk([d for d, _ in items], np.array([g for _, g in items], np.int64))

    def lookup(self, digest: bytes) -> list[int]:
        out = list(self.tail.get(digest, ()))
        key = np.frombuffer(digest[:8], dtype=np.uint64)[0]
        lo = int(np.searchsorted(self.keys, key, side="left"))
        hi = int(np.searchsorted(self.keys, key, side="right"))
        want = np.frombuffer(digest, dtype=np.uint8)
        for i in range(lo, hi):
            if np.array_equal(self.full[i], want):
                out.append(int(self.gids[i]))
        return out


@dataclass(frozen=True)
class _Hit:
    gid: int
    signal_type: str
    distance: int
    video: VideoMatch | None = None


class HashService:
    """Banks, matching and the flood guard; safe to call `check` from several threads."""

    def __init__(
        self, repo: BankRepository, hashing: HashingSettings, limits: LimitsSettings,
        *, clock: Any = time.monotonic,
    ) -> None:
        self.repo = repo
        self.settings = hashing
        self.limits = limits
        self._clock = clock
        self._lock = threading.RLock()
        self._banks: dict[int, BankInfo] = {}
        self._bank_ids: dict[str, int] = {}
        # per-entry state, indexed by gid
        self._entry_id = _Grow(np.int64)
        self._key = _Grow(np.int64)  # = entry id, or the previous key for out-of-order ids
        self._bank = _Grow(np.int32)
        self._type = _Grow(np.int8)
        self._alive = _Grow(np.bool_)
        self._quarantined = _Grow(np.bool_)
        # entry id -> gid: entries arrive in id order, so `_entry_id` is sorted and searched
        # with searchsorted (no per-entry Python object at 10M); the rare out-of-order id (a
        # concurrent writer) goes to `_gid_extra`
        self._gid_extra: dict[int, int] = {}
        self._pdq = MatchIndex(design_radius=max(31, hashing.pdq_radius))
        self._exact = {MD5: _ExactIndex(16), SHA256: _ExactIndex(32)}
        self._videos = VideoIndex(distance=hashing.video_distance,
                                  quality=hashing.pdq_quality_min)
        self._hits: dict[int, deque[float]] = {}
        # highest entry id read from the store by `load`; our own adds do not advance it, so a
        # refresh also picks up lower ids other writers committed meanwhile
        self._watermark = 0
        self._loaded_at = datetime.now(UTC)

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine) -> HashService:
        """Load every bank and live entry from the store and build the in-memory index."""
        from childguard.store.migrate import migrate

        try:
            if not inspect(engine).has_table("hash_entries"):
                migrate(engine)
        except Exception as exc:  # connection refused, bad credentials, ...
            raise DependencyError(f"hash bank store unavailable: {exc}") from exc
        svc = cls(BankRepository(engine), settings.hashing, settings.limits)
        svc.load()
        return svc

    def load(self) -> None:
        """(Re)load banks and all live entries; builds the PDQ index in one bulk pass."""
        started = datetime.now(UTC)  # removals from this instant on are seen by the next refresh
        with self._lock:
            self._reload_banks()
            pdq_parts: list[np.ndarray] = []
            pdq_gids: list[int] = []
            exact: dict[str, tuple[list[bytes], list[int]]] = {MD5: ([], []), SHA256: ([], [])}
            videos: list[tuple[int, int]] = []  # (entry id, gid)
            for rows in self.repo.iter_live(after_id=self._watermark):
                self._watermark = max(self._watermark, rows[-1].id)
                last = int(self._key.a[self._key.n - 1]) if self._key.n else -1
                # skip entries this process added itself (already indexed)
                batch = [r for r in rows if r.id > last or self._gid(r.id) is None]
                gids = self._register(batch)
                vals: list[str] = []
                for rec, gid in zip(batch, gids, strict=True):
                    if rec.signal_type == PDQ:
                        vals.append(rec.value)
                        pdq_gids.append(gid)
                    elif rec.signal_type in exact:
                        exact[rec.signal_type][0].append(bytes.fromhex(rec.value))
                        exact[rec.signal_type][1].append(gid)
                    elif rec.signal_type == VPDQ:
                        videos.append((rec.id, gid))
                if vals:
                    pdq_parts.append(pack_hex(vals))
            if pdq_parts:
                packed = np.concatenate(pdq_parts)
                gids_arr = np.array(pdq_gids, np.int64)
                if len(self._pdq) == 0:
                    self._pdq = MatchIndex.build(packed, gids_arr, self._pdq.design_radius)
                else:
                    self._pdq.add(packed, gids_arr)
            for st, (digests, g) in exact.items():
                self._exact[st].bulk(digests, np.array(g, np.int64))
            if videos:
                frames = self.repo.video_frames([eid for eid, _ in videos])
                for eid, gid in videos:
                    self._videos.add(str(gid), [FrameHash(*f) for f in frames.get(eid, [])])
            self._loaded_at = started

    def refresh(self) -> None:
        """Pick up changes other processes made: new banks/flags, new entries, removals."""
        since = self._loaded_at
        self.load()
        removed = self.repo.removed_since(since)
        with self._lock:
            for eid in removed:
                gid = self._gid(eid)
                if gid is not None:
                    self._alive.a[gid] = False

    def _reload_banks(self) -> None:
        banks = self.repo.list_banks()
        self._banks = {b.id: b for b in banks}
        self._bank_ids = {b.name: b.id for b in banks}

    def _gid(self, entry_id: int) -> int | None:
        if entry_id in self._gid_extra:
            return self._gid_extra[entry_id]
        keys = self._key.view
        i = int(np.searchsorted(keys, entry_id))
        if i < keys.size and int(self._entry_id.a[i]) == entry_id:
            return i
        return None

    def _register(self, records: Sequence[EntryRecord]) -> list[int]:
        """Give new entries a gid (dense row); returns the gid of every record."""
        if not records:
            return []
        ids = np.fromiter((r.id for r in records), np.int64, len(records))
        last = int(self._key.a[self._key.n - 1]) if self._key.n else -1
        if ids[0] > last and (ids.size == 1 or bool(np.all(np.diff(ids) > 0))):
            start = self._entry_id.n  # fast path: all new, in id order (bulk load, adds)
            self._entry_id.extend(ids)
            self._key.extend(ids)
            self._bank.extend([r.bank_id for r in records])
            self._type.extend([_TYPE_CODE[r.signal_type] for r in records])
            self._alive.extend(np.ones(ids.size, np.bool_))
            self._quarantined.extend([r.quarantined for r in records])
            return list(range(start, start + ids.size))
        out: list[int] = []
        for r in records:
            gid = self._gid(r.id)
            if gid is None:
                gid = self._entry_id.n
                last = int(self._key.a[gid - 1]) if gid else -1
                if r.id <= last:  # out of order: keep `_key` sorted, remember it aside
                    self._gid_extra[r.id] = gid
                    self._key.extend([last])
                else:
                    self._key.extend([r.id])
                self._entry_id.extend([r.id])
                self._bank.extend([r.bank_id])
                self._type.extend([_TYPE_CODE[r.signal_type]])
                self._alive.extend([True])
                self._quarantined.extend([r.quarantined])
            out.append(gid)
        return out

    # -- banks ------------------------------------------------------------------------------------
    def ensure_bank(
        self, name: str, *, category: str | None = None, severity: Severity | None = None,
        negative: bool = False, source: str = "local", added_by: str = "system",
        radius: int | None = None, description: str = "",
    ) -> None:
        if radius is not None and not 0 <= radius <= 128:
            raise UserError(f"bank radius must be between 0 and 128 bits; received {radius}")
        self.repo.ensure_bank(
            name, category=category, severity=severity, negative=negative, source=source,
            added_by=added_by, radius=radius, description=description,
        )
        with self._lock:
            self._reload_banks()

    def set_enabled(self, name: str, enabled: bool) -> BankInfo:
        info = self.repo.set_enabled(name, enabled)
        with self._lock:
            self._reload_banks()
        return info

    def banks(self) -> list[BankInfo]:
        return list(self._banks.values())

    def bank(self, name: str) -> BankInfo:
        bid = self._bank_ids.get(name)
        if bid is None:
            return self.repo.get_bank(name)  # raises NotFound with the list of banks
        return self._banks[bid]

    # -- entries --------------------------------------------------------------------------------
    def hash_bytes(self, data: bytes) -> ImageHashes:
        return hash_image_bytes(data, self.limits, dihedral=self.settings.dihedral)

    def entries_for(self, data: bytes) -> tuple[list[NewEntry], ImageHashes]:
        """The bank entries an image contributes: MD5, SHA-256, and PDQ if its quality is ok."""
        h = hash_image_bytes(data, self.limits)
        out = [NewEntry(MD5, h.md5, {}), NewEntry(SHA256, h.sha256, {})]
        if h.pdq is not None and (h.pdq_quality or 0) >= self.settings.pdq_quality_min:
            out.append(NewEntry(PDQ, h.pdq, {}))
        return out, h

    def add_bytes(
        self, bank: str, data: bytes, *, added_by: str, metadata: dict[str, str] | None = None
    ) -> list[str]:
        """Hash an image into a bank; returns entry ids. Matchable when this returns."""
        entries, _ = self.entries_for(data)
        meta = dict(metadata or {})
        result = self.add_hashes(
            bank, [NewEntry(e.signal_type, e.value, meta) for e in entries], added_by=added_by
        )
        return [str(i) for i in result.ids]

    def add_hashes(self, bank: str, entries: Sequence[NewEntry], *, added_by: str) -> AddResult:
        """Add validated hashes (duplicates merged) and make them matchable immediately."""
        info = self.bank(bank)
        clean = [NewEntry(e.signal_type, normalize_hash(e.signal_type, e.value), e.metadata)
                 for e in entries]
        result = self.repo.add_entries(info.id, clean, added_by=added_by)
        if result.added:
            self._index_new(
                [EntryRecord(eid, info.id, st, v, False)
                 for eid, (st, v) in zip(result.added, result.added_keys, strict=True)]
            )
        return result

    def add_video(
        self, bank: str, video: VideoHashes | Sequence[FrameHash], *, added_by: str,
        metadata: dict[str, str] | None = None,
    ) -> list[str]:
        """A video into a bank: its vPDQ frames as one entry, and its file MD5 and SHA-256 when
        `video` is a decoded file (a hash list has no file hashes). Returns entry ids;
        matchable when this returns."""
        frames = video.frames if isinstance(video, VideoHashes) else tuple(video)
        if not frames:
            raise UserError("a video entry needs at least one frame hash")
        info = self.bank(bank)
        meta = {"media": "video", **(metadata or {})}
        value = video_entry_id(frames)
        eid, created = self.repo.add_video(
            info.id, value, [(f.frame, f.quality, f.pdq, f.timestamp) for f in frames], meta,
            added_by=added_by)
        ids = [str(eid)]
        if created:
            with self._lock:
                gid = self._register([EntryRecord(eid, info.id, VPDQ, value, False)])[0]
                self._videos.add(str(gid), frames)
        if isinstance(video, VideoHashes):
            res = self.add_hashes(bank, [NewEntry(MD5, video.md5, meta),
                                         NewEntry(SHA256, video.sha256, meta)],
                                  added_by=added_by)
            ids += [str(i) for i in res.ids]
        return ids

    def hash_video_bytes(self, data: bytes | Path, *, keyframes: int = 0) -> VideoHashes:
        """Decode and hash a video (bytes or a file) as the pipeline does (settings' sampling
        and limits)."""
        return hash_video(data, seconds_per_hash=self.settings.video_seconds_per_hash,
                          limits=video_limits(self.limits), keyframes=keyframes)

    def add_video_bytes(self, bank: str, data: bytes, *, added_by: str,
                        metadata: dict[str, str] | None = None) -> list[str]:
        """Hash a video into a bank (vPDQ entry + file MD5 / SHA-256); returns entry ids."""
        return self.add_video(bank, self.hash_video_bytes(data), added_by=added_by,
                              metadata=metadata)

    def remove_video_bytes(self, bank: str, data: bytes, *, removed_by: str) -> int:
        """Tombstone what a video contributed to a bank; returns how many entries."""
        v = self.hash_video_bytes(data)
        value = video_entry_id(v.frames)
        return self.remove_hashes(bank, [(VPDQ, value), (MD5, v.md5), (SHA256, v.sha256)],
                                  removed_by=removed_by)

    def _index_new(self, records: list[EntryRecord]) -> None:
        with self._lock:
            gids = self._register(records)
            pdq = [(r.value, g) for r, g in zip(records, gids, strict=True) if r.signal_type == PDQ]
            if pdq:
                self._pdq.add(pack_hex([v for v, _ in pdq]), np.array([g for _, g in pdq]))
            for r, g in zip(records, gids, strict=True):
                if r.signal_type in EXACT_TYPES:
                    self._exact[r.signal_type].add(bytes.fromhex(r.value), g)

    def remove_bytes(self, bank: str, data: bytes, *, removed_by: str) -> int:
        """Tombstone the entries this image contributed to a bank; returns how many."""
        entries, h = self.entries_for(data)
        keys = [(e.signal_type, e.value) for e in entries]
        if h.pdq is not None and (PDQ, h.pdq) not in keys:
            keys.append((PDQ, h.pdq))
        return self.remove_hashes(bank, keys, removed_by=removed_by)

    def remove_hashes(
        self, bank: str, keys: Sequence[tuple[str, str]], *, removed_by: str
    ) -> int:
        info = self.bank(bank)
        clean = [(st, _normalize_entry(st, v)) for st, v in keys]
        ids = self.repo.remove_entries(info.id, clean, removed_by=removed_by)
        with self._lock:
            for eid in ids:
                gid = self._gid(eid)
                if gid is not None:
                    self._alive.a[gid] = False
        return len(ids)

    def release(self, entry_id: int) -> bool:
        """Lift a flood-guard quarantine after a person has looked at the entry."""
        ok = self.repo.release(entry_id)
        with self._lock:
            gid = self._gid(entry_id)
            if gid is not None:
                self._quarantined.a[gid] = False
                self._hits.pop(gid, None)
        return ok

    def stats(self) -> dict[str, Any]:
        return {
            "entries_in_memory": int(self._alive.view.sum()),
            "pdq_indexed": len(self._pdq),
            "pdq_segments": [s.n for s in self._pdq.segments],
            "pdq_index_bytes": self._pdq.nbytes(),
            "videos_indexed": len(self._videos),
            "video_frames_indexed": self._videos.frames,
            "banks": self.repo.stats(),
        }

    # -- matching ---------------------------------------------------------------------------------
    def check(self, data: bytes) -> HashCheck:
        """Hash an image and look it up in every enabled bank."""
        h = self.hash_bytes(data)
        return self.check_hashes(h)

    def check_hashes(self, h: ImageHashes) -> HashCheck:
        hashes = h.as_dict()
        notes: list[str] = []
        hits: list[_Hit] = []
        for st in EXACT_TYPES:
            for gid in self._exact[st].lookup(bytes.fromhex(hashes[st])):
                hits.append(_Hit(gid, st, 0))
        pdq_used = False
        if h.pdq is not None:
            q = h.pdq_quality or 0
            if q < self.settings.pdq_quality_min:
                notes.append(
                    f"PDQ quality {q} is below the minimum {self.settings.pdq_quality_min}; "
                    "PDQ not used for matching (exact hashes only)"
                )
            else:
                pdq_used = True
                hits.extend(self._pdq_hits(h))
        matches, decisive, suppressed = self._settle(hits, notes, perceptual=PDQ)
        if self.settings.dihedral and pdq_used:
            notes.append("dihedral matching on")
        return HashCheck(
            hashes=hashes, pdq_quality=h.pdq_quality, pdq_used=pdq_used, note="; ".join(notes),
            matches=tuple(matches), decisive=decisive, suppressed=suppressed,
        )

    def check_video(self, v: VideoHashes) -> HashCheck:
        """A decoded video against every enabled bank: file MD5 / SHA-256 exactly, frames by
        vPDQ's rule. Negative banks, tombstones and the flood guard as for images."""
        hashes = {MD5: v.md5, SHA256: v.sha256}
        hits: list[_Hit] = []
        for st in EXACT_TYPES:
            for gid in self._exact[st].lookup(bytes.fromhex(hashes[st])):
                hits.append(_Hit(gid, st, 0))
        good = sum(f.quality >= self.settings.pdq_quality_min for f in v.frames)
        notes = [f"{good} of {len(v.frames)} frame hashes have quality >= "
                 f"{self.settings.pdq_quality_min}"]
        with self._lock:
            found = self._videos.search(v.frames, query_pct=self.settings.video_query_match_pct,
                                        target_pct=self.settings.video_target_match_pct)
        for video_id, m in found:
            share = min(m.query_match_pct, m.target_match_pct)
            hits.append(_Hit(int(video_id), VPDQ, max(0, round(100 - share)), m))
        matches, decisive, suppressed = self._settle(hits, notes, perceptual=VPDQ)
        return HashCheck(
            hashes=hashes, pdq_quality=None, pdq_used=good > 0, note="; ".join(notes),
            matches=tuple(matches), decisive=decisive, suppressed=suppressed,
        )

    def _settle(self, hits: list[_Hit], notes: list[str], *, perceptual: str
                ) -> tuple[list[HashMatch], HashMatch | None, tuple[HashMatch, ...]]:
        """Hits -> (matches, the decisive one, the suppressed ones), the same for images and
        videos: a negative exact hit suppresses every positive hit, a negative perceptual hit
        (`perceptual`: pdq or vpdq) the positive perceptual ones; quarantined entries are
        never decisive."""
        matches = self._to_matches(hits)
        positive = [m for m in matches if not m.negative]
        negative = [m for m in matches if m.negative]
        neg_exact = any(m.signal_type in EXACT_TYPES for m in negative)
        suppressed = tuple(m for m in positive
                           if neg_exact or (negative and m.signal_type == perceptual))
        if suppressed:
            notes.append(f"{len(suppressed)} positive match(es) suppressed by a negative bank")
        candidates = [m for m in positive if m not in suppressed and not m.quarantined]
        if any(m.quarantined for m in positive):
            notes.append("quarantined entries matched (flood guard); not decisive")
        return matches, min(candidates, key=_decisive_rank, default=None), suppressed

    def _pdq_hits(self, h: ImageHashes) -> list[_Hit]:
        queries = list(h.pdq_dihedral) if self.settings.dihedral and h.pdq_dihedral else []
        if h.pdq is not None and h.pdq not in queries:
            queries.insert(0, h.pdq)
        radius = self._max_radius()
        _, gids, dist = self._pdq.search(pack_hex(queries), radius)
        best: dict[int, int] = {}
        for g, d in zip(gids.tolist(), dist.tolist(), strict=True):
            if d < best.get(g, 1 << 30):
                best[g] = d
        return [_Hit(g, PDQ, d) for g, d in best.items()]

    def _radius_of(self, bank: BankInfo) -> int:
        return self.settings.pdq_radius if bank.radius is None else bank.radius

    def _max_radius(self) -> int:
        radii = [self._radius_of(b) for b in self._banks.values() if b.enabled]
        return max(radii, default=self.settings.pdq_radius)

    def _to_matches(self, hits: list[_Hit]) -> list[HashMatch]:
        out: list[HashMatch] = []
        with self._lock:
            for hit in hits:
                g = hit.gid
                if not self._alive.a[g]:
                    continue
                bank = self._banks.get(int(self._bank.a[g]))
                if bank is None or not bank.enabled:
                    continue
                if hit.signal_type == PDQ and hit.distance > self._radius_of(bank):
                    continue
                quarantined = bool(self._quarantined.a[g]) or self._flood(g, bank)
                out.append(HashMatch(
                    bank=bank.name, signal_type=hit.signal_type, distance=hit.distance,
                    entry_id=str(int(self._entry_id.a[g])), category=bank.category,
                    severity=bank.severity, negative=bank.negative, quarantined=quarantined,
                    video=_video_info(hit.video) if hit.video is not None else None,
                ))
        out.sort(key=lambda m: (m.negative, m.distance, m.bank, str(m.entry_id)))
        return out

    def _flood(self, gid: int, bank: BankInfo) -> bool:
        """Count a hit; quarantine the entry when its hit rate exceeds the flood limit."""
        if bank.negative:
            return False
        now = self._clock()
        window = self.settings.flood_window_s
        limit = self.settings.flood_max_hits
        q = self._hits.setdefault(gid, deque(maxlen=limit + 1))
        q.append(now)
        while q and q[0] < now - window:
            q.popleft()
        if len(q) <= limit:
            return False
        self._quarantined.a[gid] = True
        eid = int(self._entry_id.a[gid])
        self.repo.quarantine(
            eid, f"flood guard: more than {limit} matches within {window:g} s"
        )
        return True

    def entry_metadata(self, entry_ids: Sequence[str | int]) -> dict[str, dict[str, str]]:
        meta = self.repo.entry_meta([int(e) for e in entry_ids])
        return {str(k): v for k, v in meta.items()}


def video_entry_id(frames: Sequence[FrameHash]) -> str:
    """A video entry's value: SHA-256 of its frames in Meta's text format (the same frames
    imported twice are one entry)."""
    return hashlib.sha256(format_vpdq(frames).encode()).hexdigest()


def _normalize_entry(signal_type: str, value: str) -> str:
    """An entry key's value: a hash (`normalize_hash`) or a video entry's 64-hex content id."""
    if signal_type.strip().lower() != VPDQ:
        return normalize_hash(signal_type, value)
    v = value.strip().lower()
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise ValueError("a video entry (vpdq) is named by its 64-hex-digit id; received "
                         f"{len(v)} characters")
    return v


def _video_info(m: VideoMatch) -> VideoMatchInfo:
    return VideoMatchInfo(
        query_match_pct=m.query_match_pct, target_match_pct=m.target_match_pct,
        segments=tuple(VideoSegment(query_start=s.query_start, query_end=s.query_end,
                                    target_start=s.target_start, target_end=s.target_end)
                       for s in m.segments))


def _decisive_rank(m: HashMatch) -> tuple[int, int, int]:
    sev = m.severity.rank if m.severity is not None else -1
    return (-sev, 0 if m.signal_type in EXACT_TYPES else 1, m.distance)

