"""Probes trained inside an evaluation run: out-of-fold scoring for evaluated training items,
deterministic stratified folds, and a refusal to score items with probes that saw them."""

from __future__ import annotations

from collections import Counter

import pytest

from childguard.errors import UserError
from childguard.evaluation.datasets import EvalDataset, EvalItem
from childguard.evaluation.probe_training import plan_probes, stratified_folds
from childguard.models.reference_signals import ReferenceTextEmbedder


def _set(name: str, n: int, start: int = 0) -> EvalDataset:
    # neutral marker words stand in for a category; every fourth item is positive
    items = tuple(
        EvalItem(id=f"i{i}", text=(f"zqgrooming note {i}" if i % 4 == 0 else f"weather note {i}"),
                 labels={"grooming": int(i % 4 == 0)})
        for i in range(start, start + n)
    )
    return EvalDataset(name, items, source="test")


def test_stratified_folds_are_balanced_and_deterministic() -> None:
    keys = [f"k{i}" for i in range(40)]
    labels = [int(i % 4 == 0) for i in range(40)]
    folds = stratified_folds(keys, labels, 5)
    assert folds == stratified_folds(list(reversed(keys)), list(reversed(labels)), 5)
    assert Counter(folds.values()) == {f: 8 for f in range(5)}
    pos_per_fold = Counter(folds[k] for k, y in zip(keys, labels, strict=True) if y)
    assert pos_per_fold == {f: 2 for f in range(5)}


def test_evaluated_training_items_are_scored_out_of_fold() -> None:
    train = _set("own", 40)
    other = _set("other", 8, start=100)
    plan = plan_probes(ReferenceTextEmbedder(), [train], [train, other], folds=4)
    assert plan.folds == 4
    # items of the other set get the probes trained on everything
    assert plan.for_item("other", "i100") is plan.final
    assert plan.final.metrics["grooming"]["n"] == 40
    # every training item gets its fold's probes, trained on the rows outside its fold
    sets = [plan.for_item("own:train", it.id) for it in train]
    fold_size = Counter(id(s) for s in sets)
    assert len(fold_size) == 4
    for probes in sets:
        assert probes is not plan.final
        assert probes.metrics["grooming"]["n"] == 40 - fold_size[id(probes)]
    # the fold probes still separate the marker from the rest
    emb = ReferenceTextEmbedder()
    x = emb.embed_texts(["zqgrooming note 999", "weather note 999"])
    p = plan.for_item("own", "i0").predict(x)["grooming"]
    assert p[0] > p[1]


def test_scoring_training_items_without_cross_fitting_is_refused() -> None:
    train = _set("own", 20)
    with pytest.raises(UserError, match="cross-fit"):
        plan_probes(ReferenceTextEmbedder(), [train], [train], folds=0)
    # evaluating on items the probes never saw needs no folds
    plan = plan_probes(ReferenceTextEmbedder(), [train], [_set("other", 8, start=100)])
    assert plan.folds == 0 and not plan.by_item


def _marker_set(name: str, marker: str, n: int = 24) -> EvalDataset:
    """A source whose positives carry their own marker word (two sources describe one category
    with different words, as the OpenAI set and our own set do)."""
    items = tuple(
        EvalItem(id=f"{name}{i}", text=(f"{marker} note {i}" if i % 3 == 0 else f"weather {i}"),
                 labels={"grooming": int(i % 3 == 0)})
        for i in range(n)
    )
    return EvalDataset(name, items, source="test")


def test_per_source_heads_score_each_source_by_its_own_head(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from childguard.models.probes import HeadedProbe, ProbeSet

    a, b = _marker_set("alpha", "zqgrooming"), _marker_set("beta", "zqsextortion")
    emb = ReferenceTextEmbedder()
    pooled = plan_probes(emb, [a, b], [], heads="pooled").final
    headed = plan_probes(emb, [a, b], [], heads="per_source")
    probe = headed.final.probes["grooming"]
    assert isinstance(probe, HeadedProbe) and sorted(probe.heads) == ["alpha", "beta"]
    assert not isinstance(pooled.probes["grooming"], HeadedProbe)
    assert set(headed.final.metrics) == {"grooming@alpha", "grooming@beta"}
    assert headed.final.metrics["grooming@alpha"]["n"] == 24
    assert "per-source heads" in headed.description
    x = emb.embed_texts(["zqgrooming note 99", "zqsextortion note 99", "weather 99"])
    p = headed.final.predict(x)["grooming"]
    heads = {h: probe.heads[h].predict(x) for h in probe.heads}
    assert list(p) == [max(heads["alpha"][i], heads["beta"][i]) for i in range(3)]
    assert p[0] > p[2] and p[1] > p[2]  # each source's marker found by its head
    assert headed.final.version != pooled.version
    # saved and loaded: the same heads, the same scores, format 2 in the manifest
    loaded = ProbeSet.load(headed.final.save(tmp_path))
    assert isinstance(loaded.probes["grooming"], HeadedProbe)
    assert list(loaded.predict(x)["grooming"]) == list(p)
    assert loaded.version == headed.final.version


def test_per_source_heads_fall_back_to_one_probe_when_a_source_is_too_small() -> None:
    from childguard.evaluation.probe_training import head_sources
    from childguard.models.probes import HeadedProbe

    a, tiny = _marker_set("alpha", "zqgrooming"), _marker_set("tiny", "zqsextortion", n=6)
    plan = plan_probes(ReferenceTextEmbedder(), [a, tiny], [], heads="per_source")
    assert not isinstance(plan.final.probes["grooming"], HeadedProbe)  # tiny: 2 positives
    assert plan.final.metrics["grooming"]["n"] == 30  # its rows are kept in the one probe
    assert head_sources({0: 1, 1: 0}, ["only", "only"]) == []


def test_the_same_rows_under_two_builtin_names_are_one_family() -> None:
    # openai_moderation_all holds openai_moderation's rows (same ids): training on one and
    # evaluating the other must still be refused without cross-fitting, and cross-fitted with
    all_rows = _set("openai_moderation_all", 20)
    known = _set("openai_moderation:test", 8)
    with pytest.raises(UserError, match="cross-fit"):
        plan_probes(ReferenceTextEmbedder(), [all_rows], [known], folds=0)
    plan = plan_probes(ReferenceTextEmbedder(), [all_rows], [known], folds=4)
    assert all(plan.for_item("openai_moderation:test", it.id) is not plan.final for it in known)


def test_the_configured_regularisation_reaches_the_probes() -> None:
    import numpy as np

    from childguard.evaluation.probe_training import probe_C

    emb = ReferenceTextEmbedder()
    assert probe_C(emb) == 4.0 and probe_C(emb, 0.25) == 0.25  # models.probe_c wins when set
    train = _set("own", 40)
    tight_plan = plan_probes(emb, [train], [], C=1e-3)
    assert tight_plan.C == 1e-3 and plan_probes(emb, [train], []).C == 4.0  # what trained it
    tight = tight_plan.final.probes["grooming"]
    loose = plan_probes(emb, [train], [], C=100.0).final.probes["grooming"]
    assert np.linalg.norm(tight.weights) < np.linalg.norm(loose.weights) / 10
