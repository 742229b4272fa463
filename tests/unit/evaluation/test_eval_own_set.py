"""The repository's own evaluation set: it is what its builder writes, and its benign
look-alikes are known negatives in every policy category (an empty label map would mean
"unknown" and silently drop them from every false-positive rate)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from childguard.evaluation.datasets import load_file
from childguard.policy import load_policy

REPO = Path(__file__).resolve().parents[3]
SET = REPO / "evaluation_sets" / "child_safety_v1.jsonl"


def test_committed_set_is_the_builders_output() -> None:
    spec = importlib.util.spec_from_file_location(
        "build_child_safety_v1", REPO / "evaluation_sets" / "build_child_safety_v1.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    built = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in mod.build()]
    assert built == SET.read_text(encoding="utf-8").splitlines()


def test_benign_rows_are_negatives_in_every_category() -> None:
    codes = {c.code for c in load_policy(REPO / "policies" / "child_safety").spec.categories}
    ds = load_file(SET)
    raw = {r["id"]: r for r in map(json.loads, SET.read_text(encoding="utf-8").splitlines())}
    benign = [it for it in ds if not raw[it.id]["violating"]]
    violating = [it for it in ds if raw[it.id]["violating"]]
    assert len(benign) >= 150 and len(violating) >= 150
    assert all(it.labels == dict.fromkeys(codes, 0) for it in benign)
    assert all(it.any_positive == 1 and set(it.labels) <= codes for it in violating)
    for split in ("train", "dev", "test"):
        part = ds.split(split)
        assert {it.any_positive for it in part} == {0, 1}, split
