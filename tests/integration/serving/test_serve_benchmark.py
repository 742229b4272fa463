"""`benchmarks/serve.py` runs end to end at a tiny size (no timings asserted).

Why: the benchmark is how serving speed is reported, and it had silently stopped running (an
import moved under it). This runs it as a user would (it starts `childguard serve` with the
reference models in a private home) and checks its report's shape and the paths the items
took: the banked photos are hash hits on both hosts, the text goes to the judge (no probes in
a fresh home, so the gate cannot settle it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def test_serve_benchmark_small_run_reports_every_kind_and_path(tmp_path: Path) -> None:
    env = {**os.environ, "CHILDGUARD_HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "serve.py"), "--n-text", "4", "--n-image",
         "2", "--hash-hits", "2", "--concurrency", "2"],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO, check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    seq = report["service_sequential"]
    assert set(seq) == {"text", "image", "mixed", "hash"}
    assert seq["hash"]["by_path"]["hash_hit"]["n"] == 2
    assert seq["hash"]["decisions"]["block"] == 2
    assert report["in_process_sequential"]["hash"]["by_path"]["hash_hit"]["n"] == 2
    assert seq["text"]["by_path"]["judged"]["n"] == 4
    assert all(s["errors"] == 0 for s in seq.values())
    for kind in ("text", "image", "mixed", "hash"):
        assert set(report["serve_overhead_vs_in_process"][kind]) >= {
            "service_p50_ms", "serve_without_store_p50_ms", "store_write_p50_ms"}
