"""`child_safety_v2`: what its builder writes, loadable, and free of the label cues that made
v1's test split reward style over skill: surface features alone (context, length, obfuscation,
injection wrappers, third-person abstract wording, alarming words) must not separate violating
items from look-alikes (cross-validated AUROC <= 0.6)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from childguard.evaluation.datasets import load_file

REPO = Path(__file__).resolve().parents[3]
SET = REPO / "evaluation_sets" / "child_safety_v2.jsonl"
ABSTRACT = re.compile(r"^(a|an|the)\s+(user|message|post|comment|person|seller|adult|man|woman)\b",
                      re.IGNORECASE)
ALARMING = re.compile(r"\b(sex\w*|kids?|child\w*|teen\w*|photos?|pics?|meet\w*|secret\w*|pay\w*|"
                      r"links?|challenge\w*|age)\b", re.IGNORECASE)


def _rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SET.read_text(encoding="utf-8").splitlines()]


def _builder() -> Any:
    spec = importlib.util.spec_from_file_location(
        "build_child_safety_v2", REPO / "evaluation_sets" / "build_child_safety_v2.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def surface(row: dict[str, Any]) -> list[float]:
    text = row["text"]
    words = max(1, len(text.split()))
    return [
        float(bool(row.get("context"))), float(len(row.get("context") or [])),
        float(np.log(words)), float(row.get("obfuscation") not in (None, "injection")),
        float(row.get("obfuscation") == "injection"), float(bool(ABSTRACT.match(text))),
        len(ALARMING.findall(text)) / words, sum(c.isupper() for c in text) / max(1, len(text)),
        float(text.count("?") > 0),
    ]


def test_committed_set_is_the_builders_output() -> None:
    built = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in _builder().build()]
    assert built == SET.read_text(encoding="utf-8").splitlines()


def test_loads_with_known_negatives_and_the_three_splits() -> None:
    ds = load_file(SET)
    rows = {r["id"]: r for r in _rows()}
    codes = set(_builder().CODES)
    for it in ds:
        if rows[it.id]["violating"]:
            assert it.any_positive == 1 and set(it.labels) <= codes
        else:
            assert it.labels == dict.fromkeys(codes, 0)
    assert {it.split for it in ds} == {"train", "calib", "test"}
    for split in ("train", "calib", "test"):
        assert {it.any_positive for it in ds.split(split)} == {0, 1}, split


def test_the_sexual_categories_have_no_authored_violating_items() -> None:
    not_authored = _builder().NOT_AUTHORED
    assert not any(r["labels"].get(c) == 1 for r in _rows() for c in not_authored)


def test_surface_features_alone_cannot_separate_the_classes() -> None:
    rows = _rows()
    X = np.array([surface(r) for r in rows])
    y = np.array([int(r["violating"]) for r in rows])
    model = LogisticRegression(max_iter=2000, class_weight="balanced")
    for split in (None, "test"):
        keep = np.array([split is None or r["split"] == split for r in rows])
        folds = StratifiedKFold(5, shuffle=True, random_state=0)
        p = cross_val_predict(model, X[keep], y[keep], cv=folds, method="predict_proba")[:, 1]
        auroc = roc_auc_score(y[keep], p)
        assert auroc <= 0.6, f"surface features separate the classes ({split or 'all'}): " \
                             f"AUROC {auroc:.3f}"
