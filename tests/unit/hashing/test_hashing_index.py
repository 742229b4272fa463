"""The multi-index matcher returns exactly what brute force returns (recall and precision 1.0)."""

from __future__ import annotations

import numpy as np
import pytest

from childguard.hashing.index import (
    MatchIndex,
    Segment,
    brute_force,
    choose_chunking,
    pack_hex,
    unpack_hex,
)


def _random(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, size=(n, 4), dtype=np.uint64)


def _perturb(h: np.ndarray, rng: np.random.Generator, max_flips: int) -> np.ndarray:
    q = h.copy()
    for row in q:
        for b in rng.choice(256, int(rng.integers(0, max_flips + 1)), replace=False):
            row[b // 64] ^= np.uint64(1) << np.uint64(b % 64)
    return q


def _as_set(res: tuple[np.ndarray, np.ndarray, np.ndarray]) -> set[tuple[int, int, int]]:
    return set(zip(res[0].tolist(), res[1].tolist(), res[2].tolist(), strict=True))


@pytest.mark.parametrize(("n", "radius"), [(3000, 31), (20000, 31), (20000, 20), (5000, 0)])
def test_segment_equals_brute_force(n: int, radius: int) -> None:
    rng = np.random.default_rng(n + radius)
    hashes = _random(n, n)
    gids = np.arange(n, dtype=np.int64) * 7 + 3
    seg = Segment(hashes, gids, 31)
    # queries near existing entries (0..40 flips: many at the radius boundary) and random ones
    queries = np.concatenate([_perturb(hashes[rng.integers(0, n, 300)], rng, 40), _random(50, 1)])
    got = _as_set(seg.search(queries, radius))
    want = _as_set(brute_force(hashes, gids, queries, radius))
    assert got == want
    assert len(want) >= (3 if radius == 0 else 50)  # real matches, not only empty results


def test_boundary_distances_31_and_32() -> None:
    base = _random(1, 5)
    near = base.copy()
    far = base.copy()
    # spread the flipped bits evenly over all chunks: the hardest case for the pigeonhole bound
    for b in range(0, 248, 8):  # 31 flips
        near[0, b // 64] ^= np.uint64(1) << np.uint64(b % 64)
        far[0, b // 64] ^= np.uint64(1) << np.uint64(b % 64)
    far[0, 3] ^= np.uint64(1) << np.uint64(63)  # 32nd flip
    idx = MatchIndex.build(np.concatenate([near, far]), np.array([1, 2]))
    _q, g, d = idx.search(base, 31)
    assert g.tolist() == [1] and d.tolist() == [31]


def test_incremental_adds_are_searchable_and_compaction_keeps_results() -> None:
    hashes = _random(9000, 11)
    idx = MatchIndex.build(hashes[:5000], np.arange(5000), tail_max=512)
    most_segments = 1
    for start in range(5000, 9000, 300):  # crosses tail_max many times: segments are built/merged
        stop = min(start + 300, 9000)
        idx.add(hashes[start:stop], np.arange(start, stop))
        _q, g, _d = idx.search(hashes[stop - 1 : stop], 0)
        assert stop - 1 in g.tolist()
        most_segments = max(most_segments, len(idx.segments))
    assert len(idx) == 9000
    assert most_segments >= 2
    rng = np.random.default_rng(2)
    queries = _perturb(hashes[rng.integers(0, 9000, 200)], rng, 35)
    assert _as_set(idx.search(queries, 31)) == _as_set(
        brute_force(hashes, np.arange(9000), queries, 31)
    )


def test_radius_above_design_falls_back_to_brute_force() -> None:
    hashes = _random(2000, 3)
    seg = Segment(hashes, np.arange(2000), 31)
    queries = _random(5, 4)
    assert _as_set(seg.search(queries, 100)) == _as_set(
        brute_force(hashes, np.arange(2000), queries, 100)
    )


def test_chunking_choice_scales() -> None:
    small = choose_chunking(1000, 31)
    big = choose_chunking(10_000_000, 31)
    assert small.m == 16 and small.radius == 1
    assert big.radius == 2 and big.table_size() <= 40 * 10_000_000
    for ch in (small, big):
        assert sum(ch.widths) == 256
        # pigeonhole: all chunks at radius+1 would already exceed 31
        assert ch.m * (ch.radius + 1) > 31


def test_hex_round_trip() -> None:
    values = ["00" * 32, "ff" * 32, "0123456789abcdef" * 4]
    assert unpack_hex(pack_hex(values)) == values
    with pytest.raises(ValueError):
        pack_hex(["abc"])
