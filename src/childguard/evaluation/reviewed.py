"""The `reviewed` evaluation set: reviewer decisions, snapshotted into numbered versions.

Why: reviewer decisions are the labels that matter most (the model's misses and false alarms,
on the product's own traffic), and they should become evaluation and training sets without a
person exporting anything. `snapshot()` writes every reviewed item as of now as version N
(`<home>/datasets/reviewed/vNNNN.jsonl`) and logs it to MLflow (experiment
`childguard-datasets`: the rows as an artifact, the set as a dataset input with our digest,
counts as metrics, what changed since version N-1 as params); the worker takes one
periodically.

A row holds ids, labels, hashes and the model's verdict, never content:
- labels from the latest revision (`labels_from_review`: a reviewer's allow = every category
  0; block/escalate = the chosen categories 1, the others 0);
- `revisions` and `reviewers` (distinct), the model's decision and category scores alongside;
- `split`: by decision date, the newest `TEST_SHARE` of the items are `test`, the older ones
  `train` (so training on `reviewed@vN[train]` and reporting on `[test]` never mixes a
  decision with one taken before it).
Text is resolved at evaluation time from the restricted store (`Store.training_content`, an
audited read by the evaluation role); rows whose content expired or was purged keep their
labels and hashes, and `load()` returns their ids next to the set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from childguard.errors import NotFound, UserError
from childguard.evaluation.datasets import EvalDataset, EvalItem, labels_from_review
from childguard.schema import Message, ReviewDecision, Verdict

NAME = "reviewed"
EXPERIMENT_DATASETS = "childguard-datasets"
#: share of the items (the newest decisions) that form the `test` split
TEST_SHARE = 0.2
_ROW_KEYS = ("id", "labels", "outcome", "revision", "revisions", "reviewers", "decided_at",
             "model_decision", "model_scores", "text_sha256", "image_sha256", "split")


class ReviewedSource(Protocol):
    """What a snapshot reads from the store (ids, decisions, verdicts, hashes)."""

    def reviewed_item_ids(self) -> list[str]: ...

    def review_history(self, item_id: str) -> list[ReviewDecision]: ...

    def get_model_verdict(self, item_id: str) -> Verdict | None: ...

    def item_info(self, item_id: str) -> Any: ...


class ContentSource(Protocol):
    def training_content(self, item_ids: list[str], *, actor: str
                         ) -> dict[str, dict[str, Any] | None]: ...


@dataclass(frozen=True)
class Snapshot:
    """One version of the set: its rows (no content) and what changed since the previous."""

    version: int
    rows: tuple[dict[str, Any], ...]
    digest: str
    created_at: str
    new: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    run_id: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{NAME}@v{self.version}"


def digest(rows: Sequence[dict[str, Any]]) -> str:
    """sha256 (16 hex) of the canonical rows: equal rows, equal digest."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps({k: r.get(k) for k in _ROW_KEYS}, sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def build_rows(store: ReviewedSource, codes: Sequence[str], *,
               test_share: float = TEST_SHARE) -> list[dict[str, Any]]:
    """Every reviewed item as a row (latest revision's labels), split by decision date."""
    rows: list[dict[str, Any]] = []
    for item_id in store.reviewed_item_ids():
        history = store.review_history(item_id)
        if not history:
            continue
        final = max(history, key=lambda d: (d.decided_at, d.revision))
        model = store.get_model_verdict(item_id)
        info = store.item_info(item_id)
        hashes = dict(getattr(info, "hashes", {}) or {})
        rows.append({
            "id": item_id,
            "labels": labels_from_review(final, codes),
            "outcome": final.outcome.value,
            "revision": final.revision,
            "revisions": len(history),
            "reviewers": sorted({d.reviewer for d in history}),
            "decided_at": final.decided_at.isoformat(),
            "model_decision": model.decision.value if model is not None else None,
            "model_scores": ({c.code: round(float(c.score), 6) for c in model.categories}
                             if model is not None else {}),
            "text_sha256": hashes.get("text_sha256"),
            "image_sha256": hashes.get("image_sha256"),
        })
    rows.sort(key=lambda r: (r["decided_at"], r["id"]))
    n_test = round(len(rows) * test_share) if len(rows) >= 5 else 0
    for i, r in enumerate(rows):
        r["split"] = "test" if i >= len(rows) - n_test else "train"
    return rows


class ReviewedSets:
    """The versions of the `reviewed` set in `<home>/datasets/reviewed/`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, version: int) -> Path:
        return self.root / f"v{version:04d}.jsonl"

    def versions(self) -> list[int]:
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.glob("v*.jsonl"):
            try:
                out.append(int(p.stem[1:]))
            except ValueError:
                continue
        return sorted(out)

    def resolve(self, ref: str) -> int:
        """`latest`, `vN` or `N` -> a version number that exists."""
        versions = self.versions()
        if not versions:
            raise NotFound(f"{NAME}: no snapshot yet; take one with `childguard eval "
                           "snapshot-reviews`")
        tag = ref.strip().lower()
        if tag in ("", "latest"):
            return versions[-1]
        try:
            version = int(tag[1:] if tag.startswith("v") else tag)
        except ValueError:
            raise UserError(f"{NAME}@{ref}: use @latest or @vN (N a number)") from None
        if version not in versions:
            raise NotFound(f"{NAME}@{ref}: no such version; have "
                           f"{', '.join(f'v{v}' for v in versions)}")
        return version

    def read(self, ref: str = "latest") -> Snapshot:
        version = self.resolve(ref)
        lines = self._path(version).read_text(encoding="utf-8").splitlines()
        head = json.loads(lines[0])
        rows = tuple(json.loads(line) for line in lines[1:] if line.strip())
        return Snapshot(version=version, rows=rows, digest=head["digest"],
                        created_at=head["created_at"], new=tuple(head.get("new", [])),
                        changed=tuple(head.get("changed", [])), run_id=head.get("run_id"),
                        counts=head.get("counts", {}))

    def snapshot(self, store: ReviewedSource, codes: Sequence[str], *,
                 now: datetime, test_share: float = TEST_SHARE,
                 force: bool = False) -> Snapshot | None:
        """Write the next version; None when nothing changed since the latest (unless
        `force`). The caller logs it to MLflow (`log_snapshot`) and records the run id."""
        rows = build_rows(store, codes, test_share=test_share)
        previous = self.read() if self.versions() else None
        dig = digest(rows)
        if previous is not None and previous.digest == dig and not force:
            return None
        before = {r["id"]: r for r in previous.rows} if previous is not None else {}
        new = tuple(r["id"] for r in rows if r["id"] not in before)
        changed = tuple(r["id"] for r in rows if r["id"] in before
                        and (before[r["id"]]["labels"], before[r["id"]]["revision"])
                        != (r["labels"], r["revision"]))
        version = (self.versions() or [0])[-1] + 1
        snap = Snapshot(version=version, rows=tuple(rows), digest=dig,
                        created_at=now.isoformat(), new=new, changed=changed,
                        counts=counts(rows, codes))
        self._write(snap)
        return snap

    def _write(self, snap: Snapshot) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        head = {"name": NAME, "version": snap.version, "digest": snap.digest,
                "created_at": snap.created_at, "new": list(snap.new),
                "changed": list(snap.changed), "run_id": snap.run_id, "counts": snap.counts}
        tmp = self._path(snap.version).with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(x, sort_keys=True) + "\n"
                               for x in (head, *snap.rows)), encoding="utf-8")
        tmp.replace(self._path(snap.version))

    def set_run_id(self, snap: Snapshot, run_id: str) -> Snapshot:
        from dataclasses import replace

        done = replace(snap, run_id=run_id)
        self._write(done)
        return done

    def load(self, ref: str, content: ContentSource | None, *, actor: str,
             splits: Sequence[str] = ()) -> tuple[EvalDataset, list[str]]:
        """The version as an evaluation set with text from the restricted store, and the ids
        of rows whose content is gone (expired, purged or never retained): those rows stay in
        the set without text (the runner skips them and says how many)."""
        snap = self.read(ref)
        rows = [r for r in snap.rows if not splits or r["split"] in splits]
        texts = (content.training_content([r["id"] for r in rows], actor=actor)
                 if content is not None and rows else {})
        items: list[EvalItem] = []
        missing: list[str] = []
        for r in rows:
            c = texts.get(r["id"])
            if not c or not c.get("text"):
                missing.append(r["id"])
            context = tuple(Message.model_validate(m) for m in (c or {}).get("context") or [])
            items.append(EvalItem(
                id=r["id"], text=(c or {}).get("text"), labels=r["labels"], context=context,
                split=r["split"],
                meta={"reviewer_outcome": r["outcome"], "revision": str(r["revision"])}))
        name = f"{NAME}@v{snap.version}" + (f":{'-'.join(splits)}" if splits else "")
        ds = EvalDataset(name, tuple(items), source=f"{NAME}@v{snap.version}:{snap.digest}",
                         description=f"reviewer decisions, snapshot v{snap.version} "
                         f"({snap.created_at})")
        return ds, missing


def counts(rows: Sequence[dict[str, Any]], codes: Sequence[str]) -> dict[str, Any]:
    """Counts only (safe to log): rows, splits, outcomes, positives per code, overturns."""
    out: dict[str, Any] = {"rows": len(rows)}
    for key in ("split", "outcome"):
        for r in rows:
            k = f"{key}.{r[key]}"
            out[k] = out.get(k, 0) + 1
    for code in codes:
        out[f"positive.{code}"] = sum(1 for r in rows if r["labels"].get(code) == 1)
    out["changed_decision"] = sum(1 for r in rows if r["revisions"] > 1)
    return out


def log_snapshot(settings: Any, snap: Snapshot, quality: dict[str, Any] | None = None) -> str:
    """One MLflow run per snapshot: the rows (ids, labels, hashes) as an artifact and as a
    dataset input whose digest is the snapshot's, counts as metrics, and the review-quality
    report (metrics, JSON, plots) when given. Returns the run id."""
    import tempfile
    import warnings

    import mlflow

    from childguard.evaluation import tracking

    exp = tracking.experiment_id(settings, EXPERIMENT_DATASETS)
    ds = EvalDataset(f"{NAME}@v{snap.version}",
                     tuple(EvalItem(id=r["id"], text=None, labels=r["labels"], split=r["split"])
                           for r in snap.rows),
                     source=f"{NAME}@v{snap.version}")
    with mlflow.start_run(experiment_id=exp, run_name=f"{NAME}-v{snap.version}") as run:
        mlflow.set_tags({"childguard.dataset": NAME, "childguard.version": str(snap.version),
                         "childguard.digest": snap.digest})
        tracking.log_params({"dataset": NAME, "version": snap.version, "digest": snap.digest,
                             "created_at": snap.created_at, "new": len(snap.new),
                             "changed": len(snap.changed), "test_share": TEST_SHARE})
        tracking.log_metrics({k: float(v) for k, v in snap.counts.items()})
        from mlflow.data.pandas_dataset import from_pandas

        frame = tracking.dataset_frame(ds).assign(
            revision=[r["revision"] for r in snap.rows],
            outcome=[r["outcome"] for r in snap.rows],
            text_sha256=[r["text_sha256"] or "" for r in snap.rows],
            image_sha256=[r["image_sha256"] or "" for r in snap.rows])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            mlflow.log_input(from_pandas(frame, source=ds.source, name=ds.name,
                                         digest=snap.digest), context="snapshot")
        if quality is not None:
            from childguard.evaluation import review_quality as rq

            tracking.log_metrics(rq.metrics(quality))
            tracking.log_json(quality, "review_quality/report.json")
            with tempfile.TemporaryDirectory() as tmp:
                for path in rq.plots(quality, Path(tmp)):
                    mlflow.log_artifact(str(path), "review_quality")
        mlflow.log_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in snap.rows),
                        f"{NAME}/v{snap.version:04d}.jsonl")
        return str(run.info.run_id)


def parse_ref(ref: str) -> tuple[str, tuple[str, ...]]:
    """`reviewed@v3[train]` -> ("v3", ("train",)); `reviewed` alone is `@latest`."""
    body = ref.strip()
    splits: tuple[str, ...] = ()
    if body.endswith("]") and "[" in body:
        body, _, rest = body.partition("[")
        splits = tuple(x.strip() for x in rest[:-1].split(",") if x.strip())
    name, _, tag = body.partition("@")
    if name != NAME:
        raise UserError(f"{ref!r} is not a reviewed set reference (reviewed@latest, "
                        "reviewed@vN, optionally with [train] or [test])")
    bad = [x for x in splits if x not in ("train", "test")]
    if bad:
        raise UserError(f"{ref}: the reviewed set has splits train and test; received "
                        f"{', '.join(bad)}")
    return tag or "latest", splits


def take_snapshot(settings: Any, *, force: bool = False, log: bool = True,
                  now: datetime | None = None) -> Snapshot | None:
    """Snapshot the store's reviewer decisions under the settings' data dir and log the
    version to MLflow; None when nothing changed since the latest version."""
    from datetime import UTC

    from childguard.policy import load_policy, resolve_policy_path
    from childguard.store.store import Store

    policy = load_policy(resolve_policy_path(settings.policy, settings.policies_dir))
    sets = ReviewedSets(settings.reviewed_dir)
    store = Store.from_settings(settings)
    try:
        snap = sets.snapshot(store, policy.spec.codes, now=now or datetime.now(UTC),
                             force=force)
        if snap is None:
            return None
        if log:
            from childguard.evaluation.review_quality import review_quality

            quality = review_quality(store, policy, settings.review)
            snap = sets.set_run_id(snap, log_snapshot(settings, snap, quality))
        store.append_audit("eval", "reviewed.snapshot", NAME, {
            "version": snap.version, "digest": snap.digest, "rows": len(snap.rows),
            "new": len(snap.new), "changed": len(snap.changed), "run_id": snap.run_id})
        return snap
    finally:
        store.close()
