"""Probes: training, calibration, the no-pickle persistence and its version check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from childguard.errors import ModelUnavailable, UserError
from childguard.models.probes import ProbeSet, _extract, train_probes
from childguard.models.reference_signals import ReferenceTextEmbedder
from childguard.settings import ModelSettings, Settings


def _data(n: int = 600, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Two categories, each a linear direction with label noise; 'rare' has few positives."""
    w = np.random.default_rng(99).standard_normal(dim)  # the same concept for every sample
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim))
    logits = X @ w
    a = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(int)
    b = (X[:, 0] + 0.3 * rng.standard_normal(n) > 1.0).astype(int)
    rare = np.zeros(n, dtype=int)
    rare[:2] = 1
    return X, {"alpha": a, "beta": b, "rare": rare}


@pytest.fixture(scope="module")
def trained() -> tuple[ProbeSet, np.ndarray, dict[str, np.ndarray]]:
    X, labels = _data()
    return train_probes(X, labels, embedder="synthetic"), X, labels


def test_train_predicts_probabilities_that_rank_held_out_data(trained) -> None:
    probes, _, _ = trained
    X_test, y_test = _data(seed=7)
    preds = probes.predict(X_test)
    assert set(preds) == {"alpha", "beta"}
    for code, p in preds.items():
        assert p.shape == (len(X_test),)
        assert np.all((p >= 0) & (p <= 1))
        assert roc_auc_score(y_test[code], p) > 0.85, code
    assert "rare" in probes.skipped and "2 positives" in probes.skipped["rare"]
    assert set(probes.metrics) == {"alpha", "beta"}
    assert 0.5 < probes.metrics["alpha"]["auroc_cv"] <= 1.0


def test_probabilities_are_calibrated_on_average(trained) -> None:
    probes, _, _ = trained
    X_test, y_test = _data(n=3000, seed=11)
    preds = probes.predict(X_test)
    for code in ("alpha", "beta"):
        # a calibrated model's mean prediction matches the base rate
        assert abs(float(preds[code].mean()) - float(y_test[code].mean())) < 0.05, code


def test_extracted_numbers_reproduce_sklearn(trained) -> None:
    _, X, labels = trained
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    model = CalibratedClassifierCV(
        LogisticRegression(C=4.0, class_weight="balanced", solver="liblinear", max_iter=2000),
        method="sigmoid", cv=cv,
    ).fit(X, labels["beta"])
    np.testing.assert_allclose(
        _extract(model).predict(X), model.predict_proba(X)[:, 1], rtol=1e-6, atol=1e-9
    )


def test_save_load_round_trip_and_version(trained, tmp_path: Path) -> None:
    probes, X, _ = trained
    folder = probes.save(tmp_path)
    assert folder.name == f"synthetic-{probes.version}"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["embedder"] == "synthetic" and manifest["dim"] == X.shape[1]
    assert manifest["categories"] == ["alpha", "beta"]
    assert "auprc_cv" in manifest["metrics"]["alpha"]
    loaded = ProbeSet.load(folder)
    assert loaded.version == probes.version
    for code, p in probes.predict(X).items():
        np.testing.assert_array_equal(loaded.predict(X)[code], p)
    # same numbers -> same version; different numbers -> different version
    assert ProbeSet(embedder="synthetic", dim=loaded.dim, probes=loaded.probes).version == (
        probes.version
    )
    X2, labels2 = _data(n=200, seed=3)
    assert train_probes(X2, labels2, embedder="synthetic").version != probes.version


def test_corrupt_file_is_refused(trained, tmp_path: Path) -> None:
    probes, _, _ = trained
    folder = probes.save(tmp_path)
    raw = bytearray((folder / "probes.npz").read_bytes())
    raw[-100] ^= 0xFF
    (folder / "probes.npz").write_bytes(bytes(raw))
    with pytest.raises(ModelUnavailable, match="corrupt"):
        ProbeSet.load(folder)


def test_headed_probe_round_trip_and_a_newer_format_is_refused(trained, tmp_path: Path) -> None:
    from childguard.models.probes import HeadedProbe

    probes, X, _ = trained
    headed = ProbeSet(embedder="synthetic", dim=probes.dim, probes={
        "alpha": HeadedProbe({"set_a": probes.probes["alpha"], "set_b": probes.probes["beta"]}),
        "beta": probes.probes["beta"]})
    expected = np.maximum(probes.predict(X)["alpha"], probes.predict(X)["beta"])
    np.testing.assert_array_equal(headed.predict(X)["alpha"], expected)
    folder = headed.save(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == 2 and manifest["heads"] == {"alpha": ["set_a", "set_b"]}
    loaded = ProbeSet.load(folder)
    assert loaded.version == headed.version != probes.version
    np.testing.assert_array_equal(loaded.predict(X)["alpha"], expected)
    np.testing.assert_array_equal(loaded.predict(X)["beta"], probes.predict(X)["beta"])
    manifest["format"] = 3
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelUnavailable, match="format 3"):
        ProbeSet.load(folder)
    with pytest.raises(UserError, match="head name"):
        HeadedProbe({"a.b": probes.probes["alpha"]})


def test_load_default(trained, tmp_path: Path) -> None:
    probes, _, _ = trained
    settings = Settings(home=tmp_path, models=ModelSettings(probe_dir=tmp_path / "probes"))
    assert ProbeSet.load_default(settings) is None  # nothing trained yet
    old = ProbeSet(
        embedder="synthetic", dim=probes.dim, probes={"alpha": probes.probes["alpha"]},
        created_at="2000-01-01T00:00:00+00:00",
    )
    old.save(settings.probes_dir)
    probes.save(settings.probes_dir)
    newest = ProbeSet.load_default(settings)
    assert newest is not None and newest.version == probes.version
    assert ProbeSet.load_default(settings, embedder="other") is None


def test_bad_inputs(trained) -> None:
    probes, X, labels = trained
    with pytest.raises(UserError, match=r"expects embeddings of shape \(n, 16\)"):
        probes.predict(np.zeros((2, 8)))
    with pytest.raises(UserError, match="rows"):
        train_probes(X, {"alpha": labels["alpha"][:-1]}, embedder="x")
    with pytest.raises(UserError, match="0/1"):
        train_probes(X, {"alpha": labels["alpha"] * 2}, embedder="x")
    with pytest.raises(UserError, match="no category could be trained"):
        train_probes(X, {"rare": labels["rare"]}, embedder="x")


def test_probe_on_reference_embedder_learns_words() -> None:
    emb = ReferenceTextEmbedder(dim=64)
    topical = [f"weekend {w} trip with friends" for w in ("hiking", "camping", "boating")] * 8
    other = [f"quarterly {w} report due" for w in ("tax", "budget", "sales")] * 8
    X = emb.embed_texts(topical + other)
    y = np.array([1] * len(topical) + [0] * len(other))
    probes = train_probes(X, {"topic": y}, embedder=emb.model_version)
    p = probes.predict(emb.embed_texts(["a camping trip this weekend", "the tax report"]))["topic"]
    assert p[0] > p[1]


def test_training_item_ids_round_trip_and_a_run_on_them_is_refused(trained,
                                                                    tmp_path: Path) -> None:
    from dataclasses import replace

    from childguard.evaluation.datasets import EvalDataset, EvalItem
    from childguard.evaluation.runner import refuse_seen_items

    probes, _, _ = trained
    probes = replace(probes, trained_on=("oai-3", "cs1-v001"))
    loaded = ProbeSet.load(probes.save(tmp_path))
    assert loaded.trained_on == ("oai-3", "cs1-v001")
    unseen = EvalDataset("fresh", (EvalItem(id="x-1", text="t", labels={"alpha": 0}),), "test")
    refuse_seen_items(loaded, [unseen])  # nothing seen: no objection
    seen = EvalDataset("openai_moderation:test", (
        EvalItem(id="oai-3", text="t", labels={"alpha": 1}),
        EvalItem(id="oai-4", text="t", labels={"alpha": 0})), "test")
    with pytest.raises(UserError, match=r"openai_moderation:test: 1 of 2\).*--train-probes"):
        refuse_seen_items(loaded, [unseen, seen])
    refuse_seen_items(replace(loaded, trained_on=()), [seen])  # unknown training rows: allowed
