"""Benchmark the PDQ matcher (`childguard.hashing.index.MatchIndex`) at several index sizes.

Prints one JSON object per size (one line each): build time, resident memory, single-query and
batched lookups/s at radius 31, recall and precision against brute force on a sample, and the
time until a freshly added hash is matchable.

Wall-clock rates depend on what else runs on the machine; `*_per_cpu_s` divide by the CPU time
this process actually got (`time.process_time`), which is what a dedicated core would deliver.

Hashes are uniformly random 256-bit values (no public 10M-hash corpus exists here); queries are
stored hashes with 0-40 random bit flips (so about three quarters are true matches, many at the
radius boundary) plus unrelated random hashes. Each size runs in its own subprocess so resident
memory is measured per size.

    python benchmarks/hash_match.py --sizes 100000,1000000,10000000
    python benchmarks/hash_match.py --videos --sizes 100000,1000000

`--videos` benchmarks the video bank (`childguard.hashing.video.VideoIndex`): the index holds
SIZE frames in 10-minute videos at one hash per second (600 frames each); each query is a
one-minute clip (60 frames) cut from a random bank video with 0-12 random bit flips per frame
(a re-encode), or an unrelated random clip. Reported: queries/s, and recall of the index's
matching videos against brute-force vPDQ matching over every video on a sample.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss / 2**20)


def _perturb(rows: np.ndarray, rng: np.random.Generator, max_flips: int) -> np.ndarray:
    q = rows.copy()
    bits = q.view(np.uint8).reshape(len(q), 32)
    for i in range(len(q)):
        for b in rng.choice(256, int(rng.integers(0, max_flips + 1)), replace=False):
            bits[i, b // 8] ^= np.uint8(1 << (b % 8))
    return q


def run_one(
    n: int, radius: int, n_queries: int, recall_sample: int, seed: int
) -> dict[str, object]:
    from childguard.hashing.index import MatchIndex, brute_force

    rss0 = _rss_mb()
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, size=(n, 4), dtype=np.uint64)
    gids = np.arange(n, dtype=np.int64)
    data_mb = hashes.nbytes / 2**20

    t = time.perf_counter()
    idx = MatchIndex.build(hashes, gids, design_radius=radius)
    build_s = time.perf_counter() - t
    # the index holds its own copy of the hashes; drop the generator's copy as a service would
    sample_src = hashes[rng.integers(0, n, n_queries)]
    del hashes
    rss_index = _rss_mb()
    seg = idx.segments[0]

    n_near = int(n_queries * 0.9)
    queries = np.concatenate([
        _perturb(sample_src[:n_near], rng, 40),
        rng.integers(0, 2**64, size=(n_queries - n_near, 4), dtype=np.uint64),
    ])
    rng.shuffle(queries)

    # single-query lookups (the online path: one image at a time)
    n_single = min(1000, n_queries)
    idx.search(queries[:10], radius)  # warm-up
    t, c = time.perf_counter(), time.process_time()
    for i in range(n_single):
        idx.search(queries[i : i + 1], radius)
    single_qps = n_single / (time.perf_counter() - t)
    single_cpu = n_single / (time.process_time() - c)

    # batched, one thread
    t, c = time.perf_counter(), time.process_time()
    res = idx.search(queries, radius)
    batch_qps = n_queries / (time.perf_counter() - t)
    batch_cpu = n_queries / (time.process_time() - c)
    matched = len(np.unique(res[0]))

    # batched, two threads (numpy releases the GIL in the gathers and popcounts)
    halves = np.array_split(queries, 2)
    with ThreadPoolExecutor(2) as pool:
        t = time.perf_counter()
        list(pool.map(lambda q: idx.search(q, radius), halves))
        batch2_qps = n_queries / (time.perf_counter() - t)

    # single-query lookups from two threads (a service with two workers on the two cores)
    def _singles(qs: np.ndarray) -> None:
        for i in range(len(qs)):
            idx.search(qs[i : i + 1], radius)

    with ThreadPoolExecutor(2) as pool:
        t = time.perf_counter()
        list(pool.map(_singles, np.array_split(queries[:n_single], 2)))
        single2_qps = n_single / (time.perf_counter() - t)

    # recall / precision against brute force on a sample
    sample = queries[:recall_sample]
    got = set(zip(*(a.tolist() for a in idx.search(sample, radius)), strict=True))
    t = time.perf_counter()
    want = set(zip(*(a.tolist() for a in brute_force(seg.hashes, seg.gids, sample, radius)),
                   strict=True))
    brute_s = time.perf_counter() - t
    recall = len(got & want) / len(want) if want else 1.0
    precision = len(got & want) / len(got) if got else 1.0

    # time to matchable: add one new hash, then look it up (the add returns first)
    new = rng.integers(0, 2**64, size=(1, 4), dtype=np.uint64)
    t = time.perf_counter()
    idx.add(new, np.array([n], dtype=np.int64))
    add_s = time.perf_counter() - t
    _, g, _ = idx.search(_perturb(new, rng, 10), radius)
    ttm_s = time.perf_counter() - t
    # and a burst of adds big enough to force a tail compaction into a new segment
    burst = rng.integers(0, 2**64, size=(idx.tail_max, 4), dtype=np.uint64)
    t = time.perf_counter()
    idx.add(burst, np.arange(n + 1, n + 1 + len(burst), dtype=np.int64))
    compaction_s = time.perf_counter() - t

    ch = seg.chunking
    return {
        "size": n,
        "radius": radius,
        "chunking": {"chunks": ch.m, "bits": sorted(set(ch.widths)), "chunk_radius": ch.radius,
                     "probes_per_query": ch.probes(),
                     "expected_candidates_per_query": round(ch.candidates(n), 1)},
        "build_s": round(build_s, 4),  # a small index builds in < 5 ms
        "index_mb": round(idx.nbytes() / 2**20, 1),
        "hash_data_mb": round(data_mb, 1),
        "rss_mb_before": round(rss0, 1),
        "rss_mb_with_index": round(rss_index, 1),
        "single_query_lookups_per_s": round(single_qps, 1),
        "batched_lookups_per_s": round(batch_qps, 1),
        "single_query_lookups_per_cpu_s": round(single_cpu, 1),
        "batched_lookups_per_cpu_s": round(batch_cpu, 1),
        "batched_2_threads_lookups_per_s": round(batch2_qps, 1),
        "single_query_2_threads_lookups_per_s": round(single2_qps, 1),
        "queries": n_queries,
        "queries_with_match": matched,
        "recall_sample": len(sample),
        "recall_pairs": len(want),
        "recall": recall,
        "precision": precision,
        "brute_force_s_for_sample": round(brute_s, 2),
        "add_s": round(add_s, 6),
        "time_to_matchable_s": round(ttm_s, 6),
        "new_hash_found": bool(n in g.tolist()),
        "tail_compaction_s": round(compaction_s, 3),
        "cpu_count": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def run_videos(size: int, queries: int, sample: int, seed: int) -> dict[str, object]:
    """The video bank at `size` indexed frames (see the module docstring)."""
    from childguard.hashing.index import unpack_hex
    from childguard.hashing.video import FrameHash, VideoIndex, match_videos

    rng = np.random.default_rng(seed)
    per_video = 600
    n_videos = max(1, size // per_video)
    packed = rng.integers(0, 2**63, size=(n_videos * per_video, 4), dtype=np.uint64)
    hexes = unpack_hex(packed)
    videos = [[FrameHash(i, 100, hexes[v * per_video + i], float(i)) for i in range(per_video)]
              for v in range(n_videos)]
    t0 = time.perf_counter()
    index = VideoIndex()
    for v, frames in enumerate(videos):
        index.add(f"v{v}", frames)
    build_s = time.perf_counter() - t0
    clips = []
    for q in range(queries):
        if q % 4 == 3:  # an unrelated clip
            raw = rng.integers(0, 2**63, size=(60, 4), dtype=np.uint64)
            clips.append((None, [FrameHash(i, 100, h, float(i))
                                 for i, h in enumerate(unpack_hex(raw))]))
            continue
        v = int(rng.integers(0, n_videos))
        start = int(rng.integers(0, per_video - 60))
        noisy = _perturb(packed[v * per_video + start: v * per_video + start + 60], rng, 12)
        clips.append((f"v{v}", [FrameHash(i, 100, h, float(i))
                                for i, h in enumerate(unpack_hex(noisy))]))
    # a one-minute clip of a ten-minute video covers 10% of it: the target share is low, so
    # the bank answers with the query share (the clip is in the video) at 80% / 0%
    cpu0, t0 = time.process_time(), time.perf_counter()
    answers = [index.search(frames, query_pct=80.0, target_pct=0.0) for _, frames in clips]
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    found = sum(1 for (truth, _), ans in zip(clips, answers, strict=True)
                if truth is not None and any(name == truth for name, _ in ans))
    truths = sum(1 for truth, _ in clips if truth is not None)
    false = sum(1 for (truth, _), ans in zip(clips, answers, strict=True)
                if any(name != truth for name, _ in ans))
    # recall against brute force: every video compared with vPDQ's brute matcher
    agree = checked = 0
    for (_, frames), ans in list(zip(clips, answers, strict=True))[:sample]:
        brute = {f"v{v}" for v, vf in enumerate(videos)
                 if match_videos(frames, vf).query_match_pct >= 80.0}
        checked += 1
        agree += brute == {name for name, _ in ans}
    return {"mode": "videos", "frames": n_videos * per_video, "videos": n_videos,
            "queries": queries, "query_frames": 60, "build_s": round(build_s, 2),
            "queries_per_s": round(queries / wall, 1),
            "queries_per_cpu_s": round(queries / max(cpu, 1e-9), 1),
            "ms_per_query": round(1000 * wall / queries, 2),
            "true_clips_found": f"{found}/{truths}", "false_matches": false,
            "agrees_with_brute_force": f"{agree}/{checked}", "rss_mb": round(_rss_mb(), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated index sizes")
    ap.add_argument("--radius", type=int, default=31)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--recall-sample", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--videos", action="store_true",
                    help="benchmark the video bank (VideoIndex) instead of single hashes")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one is not None and args.videos:
        print(json.dumps(run_videos(args.one, min(args.queries, 400),
                                    min(args.recall_sample, 20), args.seed)))
        return 0
    if args.one is not None:
        sample = args.recall_sample if args.one < 5_000_000 else min(args.recall_sample, 40)
        print(json.dumps(run_one(args.one, args.radius, args.queries, sample, args.seed)))
        return 0
    rc = 0
    for size in (int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()):
        cmd = [sys.executable, __file__, "--one", str(size), "--radius", str(args.radius),
               "--queries", str(args.queries), "--recall-sample", str(args.recall_sample),
               "--seed", str(args.seed), *(["--videos"] if args.videos else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(json.dumps({"size": size, "error": proc.stderr.strip()[-2000:]}))
            rc = 1
        else:
            print(proc.stdout.strip(), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
