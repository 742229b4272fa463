"""The matcher benchmark runs end to end at a tiny size and reports recall 1.0 (no timings)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "hash_match.py"


def test_benchmark_small_run_reports_exact_recall() -> None:
    spec = importlib.util.spec_from_file_location("hash_match_bench", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.run_one(5000, 31, 200, 50, 3)
    assert out["recall"] == 1.0 and out["precision"] == 1.0
    assert out["recall_pairs"] > 10 and out["new_hash_found"]
    for key in ("build_s", "rss_mb_with_index", "single_query_lookups_per_s",
                "batched_lookups_per_s", "time_to_matchable_s"):
        assert out[key] > 0, key
