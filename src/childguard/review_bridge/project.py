"""The review project in Label Studio, created or updated idempotently (`childguard review init`).

Running init twice changes nothing; running it after a policy edit updates the labelling config
in place (Label Studio refuses changes that would orphan existing annotations, e.g. removing a
category already used; that refusal is reported as a user error with its reason).

What init makes sure of:
- the project (found by title) with the config generated from the policy, predictions shown as
  pre-annotations (`model_version` = ours), one annotation per task, no skip button (a skipped
  item would silently leave the queue);
- exactly one webhook to our `/v1/review/webhook` for annotation created/updated, carrying the
  shared secret header;
- a data-manager view ordered by priority (then SLA deadline), the reviewers' queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from childguard.errors import UserError
from childguard.policy import Policy
from childguard.review_bridge.client import LabelStudioClient, LabelStudioError
from childguard.review_bridge.config import MODEL_VERSION, label_config
from childguard.review_bridge.signing import WEBHOOK_SECRET_HEADER

WEBHOOK_PATH = "/v1/review/webhook"
WEBHOOK_ACTIONS = ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"]
QUEUE_VIEW_TITLE = "Review queue (priority, then SLA)"


@dataclass(frozen=True)
class ProjectState:
    project_id: int
    created: bool
    config_updated: bool
    webhook_id: int
    webhook_changed: bool
    view_id: int | None

    def to_json(self) -> dict[str, Any]:
        return {"project_id": self.project_id, "created": self.created,
                "config_updated": self.config_updated, "webhook_id": self.webhook_id,
                "webhook_changed": self.webhook_changed, "view_id": self.view_id}


def _instructions(policy: Policy) -> str:
    return (
        f"<p><b>{policy.spec.title}</b> (policy version {policy.version}).</p>"
        "<p>Images are blurred and greyscale for your wellbeing; rest the pointer on one for a "
        "moment to see it. Take breaks. Decide allow, block, or escalate-and-report; tick the "
        "categories that apply; the comment must not quote content.</p>"
    )


def ensure_project(client: LabelStudioClient, policy: Policy, *, title: str, public_url: str,
                   webhook_secret: str) -> ProjectState:
    config = label_config(policy)
    fields: dict[str, Any] = {
        "label_config": config,
        "model_version": MODEL_VERSION,
        "show_collab_predictions": True,
        "maximum_annotations": 1,
        "show_skip_button": False,
        "enable_empty_annotation": False,
        "expert_instruction": _instructions(policy),
        "description": f"childguard human review for policy {policy.id}@{policy.version}",
    }
    created = config_updated = False
    try:
        project = client.find_project(title)
        if project is None:
            project = client.create_project(title=title, **fields)
            created = True
        else:
            changed = {k: v for k, v in fields.items() if not _same(project.get(k), v)}
            if changed:
                project = client.update_project(int(project["id"]), **changed)
                config_updated = "label_config" in changed
    except LabelStudioError as exc:
        raise UserError(f"Label Studio refused the review project for policy {policy.id}: "
                        f"{exc}") from exc
    pid = int(project["id"])
    webhook_id, webhook_changed = _ensure_webhook(
        client, pid, public_url.rstrip("/") + WEBHOOK_PATH, webhook_secret
    )
    view_id = _ensure_view(client, pid)
    return ProjectState(pid, created, config_updated, webhook_id, webhook_changed, view_id)


def _same(current: Any, wanted: Any) -> bool:
    if isinstance(current, str) and isinstance(wanted, str):
        return current.strip() == wanted.strip()  # Label Studio strips the config
    return bool(current == wanted)


def _ensure_webhook(client: LabelStudioClient, project_id: int, url: str, secret: str
                    ) -> tuple[int, bool]:
    want = {
        "url": url, "send_payload": True, "send_for_all_actions": False,
        "headers": {WEBHOOK_SECRET_HEADER: secret}, "actions": WEBHOOK_ACTIONS,
        "is_active": True,
    }  # fmt: skip
    hooks = [h for h in client.list_webhooks(project_id) if h.get("project") == project_id]
    ours = [h for h in hooks if str(h.get("url", "")).endswith(WEBHOOK_PATH)]
    if not ours:
        return int(client.create_webhook(project=project_id, **want)["id"]), True
    hook = ours[0]
    changed = {k: v for k, v in want.items() if hook.get(k) != v}
    if "actions" in changed and sorted(hook.get("actions") or []) == sorted(WEBHOOK_ACTIONS):
        del changed["actions"]
    if changed:
        client.update_webhook(int(hook["id"]), **changed)
    return int(hook["id"]), bool(changed)


def _ensure_view(client: LabelStudioClient, project_id: int) -> int | None:
    hidden = ["tasks:data.text", "tasks:data.context", "tasks:data.image",
              "tasks:data.model_summary"]
    data = {
        "type": "list", "title": QUEUE_VIEW_TITLE, "target": "tasks", "gridWidth": 4,
        "columnsWidth": {}, "columnsDisplayType": {},
        "hiddenColumns": {"explore": hidden, "labeling": hidden},
        "filters": {"conjunction": "and", "items": []},
        "ordering": ["-tasks:data.priority"],
    }  # fmt: skip
    try:
        for view in client.list_views(project_id):
            if (view.get("data") or {}).get("title") == QUEUE_VIEW_TITLE:
                if (view.get("data") or {}).get("ordering") != data["ordering"]:
                    client.update_view(int(view["id"]), project_id, data)
                return int(view["id"])
        return int(client.create_view(project_id, data)["id"])
    except LabelStudioError:
        return None  # a convenience for reviewers; the queue works without it


def find_project_id(client: LabelStudioClient, title: str) -> int:
    project = client.find_project(title)
    if project is None:
        raise UserError(f"no Label Studio project titled {title!r}; run `childguard review init`")
    return int(project["id"])
