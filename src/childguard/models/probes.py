"""Per-category probes: calibrated linear classifiers on embeddings.

Why: a logistic regression on all-MiniLM-L6-v2 embeddings is the strongest cheap signal we have
(docs/quality.md) and costs microseconds, so it drives the gate that lets clearly benign
items skip the LLM judge. Its output is only useful as a *probability* (the gate compares it to
`allow_below`, the decision compares it to per-category thresholds), so each probe is calibrated
(Platt scaling inside cross-validation, sklearn's `CalibratedClassifierCV(method="sigmoid")`).

Per-source heads (`HeadedProbe`): a category labelled by two sources that describe it
differently (the OpenAI moderation set's explicit texts, our own set's abstract behaviour
descriptions) can be trained as one probe per source, P = the highest head's. Measured on the
OpenAI dev half (5-fold x 3 seeds, sexual_minors): one pooled probe 0.583 AUPRC, the OpenAI rows
alone 0.650, a max of the two heads 0.633; the pooled probe spends its one direction on both.

Storage: the fitted numbers (per fold: LR weights, bias, Platt a and b) are written to a plain
`.npz` and a `manifest.json` (embedder, dimension, categories, training metrics). No pickle, so
loading a probe file cannot run code and does not depend on the sklearn version. The version is
the sha256 of the `.npz` content; loading verifies it, so the version in a verdict's
`model_versions` names exactly the numbers that produced the score.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from childguard.errors import ModelUnavailable, UserError
from childguard.settings import Settings

__all__ = ["MIN_POSITIVES", "CategoryProbe", "HeadedProbe", "ProbeSet", "train_probes"]

#: fewer positives than this and a category is skipped (listed in the manifest)
MIN_POSITIVES = 3
_ARRAYS = "probes.npz"
_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class CategoryProbe:
    """An ensemble of calibrated linear classifiers for one category (one member per CV fold).

    P = mean_k sigmoid(-(a_k * (w_k . x + b_k) + c_k)), as sklearn's sigmoid calibration.
    """

    weights: np.ndarray  # (k, dim)
    bias: np.ndarray  # (k,)
    platt_a: np.ndarray  # (k,)
    platt_b: np.ndarray  # (k,)

    def predict(self, embs: np.ndarray) -> np.ndarray:
        f = embs @ self.weights.T + self.bias  # (n, k)
        z = -(f * self.platt_a + self.platt_b)
        return np.asarray(_sigmoid(z).mean(axis=1), dtype=np.float64)


@dataclass(frozen=True)
class HeadedProbe:
    """One category's probes trained per data source (`heads`: source name -> probe); the
    score is the highest head's: an item is as likely a violation as the head that knows its
    kind of text says."""

    heads: dict[str, CategoryProbe]

    def __post_init__(self) -> None:
        if not self.heads:
            raise UserError("a headed probe needs at least one head")
        for name in self.heads:
            if not name or not all(ch.isalnum() or ch in "-_" for ch in name):
                raise UserError(f"probe head name {name!r} must be letters, digits, '-' or '_'")

    def predict(self, embs: np.ndarray) -> np.ndarray:
        return np.asarray(np.max([self.heads[h].predict(embs) for h in sorted(self.heads)],
                                 axis=0), dtype=np.float64)


AnyProbe = CategoryProbe | HeadedProbe


@dataclass
class ProbeSet:
    """The probes of one embedder: P(category) for each trained category code."""

    embedder: str
    dim: int
    probes: dict[str, AnyProbe]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    version: str = ""
    #: ids of the labelled items the probes were fitted on (ids only, no text): an evaluation
    #: refuses to report these probes on any of them (`evaluation.runner.evaluate`)
    trained_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.version:
            self.version = hashlib.sha256(self._arrays_bytes()).hexdigest()[:16]

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(sorted(self.probes))

    @property
    def model_version(self) -> str:
        return f"probes:{self.embedder}:{self.version}"

    def predict(self, embs: np.ndarray) -> dict[str, np.ndarray]:
        """Calibrated P(category) per code, each an array of shape (n,)."""
        embs = np.asarray(embs, dtype=np.float64)
        if embs.ndim != 2 or embs.shape[1] != self.dim:
            raise UserError(
                f"probe set {self.version} ({self.embedder}) expects embeddings of shape "
                f"(n, {self.dim}); received {embs.shape}"
            )
        return {code: self.probes[code].predict(embs) for code in self.categories}

    # -- persistence ----------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        """Write `<directory>/<embedder>-<version>/` (arrays + manifest); returns that folder."""
        out = Path(directory) / f"{_slug(self.embedder)}-{self.version}"
        out.mkdir(parents=True, exist_ok=True)
        (out / _ARRAYS).write_bytes(self._arrays_bytes())
        heads = {code: sorted(p.heads) for code, p in self.probes.items()
                 if isinstance(p, HeadedProbe)}
        manifest = {
            "format": 2 if heads else 1,
            **({"heads": heads} if heads else {}),
            "version": self.version,
            "embedder": self.embedder,
            "dim": self.dim,
            "categories": list(self.categories),
            "skipped": self.skipped,
            "metrics": self.metrics,
            "created_at": self.created_at,
            "sha256": hashlib.sha256(self._arrays_bytes()).hexdigest(),
            "trained_on": list(self.trained_on),
        }
        (out / _MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return out

    @classmethod
    def load(cls, path: Path) -> ProbeSet:
        """Load a folder written by `save`; verifies the content hash against the manifest."""
        path = Path(path)
        try:
            manifest = json.loads((path / _MANIFEST).read_text("utf-8"))
            raw = (path / _ARRAYS).read_bytes()
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"probe set at {path} cannot be read: {exc}") from exc
        digest = hashlib.sha256(raw).hexdigest()
        if digest != manifest.get("sha256"):
            raise ModelUnavailable(
                f"probe set at {path} is corrupt: arrays sha256 {digest[:16]} does not match "
                f"the manifest's {str(manifest.get('sha256'))[:16]}"
            )
        if int(manifest.get("format", 1)) > 2:
            raise ModelUnavailable(
                f"probe set at {path} has format {manifest['format']}; this version reads "
                "formats 1 and 2 (upgrade childguard)")
        heads = manifest.get("heads", {})

        def member(data: Any, key: str) -> CategoryProbe:
            return CategoryProbe(weights=data[f"{key}.weights"], bias=data[f"{key}.bias"],
                                 platt_a=data[f"{key}.platt_a"], platt_b=data[f"{key}.platt_b"])

        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            probes: dict[str, AnyProbe] = {
                code: HeadedProbe({h: member(data, f"{code}@{h}") for h in heads[code]})
                if code in heads else member(data, code)
                for code in manifest["categories"]
            }
        return cls(
            embedder=manifest["embedder"],
            dim=int(manifest["dim"]),
            probes=probes,
            metrics=manifest.get("metrics", {}),
            skipped=manifest.get("skipped", {}),
            created_at=manifest.get("created_at", ""),
            version=manifest["version"],
            trained_on=tuple(manifest.get("trained_on", ())),
        )

    @classmethod
    def load_default(cls, settings: Settings, embedder: str | None = None) -> ProbeSet | None:
        """The newest probe set under `settings.probes_dir` (for `embedder` if given), or None.

        None means no probes were trained yet: the gate then judges everything. A probe folder
        that exists but is corrupt raises ModelUnavailable (start-up fails loudly).
        """
        root = settings.probes_dir
        if not root.is_dir():
            return None
        found: list[tuple[str, Path]] = []
        for manifest in root.glob(f"*/{_MANIFEST}"):
            try:
                meta = json.loads(manifest.read_text("utf-8"))
            except (OSError, ValueError) as exc:
                raise ModelUnavailable(f"probe manifest {manifest} is unreadable: {exc}") from exc
            if embedder is None or meta.get("embedder") == embedder:
                found.append((str(meta.get("created_at", "")), manifest.parent))
        if not found:
            return None
        return cls.load(max(found)[1])

    def _arrays_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {}
        for code in self.categories:
            probe = self.probes[code]
            members = ({f"{code}@{h}": probe.heads[h] for h in sorted(probe.heads)}
                       if isinstance(probe, HeadedProbe) else {code: probe})
            for key, p in members.items():
                arrays[f"{key}.weights"] = np.ascontiguousarray(p.weights, dtype=np.float64)
                arrays[f"{key}.bias"] = np.ascontiguousarray(p.bias, dtype=np.float64)
                arrays[f"{key}.platt_a"] = np.ascontiguousarray(p.platt_a, dtype=np.float64)
                arrays[f"{key}.platt_b"] = np.ascontiguousarray(p.platt_b, dtype=np.float64)
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # uncompressed: byte-for-byte deterministic for equal arrays
        return buf.getvalue()


def train_probes(
    X: np.ndarray,
    labels: Mapping[str, np.ndarray],
    *,
    embedder: str,
    C: float = 4.0,
    folds: int = 5,
    seed: int = 0,
) -> ProbeSet:
    """Train one calibrated probe per category code in `labels` (0/1 arrays aligned with X).

    Categories with fewer than MIN_POSITIVES positives (or negatives) are skipped and listed in
    `skipped`. `metrics` holds cross-validated AUROC, AUPRC and Brier score of the calibrated
    probabilities (out-of-fold, so not inflated by training on the same rows).
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise UserError(f"X must be a non-empty 2-D array (n, dim); received shape {X.shape}")
    probes: dict[str, AnyProbe] = {}
    metrics: dict[str, dict[str, float]] = {}
    skipped: dict[str, str] = {}
    for code in sorted(labels):
        y = np.asarray(labels[code]).astype(int).ravel()
        if y.shape[0] != X.shape[0]:
            raise UserError(
                f"labels[{code!r}] has {y.shape[0]} rows; X has {X.shape[0]}"
            )
        if not set(np.unique(y)) <= {0, 1}:
            raise UserError(f"labels[{code!r}] must be 0/1; found {sorted(set(np.unique(y)))}")
        n_pos, n_neg = int(y.sum()), int((1 - y).sum())
        if min(n_pos, n_neg) < MIN_POSITIVES:
            skipped[code] = f"{n_pos} positives, {n_neg} negatives (need {MIN_POSITIVES} of each)"
            continue
        k = min(folds, n_pos, n_neg)
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        base = LogisticRegression(
            C=C, class_weight="balanced", solver="liblinear", max_iter=2000
        )
        model = CalibratedClassifierCV(base, method="sigmoid", cv=cv, ensemble=True)
        model.fit(X, y)
        probes[code] = _extract(model)
        oof_cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed + 1)
        oof = cross_val_predict(
            CalibratedClassifierCV(base, method="sigmoid", cv=min(3, k - 1)),
            X, y, cv=oof_cv, method="predict_proba",
        )[:, 1]
        metrics[code] = {
            "n": float(len(y)),
            "positives": float(n_pos),
            "auroc_cv": float(roc_auc_score(y, oof)),
            "auprc_cv": float(average_precision_score(y, oof)),
            "brier_cv": float(brier_score_loss(y, oof)),
        }
    if not probes:
        raise UserError(f"no category could be trained: {skipped}")
    return ProbeSet(
        embedder=embedder, dim=int(X.shape[1]), probes=probes, metrics=metrics, skipped=skipped
    )


def _extract(model: Any) -> CategoryProbe:
    weights, bias, a, b = [], [], [], []
    for cc in model.calibrated_classifiers_:
        est = cc.estimator
        cal = cc.calibrators[0]
        weights.append(np.asarray(est.coef_[0], dtype=np.float64))
        bias.append(float(est.intercept_[0]))
        a.append(float(cal.a_))
        b.append(float(cal.b_))
    return CategoryProbe(
        weights=np.stack(weights), bias=np.array(bias), platt_a=np.array(a), platt_b=np.array(b)
    )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:60]
