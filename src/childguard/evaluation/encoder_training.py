"""`eval fine-tune`: train the text encoder on labelled sets, save it, version it in MLflow.

The encoder is saved as a sentence-transformers directory under `<home>/encoders/<version>/`
with `childguard_encoder.json` (version, base model, config, the sets' names and content
hashes, the item ids it was trained on), and an alias (`default`, `report`, ...) in
`<home>/encoders/aliases.json` points at it; `models.tuned_encoder` picks the alias the
pipeline reads (models/embedders.py). The MLflow run (experiment `childguard-encoders`) holds
the parameters, the training sets as inputs, the losses and the manifest; the weights stay in
the data dir (90 MB a version). Probes are then trained on the new encoder's embeddings with
`eval train-probes`, as on the packaged one.

What `make run` ships is trained on every labelled row; what a report evaluates must be
trained on train splits only (`--alias report`), since `eval run` refuses items an encoder
was trained on.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from childguard.errors import UserError
from childguard.evaluation.datasets import EvalDataset, EvalItem
from childguard.evaluation.finetune import FineTuneConfig, fine_tune
from childguard.evaluation.probe_training import check_alias
from childguard.models.embedders import (
    ENCODER_ALIASES,
    ENCODER_MANIFEST,
    alias_for_base,
    base_encoder,
)
from childguard.settings import Settings

EXPERIMENT_ENCODERS = "childguard-encoders"


@dataclass(frozen=True)
class EncoderTraining:
    version: str
    path: Path
    run_id: str | None
    losses: list[float]
    items: int
    seconds: float


def _pool(datasets: Sequence[EvalDataset]) -> list[EvalItem]:
    seen: set[str] = set()
    out = []
    for ds in datasets:
        for it in ds:
            if it.text and it.id not in seen:
                seen.add(it.id)
                out.append(it)
    return out


def set_alias(settings: Settings, alias: str, version: str) -> None:
    check_alias(alias)
    path = settings.encoders_dir / ENCODER_ALIASES
    aliases = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    aliases[alias_for_base(alias, settings.models.text_embedder)] = version
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(aliases, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def train_encoder(settings: Settings, datasets: Sequence[EvalDataset], codes: Sequence[str], *,
                  config: FineTuneConfig = FineTuneConfig(), alias: str | None = None,
                  log: bool = True, progress: bool = True) -> EncoderTraining:
    """Fine-tune the configured base encoder (`models.text_embedder`) on every item of
    `datasets` (ids de-duplicated), save, alias, log. A config without `train_layers` takes
    the base's default (all layers for MiniLM, the top 4 for EmbeddingGemma)."""
    from childguard.evaluation.stage_cache import digest

    items = _pool(datasets)
    if not items:
        raise UserError("no items with text in the given datasets; nothing to train on")
    base = base_encoder(settings)
    if config.train_layers is None and base.train_layers is not None:
        config = replace(config, train_layers=base.train_layers)
    base_dir, base_version = base.path, base.label
    version = digest(base_version, list(codes), asdict(config),
                     sorted((ds.name, ds.content_hash) for ds in datasets))[:12]
    t0 = time.perf_counter()
    tuned = fine_tune(base_dir, items, codes, config, progress=progress)
    seconds = time.perf_counter() - t0
    settings.encoders_dir.mkdir(parents=True, exist_ok=True)
    final = settings.encoders_dir / version
    staging = settings.encoders_dir / f".{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    tuned.model.save(str(staging))
    manifest: dict[str, Any] = {
        "version": version, "base": base_version, "config": asdict(config),
        "targets": tuned.targets, "losses": tuned.losses, "seconds": round(seconds, 1),
        "datasets": [{"name": ds.name, "hash": ds.content_hash, "items": len(ds)}
                     for ds in datasets],
        "trained_on": sorted(it.id for it in items),
    }
    (staging / ENCODER_MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)  # a reader never sees a half-written encoder
    if alias:
        set_alias(settings, alias, version)
    run_id = _log(settings, manifest, datasets, alias) if log else None
    return EncoderTraining(version, final, run_id, tuned.losses, len(items), seconds)


def stale_datasets(manifest: dict[str, Any], datasets: Sequence[EvalDataset]) -> list[str]:
    """The given datasets a fine-tuned encoder was not trained on as they are now: new since
    it was trained, or changed (another content hash). Why: `make run` keeps an existing
    encoder (retraining costs ~30 min on 2 cores), so a deployment from before new labelled
    rows would otherwise serve the old encoder without anyone being told."""
    trained = {d["name"]: d["hash"] for d in manifest.get("datasets", [])}
    out = []
    for ds in datasets:
        if ds.name not in trained:
            out.append(f"{ds.name} (new since the encoder was trained)")
        elif trained[ds.name] != ds.content_hash:
            out.append(f"{ds.name} (changed: trained on {trained[ds.name][:12]}, now "
                       f"{ds.content_hash[:12]})")
    return out


def stale_note(settings: Settings, refs: Sequence[str]) -> str | None:
    """What `make run` says when the fine-tuned encoder in use predates the labelled sets
    `refs` (dataset references, as `eval fine-tune -d` takes them); None when it does not or
    when no fine-tuned encoder is in use."""
    from childguard.evaluation.datasets import load_dataset
    from childguard.models.embedders import tuned_encoder

    tuned = tuned_encoder(settings)
    if tuned is None:
        return None
    stale = stale_datasets(tuned[1], [load_dataset(r) for r in refs])
    if not stale:
        return None
    return (f"the fine-tuned encoder {tuned[1]['version']} predates {'; '.join(stale)}. "
            f"Retrain it: childguard eval fine-tune -d {' -d '.join(refs)} --alias "
            f"{settings.models.tuned_encoder} (~30 min on 2 cores); make run then retrains "
            "the probes on it")


def _log(settings: Settings, manifest: dict[str, Any], datasets: Sequence[EvalDataset],
         alias: str | None) -> str:
    import mlflow

    from childguard.evaluation import tracking

    exp_id = tracking.experiment_id(settings, EXPERIMENT_ENCODERS)
    with mlflow.start_run(experiment_id=exp_id,
                          run_name=f"encoder-{manifest['version']}") as run:
        mlflow.set_tags({"childguard.kind": "encoder", "encoder_version": manifest["version"],
                         **({"alias": alias} if alias else {})})
        tracking.log_params({
            "version": manifest["version"], "base": manifest["base"],
            "targets": ",".join(manifest["targets"]),
            **{f"config.{k}": v for k, v in manifest["config"].items()},
            **{f"dataset.{d['name']}.hash": d["hash"] for d in manifest["datasets"]},
        })
        for ds in datasets:
            tracking.log_dataset(ds, context="training")
        for i, loss in enumerate(manifest["losses"]):
            mlflow.log_metric("loss", float(loss), step=i + 1)
        mlflow.log_metric("train_seconds", float(manifest["seconds"]))
        tracking.log_json({k: v for k, v in manifest.items() if k != "trained_on"}
                          | {"trained_on_count": len(manifest["trained_on"])},
                          "encoder_manifest.json")
        return str(run.info.run_id)
