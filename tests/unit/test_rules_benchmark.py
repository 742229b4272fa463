"""The rules benchmark runs end to end at a tiny size and reports every length (no timings
are asserted: speed lives in the benchmark's output, not in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_rules_benchmark_prints_json_for_every_length() -> None:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "rules_match.py"),
                           "--repeat", "5"], capture_output=True, text=True, check=True,
                          timeout=300)
    out = json.loads(done.stdout)
    assert out["rules"] >= 20 and out["policy"].startswith("child_safety@")
    assert [row["words"] for row in out["lengths"]] == [26, 104, 416, 1664, 6656]
    for row in out["lengths"]:
        assert row["normalize_ms"] > 0 and row["rules_ms"] > 0
        assert row["rules_with_context_ms"] > 0 and row["rules_over_normalize"] > 0
