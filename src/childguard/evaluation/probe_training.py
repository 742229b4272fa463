"""`eval train-probes`: embedding probes trained from evaluation sets and reviewer decisions.

Why here and not in models/: training is an evaluation concern (which data, which labels, which
cross-validated numbers, which MLflow run), while `childguard.models.probes` owns the model
(`train_probes`, `ProbeSet`). The probes are saved where `ProbeSet.load_default(settings)`
finds them (settings.probes_dir) and logged to MLflow as a run artifact, so a pipeline can also
load an exact logged probe set by run id or by an alias (`load_logged_probes`).

Items embed their normalised text, as the pipeline does, so the probe sees at training time
what it sees in service. Labels are three-valued: each category is trained on the items that
have a known label for it (so the OpenAI set trains `sexual_minors` only, and does not teach
the grooming probe that everything there is benign).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from childguard.errors import NotFound, UserError
from childguard.evaluation.datasets import EvalDataset
from childguard.settings import Settings

PROBES_ARTIFACT = "probes"
ALIAS_TAG_PREFIX = "probe_alias."


@dataclass
class ProbeTraining:
    probes: Any  # childguard.models.probes.ProbeSet
    saved_to: Path | None
    run_id: str | None
    metrics: dict[str, float]


def training_rows(datasets: Sequence[EvalDataset]) -> tuple[list[str], list[str],
                                                           dict[str, dict[int, int]]]:
    """(ids, texts, code -> {row index: label}) over items with text, de-duplicated by id;
    ids are `<dataset name>:<item id>` (`_base(id)` names the row's source set)."""
    ids: list[str] = []
    texts: list[str] = []
    labels: dict[str, dict[int, int]] = {}
    seen: set[str] = set()
    for ds in datasets:
        for it in ds:
            key = f"{ds.name}:{it.id}"
            if not it.text or key in seen:
                continue
            seen.add(key)
            row = len(ids)
            ids.append(key)
            text = it.text if not it.context else "\n".join([*(m.text for m in it.context),
                                                             it.text])
            texts.append(text)
            for code, v in it.labels.items():
                if code != "any":
                    labels.setdefault(code, {})[row] = int(v)
    return ids, texts, labels


def probe_C(embedder: Any, configured: float | None = None) -> float:
    """The probes' inverse regularisation: `models.probe_c` when configured, else `embedder`'s
    `probe_C` attribute, else 4.0 (tuned on all-MiniLM-L6-v2; an LLM hidden state has another
    scale)."""
    if configured is not None:
        return float(configured)
    own = getattr(embedder, "probe_C", None)  # None: the encoder has no C of its own
    return float(own) if own is not None else 4.0


ProbeHeads = Literal["pooled", "per_source"]


def head_sources(code_rows: dict[int, int], sources: Sequence[str]) -> list[str]:
    """The sources that get a head of their own for one category: every source holding its
    labelled rows, when there are two or more and each has MIN_POSITIVES positives and
    negatives; else none (one pooled probe: a head without enough of both cannot be trained,
    and dropping its rows would lose them)."""
    from childguard.models.probes import MIN_POSITIVES

    counts: dict[str, list[int]] = {}
    for r, y in code_rows.items():
        counts.setdefault(sources[r], [0, 0])[int(y)] += 1
    if len(counts) < 2 or any(min(c) < MIN_POSITIVES for c in counts.values()):
        return []
    return sorted(counts)


def fit_probes(X: np.ndarray, labels: dict[str, dict[int, int]], *, embedder: str,
               folds: int = 5, seed: int = 0, C: float = 4.0,
               sources: Sequence[str] | None = None, heads: ProbeHeads = "pooled") -> Any:
    """One `train_probes` call per category on its labelled rows, merged into one ProbeSet.

    `heads="per_source"` (with `sources`, one name per row of X): a category labelled by
    several sources gets one head per source (`HeadedProbe`, the highest head's score) when
    `head_sources` allows it; its metrics are per head, under `<code>@<source>`."""
    from childguard.models.probes import HeadedProbe, ProbeSet, train_probes

    if heads == "per_source" and (sources is None or len(sources) != X.shape[0]):
        raise UserError("per-source probe heads need one source name per training row")
    merged: dict[str, Any] = {}
    metrics: dict[str, dict[str, float]] = {}
    skipped: dict[str, str] = {}
    for code in sorted(labels):
        split = (head_sources(labels[code], sources)
                 if heads == "per_source" and sources is not None else [])
        groups = ({src: sorted(r for r in labels[code] if sources[r] == src) for src in split}
                  if split and sources is not None else {"": sorted(labels[code])})
        members: dict[str, Any] = {}
        member_metrics: dict[str, dict[str, float]] = {}
        try:
            for src, group in groups.items():
                rows = np.array(group, dtype=int)
                y = np.array([labels[code][r] for r in rows], dtype=int)
                ps = train_probes(X[rows], {code: y}, embedder=embedder, folds=folds,
                                  seed=seed, C=C)
                members[src] = ps.probes[code]
                member_metrics[f"{code}@{src}" if src else code] = ps.metrics[code]
        except UserError as exc:
            skipped[code] = str(exc)
            continue
        merged[code] = HeadedProbe(members) if split else members[""]
        metrics.update(member_metrics)
    if not merged:
        raise UserError(f"no category could be trained: {skipped}")
    return ProbeSet(embedder=embedder, dim=int(X.shape[1]), probes=merged, metrics=metrics,
                    skipped=skipped)


def train_from_datasets(
    settings: Settings,
    datasets: Sequence[EvalDataset],
    *,
    embedder: Any = None,
    save: bool = True,
    log: bool = True,
    alias: str | None = None,
    folds: int = 5,
    progress: bool = True,
) -> ProbeTraining:
    """Embed, train with cross-validated metrics, save under probes_dir, log to MLflow."""
    from childguard.normalize import normalize_text

    if embedder is None:
        from childguard.models.embedders import build_text_embedder

        embedder = build_text_embedder(settings)
    ids, texts, labels = training_rows(datasets)
    if not ids:
        raise UserError("no items with text in the given datasets; nothing to train on")
    normalized = [normalize_text(t) for t in texts]
    X = _embed(embedder, normalized, progress=progress)
    probes = fit_probes(X, labels, embedder=embedder.model_version, folds=folds,
                        C=probe_C(embedder, settings.models.probe_c),
                        sources=[_base(i) for i in ids],
                        heads=settings.models.probe_heads)
    # the items' own ids: a key's set name may itself hold ':' (`set:train:only-...`)
    probes.trained_on = tuple(sorted({it.id for ds in datasets for it in ds if it.text}))
    flat = {f"{code}.{k}": float(v) for code, m in probes.metrics.items() for k, v in m.items()}
    saved = probes.save(settings.probes_dir) if save else None
    run_id = None
    if log:
        run_id = log_probes(settings, probes, datasets, alias=alias)
    return ProbeTraining(probes, saved, run_id, flat)


def _embed(embedder: Any, texts: list[str], *, progress: bool, batch: int = 64) -> np.ndarray:
    import sys

    from tqdm import tqdm

    # a stage-cached embedder stores no per-item time for training batches (CachedEmbedder)
    embed = getattr(embedder, "embed_bulk", None) or embedder.embed_texts
    parts = []
    for i in tqdm(range(0, len(texts), batch), file=sys.stderr, disable=not progress,
                  desc="embed", unit="batch"):
        parts.append(np.asarray(embed(texts[i:i + batch]), dtype=np.float64))
    return np.vstack(parts)


def log_probes(settings: Settings, probes: Any, datasets: Sequence[EvalDataset], *,
               alias: str | None = None) -> str:
    import tempfile

    import mlflow

    from childguard.evaluation import tracking

    exp_id = tracking.experiment_id(settings, tracking.EXPERIMENT_PROBES)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"probes-{probes.version}") as run:
        mlflow.set_tags({"childguard.kind": "probes", "probes_version": probes.version})
        tracking.log_params({
            "embedder": probes.embedder, "dim": probes.dim, "version": probes.version,
            "categories": ",".join(probes.categories),
            "skipped": json.dumps(probes.skipped, sort_keys=True),
            "datasets": ",".join(ds.name for ds in datasets),
            **{f"dataset.{ds.name}.hash": ds.content_hash for ds in datasets},
        })
        for ds in datasets:
            tracking.log_dataset(ds, context="training")
        tracking.log_metrics({f"{code}.{k}": v for code, m in probes.metrics.items()
                              for k, v in m.items()})
        with tempfile.TemporaryDirectory(prefix="childguard-probes-") as tmp:
            folder = probes.save(Path(tmp))
            mlflow.log_artifacts(str(folder), artifact_path=PROBES_ARTIFACT)
        run_id = str(run.info.run_id)
    if alias:
        set_probe_alias(settings, alias, run_id)
    return run_id


def check_alias(alias: str) -> None:
    """An alias (of probes or of a fine-tuned encoder) is letters, digits, '-' or '_'."""
    if not alias.replace("-", "").replace("_", "").isalnum():
        raise UserError(f"alias {alias!r} must be letters, digits, '-' or '_'")


def set_probe_alias(settings: Settings, alias: str, run_id: str) -> None:
    """Point `alias` (e.g. 'champion') at a probes run: an experiment tag, moved atomically."""
    from childguard.evaluation import tracking

    check_alias(alias)
    client = tracking.configure(settings)
    client.get_run(run_id)  # raises if unknown
    exp_id = tracking.experiment_id(settings, tracking.EXPERIMENT_PROBES)
    client.set_experiment_tag(exp_id, f"{ALIAS_TAG_PREFIX}{alias}", run_id)


def resolve_probe_run(settings: Settings, ref: str) -> str:
    """A probes run id from `ref`: a run id, `runs:/<id>`, or an alias set by train-probes."""
    from mlflow.exceptions import MlflowException

    from childguard.evaluation import tracking

    client = tracking.configure(settings)
    if ref.startswith("runs:/"):
        ref = ref[len("runs:/"):].split("/", 1)[0]
    try:
        return str(client.get_run(ref).info.run_id)
    except MlflowException:
        pass
    exp = client.get_experiment_by_name(tracking.EXPERIMENT_PROBES)
    run_id = exp.tags.get(f"{ALIAS_TAG_PREFIX}{ref}") if exp is not None else None
    if not run_id:
        raise NotFound(f"no probes run or alias {ref!r} in MLflow at {settings.mlflow_uri}")
    return str(run_id)


def load_logged_probes(settings: Settings, ref: str, dst: Path | None = None) -> Any:
    """Download a logged probe set (run id, `runs:/<id>` or alias) and load it.

    For the pipeline: `build_pipeline(settings, probes=load_logged_probes(settings,
    "champion"))`. `dst` defaults to `<probes_dir>/mlflow/<run id>` (a cache: a second call
    does not download again).
    """
    from childguard.evaluation import tracking
    from childguard.models.probes import ProbeSet

    run_id = resolve_probe_run(settings, ref)
    target = dst or settings.probes_dir / "mlflow" / run_id
    if (target / "manifest.json").is_file():
        return ProbeSet.load(target)
    import shutil
    import tempfile

    client = tracking.configure(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        path = tracking.download(client, run_id, PROBES_ARTIFACT, Path(tmp))
        if target.exists():
            shutil.rmtree(target)
        path.rename(target)
    return ProbeSet.load(target)


# -- probes trained inside an evaluation run (cross-fitting) ---------------------------------


#: built-in sets that hold the same rows under another name (same item ids): one family, so
#: a row trained on under one name and evaluated under the other is still cross-fitted
_FAMILY = {"openai_moderation_all": "openai_moderation", "xstest_all": "xstest"}


def _base(name: str) -> str:
    """`openai_moderation:test` -> `openai_moderation`: item ids are unique within a base set
    (`openai_moderation_all` -> `openai_moderation`: the same rows)."""
    base = name.split(":", 1)[0]
    return _FAMILY.get(base, base)


def stratified_folds(keys: Sequence[str], labels: Sequence[int], k: int) -> dict[str, int]:
    """Fold 0..k-1 per key, stratified by label, deterministic: within each label, keys are
    ordered by sha256 (independent of input order and of Python's hash seed) and dealt round
    robin, so every fold gets the same share of positives."""
    import hashlib

    out: dict[str, int] = {}
    for label in sorted(set(labels)):
        group = sorted((key for key, y in zip(keys, labels, strict=True) if y == label),
                       key=lambda s: hashlib.sha256(s.encode()).hexdigest())
        for i, key in enumerate(group):
            out[key] = i % k
    return out


@dataclass
class ProbePlan:
    """Which probe set scores which evaluated item.

    `final` is trained on every training row; an evaluated item that is itself a training row
    is scored by the probes of its fold, trained on every row except that fold's (out of fold),
    so no item is ever scored by a probe that saw its label."""

    final: Any  # ProbeSet
    by_item: dict[tuple[str, str], Any]
    folds: int
    description: str
    C: float  # the inverse regularisation every probe set of the plan was trained at

    def for_item(self, dataset: str, item_id: str) -> Any:
        return self.by_item.get((_base(dataset), item_id), self.final)


def plan_probes(embedder: Any, train: Sequence[EvalDataset], evaluated: Sequence[EvalDataset],
                *, folds: int = 0, progress: bool = False,
                heads: ProbeHeads = "pooled", C: float | None = None) -> ProbePlan:
    """Train the run's probes on `train`; cross-fit (`folds` >= 2) the evaluated items that
    are also training rows. Evaluating on training rows without cross-fitting is refused.
    `heads`: one probe per category, or per-source heads (`fit_probes`); `C` the configured
    inverse regularisation (`models.probe_c`; None = the embedder's own)."""
    from childguard.normalize import normalize_text

    keys: list[tuple[str, str]] = []
    texts: list[str] = []
    labels: dict[str, dict[int, int]] = {}
    seen: set[tuple[str, str]] = set()
    for ds in train:
        for it in ds:
            key = (_base(ds.name), it.id)
            if not it.text or key in seen:
                continue
            seen.add(key)
            row = len(keys)
            keys.append(key)
            texts.append(it.text if not it.context else "\n".join(
                [*(m.text for m in it.context), it.text]))
            for code, v in it.labels.items():
                labels.setdefault(code, {})[row] = int(v)
    if not keys:
        raise UserError("the probe training sets hold no items with text")
    evaluated_keys = {(_base(ds.name), it.id) for ds in evaluated for it in ds}
    overlap = [i for i, key in enumerate(keys) if key in evaluated_keys]
    if overlap and folds < 2:
        raise UserError(
            f"{len(overlap)} evaluated items are also probe training items; give --cross-fit K "
            "(K >= 2) to score them out of fold, or evaluate on another split")
    X = _embed(embedder, [normalize_text(t) for t in texts], progress=progress)
    version = embedder.model_version
    C = probe_C(embedder, C)
    sources = [key[0] for key in keys]
    final = fit_probes(X, labels, embedder=version, C=C, sources=sources, heads=heads)
    by_item: dict[tuple[str, str], Any] = {}
    if overlap:
        ov_keys = [f"{keys[i][0]}/{keys[i][1]}" for i in overlap]
        ov_any = [int(any(labels[c].get(i) == 1 for c in labels)) for i in overlap]
        fold_of = stratified_folds(ov_keys, ov_any, folds)
        row_fold = {i: fold_of[k] for i, k in zip(overlap, ov_keys, strict=True)}
        for f in range(folds):
            keep = [r for r in range(len(keys)) if row_fold.get(r) != f]
            index = {r: j for j, r in enumerate(keep)}
            sub = {code: {index[r]: y for r, y in rows.items() if r in index}
                   for code, rows in labels.items()}
            probes = fit_probes(X[keep], sub, embedder=version, C=C,
                                sources=[sources[r] for r in keep], heads=heads)
            for r, fr in row_fold.items():
                if fr == f:
                    by_item[keys[r]] = probes
    desc = (f"trained in the run on {', '.join(ds.name for ds in train)}"
            + ("; per-source heads" if heads == "per_source" else "")
            + (f"; {len(overlap)} evaluated training items scored out of fold ({folds}-fold)"
               if overlap else ""))
    return ProbePlan(final=final, by_item=by_item, folds=folds if overlap else 0,
                     description=desc, C=C)
