"""Fine-tuning the packaged encoder (real MiniLM weights, one short epoch on a tiny set: a
wiring test, not an accuracy claim): it is saved with a manifest, found through its alias by
the pipeline's embedder builder, and evaluation refuses the items it was trained on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from childguard.errors import ModelUnavailable, UserError
from childguard.evaluation.datasets import EvalDataset, EvalItem
from childguard.evaluation.encoder_training import train_encoder
from childguard.evaluation.finetune import FineTuneConfig
from childguard.evaluation.runner import RunOptions, evaluate
from childguard.models.embedders import ENCODER_ALIASES, build_text_embedder
from childguard.settings import Settings

CODES = ("grooming", "sextortion")


def _set(prefix: str, n: int = 16) -> EvalDataset:
    items = tuple(EvalItem(
        id=f"{prefix}{i}",
        text=(f"cg-test:grooming message number {i}" if i % 4 == 0 else
              f"an ordinary message about the weather, number {i}"),
        labels={"grooming": int(i % 4 == 0), "sextortion": 0}, split="train")
        for i in range(n))
    return EvalDataset(f"tiny-{prefix}", items, source="test")


def test_fine_tuned_encoder_is_saved_aliased_and_refused_on_its_items(
        settings: Settings) -> None:
    packaged = build_text_embedder(settings)
    assert "tuned" not in packaged.model_version
    cfg = FineTuneConfig(epochs=1, batch_size=8, max_length=32)
    res = train_encoder(settings, [_set("a")], CODES, config=cfg, alias="default", log=False,
                        progress=False)
    manifest = json.loads((res.path / "childguard_encoder.json").read_text())
    assert manifest["version"] == res.version and len(manifest["trained_on"]) == 16
    assert manifest["targets"][:2] == list(CODES) and len(res.losses) == 1
    tuned = build_text_embedder(settings)
    assert tuned.model_version.startswith("all-MiniLM-L6-v2-tuned")
    assert tuned.model_version.endswith(f"@{res.version}")
    assert set(tuned.trained_on) == {f"a{i}" for i in range(16)}  # type: ignore[attr-defined]
    text = ["an ordinary message about the weather"]
    assert not np.allclose(tuned.embed_texts(text), packaged.embed_texts(text))
    # the packaged weights stay one setting away
    off = settings.model_copy(update={"models": settings.models.model_copy(
        update={"tuned_encoder": ""})})
    assert build_text_embedder(off).model_version == packaged.model_version
    # an evaluation that would report the encoder's own training items is refused
    with pytest.raises(UserError, match="text encoder"):
        evaluate(settings, [_set("a")], options=RunOptions(judge="none", progress=False),
                 log=False)
    unseen = evaluate(settings, [_set("b", 4)],
                      options=RunOptions(judge="none", progress=False), log=False)
    assert unseen.metrics["items"] == 4


def test_alias_to_a_missing_encoder_is_loud(settings: Settings) -> None:
    settings.encoders_dir.mkdir(parents=True)
    (settings.encoders_dir / ENCODER_ALIASES).write_text(json.dumps({"default": "gone"}))
    with pytest.raises(ModelUnavailable, match="retrain it"):
        build_text_embedder(settings)


def test_top_layers_only_and_aliases_kept_per_base(settings: Settings) -> None:
    """A base given as a directory is tuned in its top block only (the config's
    train_layers), aliased under its own key, and never read by a configuration with another
    base (here the packaged MiniLM itself)."""
    from sentence_transformers import SentenceTransformer

    from childguard.models.embedders import packaged_minilm

    base_dir, _ = packaged_minilm()
    as_dir = settings.model_copy(update={"models": settings.models.model_copy(
        update={"text_embedder": str(base_dir)})})
    cfg = FineTuneConfig(epochs=1, batch_size=8, max_length=32, train_layers=1)
    res = train_encoder(as_dir, [_set("c")], CODES, config=cfg, alias="default", log=False,
                        progress=False)
    aliases = json.loads((settings.encoders_dir / ENCODER_ALIASES).read_text())
    assert aliases == {f"default@{base_dir.name}": res.version}
    version = build_text_embedder(as_dir).model_version
    assert version.startswith(f"{base_dir.name}-tuned") and version.endswith(f"@{res.version}")
    assert "tuned" not in build_text_embedder(settings).model_version  # other base: untouched
    before = SentenceTransformer(str(base_dir), device="cpu")[0].auto_model.state_dict()
    after = SentenceTransformer(str(res.path), device="cpu")[0].auto_model.state_dict()
    changed = {k for k in before if not np.allclose(before[k].numpy(), after[k].numpy())}
    assert changed and all(k.startswith("encoder.layer.5.") for k in changed), sorted(changed)


def test_make_run_is_told_when_the_encoder_predates_the_labelled_sets(
        settings: Settings, tmp_path) -> None:
    """`make run` keeps an existing fine-tuned encoder (retraining costs ~30 min) but says so
    when a labelled set it trains on changed or is new since (stale_note, run_stack.sh)."""
    from childguard.evaluation.datasets import load_dataset
    from childguard.evaluation.encoder_training import stale_note

    def write(path, n: int) -> str:
        rows = [{"id": it.id, "text": it.text, "labels": dict(it.labels), "split": it.split}
                for it in _set(path.stem, n).items]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return str(path)

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert stale_note(settings, [write(a, 16)]) is None  # no fine-tuned encoder yet
    cfg = FineTuneConfig(epochs=1, batch_size=8, max_length=32)
    train_encoder(settings, [load_dataset(str(a))], CODES, config=cfg, alias="default",
                  log=False, progress=False)
    assert stale_note(settings, [str(a)]) is None
    note = stale_note(settings, [write(a, 20), write(b, 8)])
    assert note is not None
    assert "a (changed" in note and "b (new since" in note
    assert f"-d {a} -d {b} --alias default" in note
