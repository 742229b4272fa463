"""The outbox worker: review items leave the store and become Label Studio tasks, exactly once.

Why an outbox: the verdict, its audit event and the outbox row are written in one transaction,
so an item sent to review can never be lost between the store and Label Studio, whatever is
down. The worker claims rows (a lease: a crashed worker's rows become claimable again), and for
each row makes sure exactly one task exists:

- Idempotent by lookup: before creating a task it searches the project for a task whose data
  carries our `item_id`. A create whose response was lost (Label Studio killed mid-request, a
  timeout) is found on the retry instead of being created twice.
- Task and prediction are created by one import call (one transaction on Label Studio's side);
  a task found without its prediction gets it added.
- Label Studio down, slow or 5xx: the row goes back with an exponential backoff
  (`retry_at = now + min(cap, base * 2**attempts)`), and the rest of the batch is released at
  once instead of timing out one by one.

Priority and SLA: severity (of the worst category the model flagged; error verdicts count as
at least high) sets the SLA deadline (`review.sla_hours`); priority = 100 * severity rank + up to
99 for uncertainty (scores near the middle of the review band are the ones a human adds most to).

Images reach Label Studio as signed, expiring URLs to our media endpoint, never as base64: the
image bytes stay in our restricted media area, under our retention.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from childguard.errors import NotFound
from childguard.policy import Policy
from childguard.review_bridge.client import (
    LabelStudioClient,
    LabelStudioError,
    LabelStudioUnavailable,
)
from childguard.review_bridge.config import model_summary, prediction
from childguard.review_bridge.ports import (
    ReviewStore,
    info_field,
    outbox_attempts,
    outbox_created,
    outbox_id,
    review_content,
)
from childguard.review_bridge.signing import media_url
from childguard.schema import Decision, Severity, Verdict
from childguard.settings import ReviewSettings

log = logging.getLogger("childguard.review")

BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 300.0
TEXT_NOT_KEPT = "(the item's text is not kept for review by this store; ids and hashes only)"


def backoff_s(attempts: int, *, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S,
              jitter: float = 0.1) -> float:
    """Delay before retry number `attempts` (1 = first retry), with +-10% jitter."""
    delay: float = min(cap, base * (2.0 ** max(0, attempts - 1)))
    return delay * (1.0 + random.uniform(-jitter, jitter))


# -- priority and SLA ---------------------------------------------------------------------


def item_severity(verdict: Verdict, policy: Policy) -> Severity:
    """The worst severity among categories the model did not allow; error verdicts -> high."""
    worst: Severity | None = None
    for cat in verdict.categories:
        if cat.decision is Decision.ALLOW:
            continue
        try:
            sev = policy.spec.category(cat.code).severity
        except KeyError:
            sev = Severity.HIGH
        if worst is None or sev.rank > worst.rank:
            worst = sev
    for m in verdict.hash_matches:
        if m.severity is not None and (worst is None or m.severity.rank > worst.rank):
            worst = m.severity
    if verdict.errors and (worst is None or worst.rank < Severity.HIGH.rank):
        # a failed stage: what did not run may have found worse; unknown is not low
        return Severity.HIGH
    if worst is None:
        # nothing flagged yet sent to review: an unscored item; unknown is not low
        return Severity.HIGH if not verdict.categories else Severity.MEDIUM
    return worst


def uncertainty(verdict: Verdict, policy: Policy) -> float:
    """1.0 when the top score sits mid-way between its review and block thresholds, 0 at either
    end; error verdicts (a stage did not run, whatever the others scored) are maximally
    uncertain."""
    top = verdict.top_category
    if top is None or verdict.errors:
        return 1.0
    try:
        th = policy.spec.category(top.code).thresholds
    except KeyError:
        return 1.0
    mid, half = (th.review + th.block) / 2, (th.block - th.review) / 2
    return max(0.0, 1.0 - abs(top.score - mid) / half) if half > 0 else 1.0


def priority(verdict: Verdict, policy: Policy) -> int:
    return 100 * item_severity(verdict, policy).rank + round(99 * uncertainty(verdict, policy))


def sla_due(severity: Severity, queued_at: datetime, review: ReviewSettings) -> datetime:
    hours = review.sla_hours.get(severity.value, review.sla_hours.get("medium", 24.0))
    return queued_at + timedelta(hours=hours)


# -- metrics ------------------------------------------------------------------------------


class WorkerMetrics:
    """Queue depth, oldest age, tasks created and failures, on a registry of the caller's."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.depth = Gauge("childguard_review_queue_depth",
                           "review items not yet a Label Studio task", registry=r)
        self.oldest = Gauge("childguard_review_queue_oldest_age_seconds",
                            "age of the oldest review item not yet a task", registry=r)
        self.tasks = Counter("childguard_review_tasks",
                             "outbox rows settled, by result (created, existing)", ["result"],
                             registry=r)
        self.failures = Counter("childguard_review_outbox_failures",
                                "outbox attempts that failed, by reason", ["reason"], registry=r)

    def observe_stats(self, stats: dict[str, Any]) -> None:
        self.depth.set(float(stats.get("depth", 0)))
        self.oldest.set(float(stats.get("oldest_age_s", 0.0)))


# -- the worker ---------------------------------------------------------------------------


@dataclass
class WorkerReport:
    claimed: int = 0
    created: int = 0
    existing: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    settled: set[str] = field(default_factory=set)

    @property
    def label_studio_down(self) -> bool:
        return any(e.startswith("unavailable") for e in self.errors)

    def to_json(self) -> dict[str, Any]:
        return {"claimed": self.claimed, "created": self.created, "existing": self.existing,
                "failed": self.failed, "errors": self.errors[:10]}


class OutboxWorker:
    """Moves claimed outbox rows into Label Studio tasks (see the module docstring)."""

    def __init__(self, store: ReviewStore, client: LabelStudioClient, policy: Policy,
                 review: ReviewSettings, *, project_id: int, media_key: str,
                 metrics: WorkerMetrics | None = None) -> None:
        self.store = store
        self.client = client
        self.policy = policy
        self.review = review
        self.project_id = project_id
        self.media_key = media_key
        self.metrics = metrics or WorkerMetrics()

    # -- one pass --------------------------------------------------------------------------
    def run_once(self, limit: int = 50, *, now: datetime | None = None) -> WorkerReport:
        """Claim up to `limit` due rows and settle each (task made, or put back with backoff).

        Batched: one lookup for the whole batch (which items already have a task), one import
        of the missing tasks with their predictions, one lookup for the new task ids; so a
        batch costs three requests to Label Studio, not three per item.
        """
        report = WorkerReport()
        rows = self.store.claim_outbox(limit, now=now)
        report.claimed = len(rows)
        if rows:
            try:
                self._settle_batch(rows, report)
            except LabelStudioUnavailable as exc:
                for row in rows:
                    if not self._settled(row, report):
                        self._failed(row, str(exc), report, reason="unavailable")
            except LabelStudioError as exc:
                for row in rows:
                    if not self._settled(row, report):
                        self._failed(row, str(exc), report, reason="refused")
        try:
            self.metrics.observe_stats(self.store.outbox_stats())
        except Exception:  # metrics must never break the worker
            log.warning("review: could not read outbox stats", exc_info=True)
        return report

    @staticmethod
    def _settled(row: Any, report: WorkerReport) -> bool:
        return str(row.item_id) in report.settled

    def _done(self, row: Any, task_id: int, result: str, report: WorkerReport) -> None:
        self.store.outbox_done(outbox_id(row), str(task_id))
        self.metrics.tasks.labels(result=result).inc()
        report.settled.add(str(row.item_id))
        if result == "created":
            report.created += 1
        else:
            report.existing += 1

    def _settle_batch(self, rows: list[Any], report: WorkerReport) -> None:
        item_ids = [str(r.item_id) for r in rows]
        existing = self.client.find_tasks_by_values(self.project_id, "item_id", item_ids)
        to_create: list[tuple[Any, dict[str, Any]]] = []
        for row in rows:
            item_id = str(row.item_id)
            try:
                verdict = self._model_verdict(item_id)
                tasks = existing.get(item_id) or []
                if tasks:
                    task = min(tasks, key=lambda t: int(t["id"]))
                    if len(tasks) > 1:
                        log.error("review: item %s has %d tasks (%s); using the oldest",
                                  item_id, len(tasks), [t["id"] for t in tasks])
                    if not task.get("total_predictions") and not task.get("predictions"):
                        self.client.create_prediction(int(task["id"]),
                                                      prediction(verdict, self.policy))
                    self._done(row, int(task["id"]), "existing", report)
                    continue
                info = self.store.item_info(item_id)
                to_create.append((row, {"data": self.task_data(row, verdict, info),
                                        "predictions": [prediction(verdict, self.policy)]}))
            except (LabelStudioUnavailable, LabelStudioError):
                raise
            except NotFound as exc:
                self._failed(row, str(exc), report, reason="not_found", long=True)
                report.settled.add(item_id)
            except Exception as exc:  # a bug must not lose the row: back with backoff
                log.exception("review: outbox row %s failed", outbox_id(row))
                self._failed(row, f"{type(exc).__name__}: {exc}", report, reason="error")
                report.settled.add(item_id)
        if not to_create:
            return
        self.client.import_tasks(self.project_id, [task for _, task in to_create])
        created = self.client.find_tasks_by_values(
            self.project_id, "item_id", [str(r.item_id) for r, _ in to_create])
        for row, _ in to_create:
            tasks = created.get(str(row.item_id)) or []
            if tasks:
                self._done(row, min(int(t["id"]) for t in tasks), "created", report)
            else:
                self._failed(row, "Label Studio accepted the task but does not list it yet",
                             report, reason="unavailable")
                report.settled.add(str(row.item_id))

    def drain(self, *, limit: int = 50, max_passes: int = 100, now: datetime | None = None
              ) -> WorkerReport:
        """Run passes until nothing is due (or Label Studio is down); the sum of reports."""
        total = WorkerReport()
        for _ in range(max_passes):
            rep = self.run_once(limit, now=now)
            total.claimed += rep.claimed
            total.created += rep.created
            total.existing += rep.existing
            total.failed += rep.failed
            total.errors.extend(rep.errors)
            if rep.claimed == 0 or rep.label_studio_down:
                break
        return total

    def run_forever(self, stop: threading.Event, *, interval_s: float = 2.0,
                    on_pass: Any = None) -> None:
        """Poll the outbox until `stop` is set; back off while Label Studio is down."""
        down_passes = 0
        while not stop.is_set():
            rep = self.drain()
            if on_pass is not None:
                on_pass(rep)
            if rep.label_studio_down:
                down_passes += 1
                wait = backoff_s(down_passes)
                log.warning("review: Label Studio unavailable; next try in %.0f s", wait)
            else:
                down_passes = 0
                wait = interval_s
            stop.wait(wait)

    # -- one row ---------------------------------------------------------------------------
    def _model_verdict(self, item_id: str) -> Verdict:
        getter = getattr(self.store, "get_model_verdict", None) or self.store.get_verdict
        verdict = getter(item_id)
        if verdict is None:
            raise NotFound(f"item {item_id} is in the review outbox but has no verdict")
        return verdict

    def task_data(self, row: Any, verdict: Verdict, info: Any) -> dict[str, Any]:
        item_id = str(row.item_id)
        queued = outbox_created(row)
        severity = item_severity(verdict, self.policy)
        content = review_content(self.store, item_id) or {}
        context = content.get("context") or []
        context_text = "\n".join(
            f"[{m[0]}] {m[1]}" if isinstance(m, list | tuple) else
            f"[{m.get('author', 'other')}] {m.get('text', '')}" if isinstance(m, dict) else str(m)
            for m in context
        )
        media_id = info_field(info, "media_id")
        image = ""
        if media_id:
            image = media_url(self.review.public_url, self.media_key, str(media_id),
                              ttl_s=self.review.media_url_ttl_hours * 3600)
        text = content.get("text")
        if not text and (info_field(info, "hashes") or {}).get("text_sha256"):
            text = TEXT_NOT_KEPT  # the item had text, but this store keeps only its hash
        return {
            "item_id": item_id,
            "text": text or "",
            "context": context_text,
            "image": image,
            "model_summary": model_summary(verdict),
            "severity": severity.value,
            "priority": priority(verdict, self.policy),
            "sla_due": sla_due(severity, queued, self.review).astimezone(UTC).isoformat(),
            "queued_at": queued.astimezone(UTC).isoformat(),
            "policy_id": verdict.policy_id,
            "policy_version": verdict.policy_version,
            "source": info_field(info, "source") or "",
        }

    def _failed(self, row: Any, error: str, report: WorkerReport, *, reason: str,
                long: bool = False) -> None:
        attempts = outbox_attempts(row)
        delay = BACKOFF_CAP_S if long else backoff_s(attempts)
        retry_at = datetime.now(UTC) + timedelta(seconds=delay)
        self.store.outbox_failed(outbox_id(row), error[:2000], retry_at)
        self.metrics.failures.labels(reason=reason).inc()
        report.failed += 1
        report.errors.append(f"{reason}: item {row.item_id}: {error[:200]}")
