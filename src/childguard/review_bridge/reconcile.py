"""Pull annotations the webhook missed (our service was down, a delivery failed, Label Studio
restarted between saving an annotation and sending its webhook).

Label Studio delivers webhooks once, without retries; the reconcile makes the loop loss-free by
reading every annotated task of the project and handing each annotation to the same
`DecisionService.handle` the webhook uses. That path is idempotent, so annotations already
recorded are recognised and skipped; only missed ones (or newer versions of them) are recorded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from childguard.review_bridge.client import LabelStudioClient
from childguard.review_bridge.decisions import DecisionService

log = logging.getLogger("childguard.review")

ANNOTATED = {
    "filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number",
    "value": 0,
}  # fmt: skip


def annotated_query(since: datetime | None = None) -> dict[str, Any]:
    """Tasks with an annotation; with `since`, only those updated after it (a task's
    `updated_at` moves when one of its annotations is created or changed)."""
    items: list[dict[str, Any]] = [ANNOTATED]
    if since is not None:
        items.append({
            "filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime",
            "value": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        })  # fmt: skip
    return {"filters": {"conjunction": "and", "items": items}}


@dataclass
class ReconcileReport:
    tasks: int = 0
    annotations: int = 0
    recorded: int = 0
    duplicate: int = 0
    ignored: int = 0
    recorded_items: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "annotations": self.annotations, "recorded": self.recorded,
                "duplicate": self.duplicate, "ignored": self.ignored}


def reconcile(client: LabelStudioClient, project_id: int, decisions: DecisionService, *,
              since: datetime | None = None, follow_up: bool = True) -> ReconcileReport:
    """Hand every annotation of annotated tasks (updated after `since`, if given) to the
    decision service; already recorded ones come back as duplicates."""
    report = ReconcileReport()
    for task in client.iter_tasks(project_id, query=annotated_query(since)):
        annotations = task.get("annotations")
        if annotations is None or (task.get("total_annotations") and not annotations):
            annotations = client.annotations(int(task["id"]))
        if not annotations:
            continue
        report.tasks += 1
        # oldest first, so a change of mind lands as a later revision
        for ann in sorted(annotations, key=lambda a: (str(a.get("updated_at") or ""),
                                                      int(a.get("id") or 0))):
            report.annotations += 1
            result = decisions.handle(task, ann, source="reconcile")
            if result.status == "recorded":
                report.recorded += 1
                if result.item_id:
                    report.recorded_items.append(result.item_id)
                if follow_up:
                    decisions.follow_up(result)
            elif result.status == "duplicate":
                report.duplicate += 1
            else:
                report.ignored += 1
    if report.recorded:
        log.info("review: reconcile recorded %d missed annotations", report.recorded)
    return report
