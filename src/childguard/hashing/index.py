"""Exact Hamming-radius search over 256-bit PDQ hashes, built for tens of millions of entries.

Why multi-index hashing (Norouzi et al.): split the 256 bits into `m` chunks. If two hashes are
within distance `r`, then by pigeonhole at least one chunk differs in at most `r // m` bits. So
for every chunk we look up the query's chunk value and all values within `r // m` flips of it,
collect the entries in those buckets as candidates, and verify each candidate with a full
256-bit popcount. Nothing within the radius can be missed (recall 1.0 by construction), and the
verification step drops everything outside it (precision 1.0).

Layout (numpy only, no Python loop per entry or per candidate):
- `hashes`: (n, 4) uint64, the packed hashes of one segment.
- per chunk, the entries sorted by chunk value (`order`, uint32) and bucket boundaries
  (`starts`); all chunks are concatenated so a whole batch of queries, over all chunks, is a
  handful of vectorised numpy calls.
- the chunking is chosen per segment by a cost model (probes vs. candidates, memory cap): 16 x
  16-bit chunks for small segments, about 11 x 23-bit chunks at 10 million.

Incremental adds (`MatchIndex`): new hashes land in a brute-force tail, matchable as soon as
`add` returns; a full tail becomes a new segment, and segments of similar size are merged
(log-structured), so no add ever triggers a rebuild of the big segment unless the small ones
have grown to its size. Deletions are a caller-side `alive` mask (tombstones).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

BITS = 256
WORDS = BITS // 64
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount_rows(x: U64, *, inplace: bool = False) -> U64:
    """Number of set bits of each row of an (..., 4) uint64 array (as uint64).

    Counting in place and adding the four word columns is about 3x faster than
    `bitwise_count(x).sum(axis=-1)` (a reduction over a length-4 axis is slow in numpy).
    """
    y = x if inplace else x.copy()
    if hasattr(np, "bitwise_count"):
        np.bitwise_count(y, out=y)
    else:  # pragma: no cover - numpy < 2
        y[...] = _POP8[y.view(np.uint8)].reshape(*y.shape, 8).sum(axis=-1)
    out: U64 = y[..., 0] + y[..., 1]
    out += y[..., 2]
    out += y[..., 3]
    return out


def pack_hex(values: Sequence[str]) -> U64:
    """Hex strings (64 hex digits each) -> (n, 4) uint64. Raises ValueError on bad input."""
    raw = b"".join(bytes.fromhex(v) for v in values)
    if len(raw) != 32 * len(values):
        raise ValueError("every PDQ hash must be 64 hex digits")
    return np.frombuffer(raw, dtype=np.uint64).reshape(len(values), WORDS).copy()


def unpack_hex(packed: U64) -> list[str]:
    """(n, 4) uint64 -> hex strings (inverse of `pack_hex`)."""
    arr = np.ascontiguousarray(packed, dtype=np.uint64)
    raw = arr.tobytes()
    return [raw[i : i + 32].hex() for i in range(0, len(raw), 32)]


def hamming(a: U64, b: U64) -> U64:
    """Row-wise Hamming distance of two broadcastable (..., 4) uint64 arrays."""
    return popcount_rows(np.bitwise_xor(a, b), inplace=True)


# -- chunking ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunking:
    widths: tuple[int, ...]
    radius: int  # per-chunk search radius = design radius // m

    @property
    def m(self) -> int:
        return len(self.widths)

    @property
    def offsets(self) -> tuple[int, ...]:
        return tuple(itertools.accumulate((0, *self.widths[:-1])))

    def probes(self) -> int:
        return sum(_ball(b, self.radius) for b in self.widths)

    def candidates(self, n: int) -> float:
        return float(sum(_ball(b, self.radius) * n / 2**b for b in self.widths))

    def table_size(self) -> int:
        return sum(2**b for b in self.widths)


def _ball(bits: int, radius: int) -> int:
    return sum(math.comb(bits, k) for k in range(radius + 1))


def _even_widths(m: int) -> tuple[int, ...]:
    base, extra = divmod(BITS, m)
    return tuple(base + 1 if i < extra else base for i in range(m))


MAX_CHUNK_BITS = 24
_BLOCK_WORK = 65_536


def choose_chunking(n: int, radius: int) -> Chunking:
    """Pick the chunk count with the lowest estimated cost (probes + candidates).

    A candidate (random 32-byte gather + popcount) measured about 1.5x the cost of a probe (two
    reads of the bucket table), hence the weights (at 1M: 12 chunks ~6,200 lookups per CPU-second,
    16 chunks ~4,400, 11 chunks ~4,600). Bucket tables are capped at 40 uint32 slots per entry
    (160 bytes, at least 4 MB) so memory stays linear in the number of hashes.
    """
    table_cap = max(2**20, 40 * n)  # uint32 slots
    best: tuple[float, Chunking] | None = None
    for m in range(max(1, math.ceil(BITS / MAX_CHUNK_BITS)), 65):
        widths = _even_widths(m)
        if max(widths) > MAX_CHUNK_BITS:
            continue
        ch = Chunking(widths, radius // m)
        if ch.table_size() > table_cap:
            continue
        cost = ch.probes() * 1.0 + ch.candidates(n) * 1.5 + 40 * m
        if best is None or cost < best[0]:
            best = (cost, ch)
    if best is None:  # pragma: no cover - m=64 (4-bit chunks) always fits
        raise RuntimeError("no chunking fits")
    return best[1]


def chunk_column(packed: U64, off: int, width: int) -> I64:
    """Bits [off, off+width) of each hash as int64 (bit j is bit j%64 of word j//64)."""
    word, shift = divmod(off, 64)
    val = packed[:, word] >> np.uint64(shift)
    if shift + width > 64:
        val = val | (packed[:, word + 1] << np.uint64(64 - shift))
    return (val & np.uint64((1 << width) - 1)).astype(np.int64)


def chunk_values(packed: U64, chunking: Chunking) -> I64:
    """(n, 4) uint64 -> (n, m) int64 chunk values."""
    out = np.empty((packed.shape[0], chunking.m), dtype=np.int64)
    for c, (off, width) in enumerate(zip(chunking.offsets, chunking.widths, strict=True)):
        out[:, c] = chunk_column(packed, off, width)
    return out


def _chunk_weights(chunking: Chunking) -> I64:
    """(256, m) matrix W with bits @ W == chunk values (used for small query batches)."""
    w = np.zeros((BITS, chunking.m), dtype=np.int64)
    for c, (off, width) in enumerate(zip(chunking.offsets, chunking.widths, strict=True)):
        w[off : off + width, c] = 1 << np.arange(width, dtype=np.int64)
    return w


def query_chunk_values(queries: U64, chunking: Chunking, weights: I64) -> I64:
    if queries.shape[0] > 256:
        return chunk_values(queries, chunking)
    bits = np.unpackbits(
        np.ascontiguousarray(queries).view(np.uint8), axis=1, bitorder="little"
    ).astype(np.int64)
    return bits @ weights


def _argsort_u32(col: I64, width: int) -> npt.NDArray[np.intp]:
    """Stable argsort of values < 2**width via 16-bit radix passes (numpy radix-sorts uint16)."""
    if width <= 16:
        return np.argsort(col.astype(np.uint16), kind="stable")
    lo = (col & 0xFFFF).astype(np.uint16)
    order = np.argsort(lo, kind="stable")
    hi = (col[order] >> 16).astype(np.uint16)
    return order[np.argsort(hi, kind="stable")]


def _flip_masks(width: int, radius: int) -> list[int]:
    masks = [0]
    for k in range(1, radius + 1):
        for bits in itertools.combinations(range(width), k):
            masks.append(sum(1 << b for b in bits))
    return masks


# -- one immutable segment ----------------------------------------------------------------------


class Segment:
    """An immutable multi-index over `n` packed hashes, exact for radius <= `design_radius`."""

    def __init__(self, packed: U64, gids: I64, design_radius: int) -> None:
        self.hashes = np.ascontiguousarray(packed, dtype=np.uint64)
        self.gids = np.ascontiguousarray(gids, dtype=np.int64)
        self.n = int(self.hashes.shape[0])
        self.design_radius = design_radius
        self.chunking = choose_chunking(self.n, design_radius)
        ch = self.chunking
        bases = np.array([0, *itertools.accumulate(2**b for b in ch.widths)], dtype=np.int64)
        pos_dtype = np.uint32 if ch.m * self.n < 2**32 else np.int64
        self.order = np.empty(ch.m * self.n, dtype=np.uint32)
        self.starts = np.empty(int(bases[-1]) + 1, dtype=pos_dtype)
        for c in range(ch.m):
            col = chunk_column(self.hashes, ch.offsets[c], ch.widths[c])
            srt = _argsort_u32(col, ch.widths[c])
            self.order[c * self.n : (c + 1) * self.n] = srt
            counts = np.bincount(col, minlength=2 ** ch.widths[c])
            st = self.starts[bases[c] : bases[c + 1]]
            st[0] = c * self.n
            np.cumsum(counts[:-1], out=st[1:])
            st[1:] += np.asarray(c * self.n, dtype=st.dtype)  # type: ignore[misc]
        self.starts[-1] = ch.m * self.n
        masks: list[int] = []
        mask_chunk: list[int] = []
        for c, width in enumerate(ch.widths):
            fm = _flip_masks(width, ch.radius)
            masks.extend(fm)
            mask_chunk.extend([c] * len(fm))
        self.masks = np.array(masks, dtype=np.int64)
        self.mask_chunk = np.array(mask_chunk, dtype=np.intp)
        self.mask_base = bases[:-1][self.mask_chunk]
        self.weights = _chunk_weights(ch)
        self.work_per_query = float(ch.probes() + ch.candidates(self.n))

    def nbytes(self) -> int:
        return int(
            self.hashes.nbytes + self.gids.nbytes + self.order.nbytes + self.starts.nbytes
            + self.masks.nbytes * 3
        )

    def search(self, queries: U64, radius: int) -> tuple[I64, I64, npt.NDArray[np.int32]]:
        """All (query row, gid, distance) with distance <= radius. Pairs are unique."""
        if radius > self.design_radius:
            return self._brute(queries, radius)
        # Keep temporaries around a few MB: big fresh arrays cost more in page faults than the
        # work itself, small ones are recycled by the allocator.
        step = max(1, int(_BLOCK_WORK // self.work_per_query))
        if queries.shape[0] > step:
            parts = [self._search(queries[i : i + step], radius) for i in
                     range(0, queries.shape[0], step)]
            outs = [(p[0] + i * step, p[1], p[2]) for i, p in enumerate(parts)]
            return (np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]),
                    np.concatenate([o[2] for o in outs]))
        return self._search(queries, radius)

    def _search(self, queries: U64, radius: int) -> tuple[I64, I64, npt.NDArray[np.int32]]:
        qv = query_chunk_values(queries, self.chunking, self.weights)  # (Q, m)
        keys = (qv[:, self.mask_chunk] ^ self.masks) + self.mask_base  # (Q, P)
        keys = keys.ravel()
        lo = self.starts.take(keys).astype(np.int64)
        keys += 1
        cnt = self.starts.take(keys).astype(np.int64)
        cnt -= lo
        # expand every bucket [lo, lo+cnt) into positions; empty buckets expand to nothing
        ends = np.cumsum(cnt)
        total = int(ends[-1])
        if total == 0:
            return _empty()
        lo -= ends
        lo += cnt
        pos = np.repeat(lo, cnt)
        pos += np.arange(total, dtype=np.int64)
        cand = self.order.take(pos)
        x = self.hashes.take(cand, axis=0)
        single = queries.shape[0] == 1
        if single:
            np.bitwise_xor(x, queries[0], out=x)
        else:
            cq = np.repeat(np.arange(keys.size, dtype=np.int64) // self.masks.size, cnt)
            np.bitwise_xor(x, queries.take(cq, axis=0), out=x)
        dist = popcount_rows(x, inplace=True)
        keep = np.flatnonzero(dist <= radius)
        if keep.size == 0:
            return _empty()
        qk = np.zeros(keep.size, np.int64) if single else cq[keep]
        return _unique(qk, self.gids[cand[keep]], dist[keep].astype(np.int32))

    def _brute(self, queries: U64, radius: int) -> tuple[I64, I64, npt.NDArray[np.int32]]:
        return brute_force(self.hashes, self.gids, queries, radius)


def _empty() -> tuple[I64, I64, npt.NDArray[np.int32]]:
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int32)


def _unique(
    q: I64, g: I64, d: npt.NDArray[np.int32]
) -> tuple[I64, I64, npt.NDArray[np.int32]]:
    q = q.astype(np.int64)
    g = g.astype(np.int64)
    if q.size <= 1:
        return q, g, d
    key = q * (int(g.max()) + 1) + g
    _, idx = np.unique(key, return_index=True)
    return q[idx], g[idx], d[idx]


def brute_force(
    hashes: U64, gids: I64, queries: U64, radius: int, block: int = 1 << 18
) -> tuple[I64, I64, npt.NDArray[np.int32]]:
    """Reference search: every query against every hash, in row blocks to bound memory."""
    out_q, out_g, out_d = [], [], []
    n = hashes.shape[0]
    if n == 0 or queries.shape[0] == 0:
        return _empty()
    buf = np.empty((min(block, n), WORDS), np.uint64)
    for s in range(0, n, block):
        part = hashes[s : s + block]
        b = buf[: part.shape[0]]
        for qi in range(queries.shape[0]):
            np.bitwise_xor(part, queries[qi], out=b)
            dist = popcount_rows(b, inplace=True)
            hi = np.flatnonzero(dist <= radius)
            if hi.size:
                out_q.append(np.full(hi.size, qi, np.int64))
                out_g.append(gids[s + hi])
                out_d.append(dist[hi].astype(np.int32))
    if not out_q:
        return _empty()
    return np.concatenate(out_q), np.concatenate(out_g), np.concatenate(out_d)


# -- the mutable index ---------------------------------------------------------------------------


class MatchIndex:
    """Segments + a brute-force tail; thread-safe adds, lock-free reads of a snapshot.

    `gid`s are caller-chosen int64 ids (the service uses a dense row number per entry).
    """

    def __init__(self, design_radius: int = 31, tail_max: int = 4096, merge_factor: int = 4):
        self.design_radius = design_radius
        self.tail_max = tail_max
        self.merge_factor = merge_factor
        self._lock = threading.Lock()
        self._segments: tuple[Segment, ...] = ()
        self._tail_h = np.empty((0, WORDS), np.uint64)
        self._tail_g = np.empty(0, np.int64)
        self._tail_n = 0

    # snapshot of what a reader sees: (segments, tail hashes, tail gids)
    def _snapshot(self) -> tuple[tuple[Segment, ...], U64, I64]:
        with self._lock:
            return self._segments, self._tail_h[: self._tail_n], self._tail_g[: self._tail_n]

    def __len__(self) -> int:
        segs, th, _ = self._snapshot()
        return int(sum(s.n for s in segs) + th.shape[0])

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self._segments

    def nbytes(self) -> int:
        segs, _, _ = self._snapshot()
        return sum(s.nbytes() for s in segs) + self._tail_h.nbytes + self._tail_g.nbytes

    @classmethod
    def build(cls, packed: U64, gids: I64, design_radius: int = 31, **kw: int) -> MatchIndex:
        """Bulk build: one segment for everything (the fast path at start-up)."""
        idx = cls(design_radius=design_radius, **kw)
        if packed.shape[0]:
            idx._segments = (Segment(packed, gids, design_radius),)
        return idx

    def add(self, packed: U64, gids: I64) -> None:
        """Append hashes; they are searchable when this returns."""
        packed = np.ascontiguousarray(packed, dtype=np.uint64).reshape(-1, WORDS)
        gids = np.asarray(gids, dtype=np.int64).reshape(-1)
        if packed.shape[0] == 0:
            return
        with self._lock:
            need = self._tail_n + packed.shape[0]
            if need > self._tail_h.shape[0]:
                cap = max(need, 2 * self._tail_h.shape[0], 64)
                h = np.empty((cap, WORDS), np.uint64)
                g = np.empty(cap, np.int64)
                h[: self._tail_n] = self._tail_h[: self._tail_n]
                g[: self._tail_n] = self._tail_g[: self._tail_n]
                self._tail_h, self._tail_g = h, g
            self._tail_h[self._tail_n : need] = packed
            self._tail_g[self._tail_n : need] = gids
            self._tail_n = need
            if self._tail_n >= self.tail_max:
                self._compact_locked()

    def _compact_locked(self) -> None:
        segs = list(self._segments)
        new_h = self._tail_h[: self._tail_n].copy()
        new_g = self._tail_g[: self._tail_n].copy()
        # merge while the newest segment is not much smaller than the one before (LSM-style)
        while segs and segs[-1].n <= self.merge_factor * new_h.shape[0]:
            last = segs.pop()
            new_h = np.concatenate([last.hashes, new_h])
            new_g = np.concatenate([last.gids, new_g])
        segs.append(Segment(new_h, new_g, self.design_radius))
        self._segments = tuple(segs)
        self._tail_h = np.empty((0, WORDS), np.uint64)
        self._tail_g = np.empty(0, np.int64)
        self._tail_n = 0

    def search(
        self, queries: U64, radius: int | None = None
    ) -> tuple[I64, I64, npt.NDArray[np.int32]]:
        """Every (query row, gid, distance) within `radius` (default: the design radius)."""
        r = self.design_radius if radius is None else radius
        queries = np.ascontiguousarray(queries, dtype=np.uint64).reshape(-1, WORDS)
        segs, th, tg = self._snapshot()
        parts = [s.search(queries, r) for s in segs]
        if th.shape[0]:
            parts.append(brute_force(th, tg, queries, r))
        parts = [p for p in parts if p[0].size]
        if not parts:
            return _empty()
        return (
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]),
        )
