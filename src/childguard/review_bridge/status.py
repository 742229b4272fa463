"""The review queue at a glance: pending (still in the outbox), in review (a task without a
decision), done, overdue by SLA, and the oldest waiting item's age."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from childguard.review_bridge.client import LabelStudioClient, LabelStudioUnavailable
from childguard.review_bridge.decisions import parse_ts
from childguard.review_bridge.ports import ReviewStore


def queue_status(store: ReviewStore, client: LabelStudioClient, project_id: int | None, *,
                 now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    stats = store.outbox_stats()
    out: dict[str, Any] = {
        "pending": int(stats.get("depth", 0)),
        "retrying": int(stats.get("retrying", 0)),
        "in_review": None, "done": None, "overdue": None,
        "oldest_age_s": float(stats.get("oldest_age_s", 0.0)),
        "label_studio": "ok", "project_id": project_id,
    }  # fmt: skip
    if project_id is None:
        out["label_studio"] = "no project (run `childguard review init`)"
        return out
    in_review = done = overdue = 0
    oldest = out["oldest_age_s"]
    try:
        for task in client.iter_tasks(project_id, fields="all"):
            data = task.get("data") or {}
            if int(task.get("total_annotations") or 0) > 0:
                done += 1
                continue
            in_review += 1
            if data.get("sla_due") and parse_ts(data["sla_due"]) < now:
                overdue += 1
            queued = data.get("queued_at") or task.get("created_at")
            if queued:
                oldest = max(oldest, (now - parse_ts(queued)).total_seconds())
    except LabelStudioUnavailable as exc:
        out["label_studio"] = f"unavailable: {exc}"
        return out
    out.update(in_review=in_review, done=done, overdue=overdue, oldest_age_s=round(oldest, 1))
    return out
