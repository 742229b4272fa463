"""Promoted policy versions and which one is active: what the service loads.

Why: policy authors change a policy in a draft and promote it (issue 25, `workbench/`); the
service must then use exactly the promoted files, name them in every verdict (the calibrated
content hash, `Policy.version`), pick them up without a restart, and be able to go back to any
earlier version. So a promotion copies the draft's files into an immutable folder named by
that version, and `active.json` says which folder is live, with the history of every
promotion and rollback:

    <home>/policy_versions/<policy id>/versions/<version>/<policy id>/
                                    policy.yaml prompt.md rules.yaml calibration.yaml
    <home>/policy_versions/<policy id>/active.json           {"version", "history": [...]}

Without an `active.json` the shipped folder (`policies_dir/<id>`) is the policy, as before.
Writes are atomic (temp file + rename), so a reader never sees half a pointer. This module
is plain files and validation; who may promote, and the audit log, are the workbench's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from childguard.errors import NotFound, UserError
from childguard.policy import Policy, resolve_policy_path
from childguard.settings import Settings

__all__ = ["POLICY_FILES", "ActiveRecord", "activate", "active_policy_path", "active_record",
           "load_active_policy", "publish", "version_dir"]

#: the files a policy folder may hold (anything else in a draft is not copied)
POLICY_FILES = ("policy.yaml", "prompt.md", "rules.yaml", "calibration.yaml")

ActiveRecord = dict[str, Any]


def _root(settings: Settings, policy_id: str) -> Path:
    return settings.home / "policy_versions" / policy_id


def version_dir(settings: Settings, policy_id: str, version: str) -> Path:
    """The policy folder of a promoted version (named by the policy id, as every policy
    folder is, inside a folder named by the version)."""
    return _root(settings, policy_id) / "versions" / version / policy_id


def active_record(settings: Settings, policy_id: str) -> ActiveRecord | None:
    """{"version", "history": [{"action", "version", "actor", "approver", "at", "note",
    "deltas"}]} or None when nothing was ever promoted."""
    path = _root(settings, policy_id) / "active.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable active-policy pointer ({exc})") from exc
    return data if isinstance(data, dict) else None


def active_policy_path(settings: Settings, policy_id: str | None = None) -> Path:
    """The folder the service loads for `policy_id` (default: `settings.policy`)."""
    ref = policy_id or settings.policy
    shipped = resolve_policy_path(ref, settings.policies_dir)
    rec = active_record(settings, shipped.name)
    if rec is None:
        return shipped
    path = version_dir(settings, shipped.name, str(rec["version"]))
    if not (path / "policy.yaml").is_file():
        raise NotFound(f"the active version {rec['version']} of policy {shipped.name} is "
                       f"missing at {path}; roll back to another version")
    return path


def load_active_policy(settings: Settings, policy_id: str | None = None) -> Policy:
    """The active policy with its calibration, as the pipeline uses it."""
    from childguard.policy_calibration import load_calibrated_policy

    return load_calibrated_policy(active_policy_path(settings, policy_id))


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".active-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _event(action: str, version: str, actor: str, approver: str | None, note: str,
           deltas: dict[str, Any] | None) -> dict[str, Any]:
    return {"action": action, "version": version, "actor": actor, "approver": approver,
            "at": datetime.now(UTC).isoformat(), "note": note, "deltas": deltas or {}}


def publish(settings: Settings, policy: Policy, *, actor: str, approver: str | None = None,
            note: str = "", deltas: dict[str, Any] | None = None) -> str:
    """Copy a loaded (validated) policy's folder into its version folder and make it active.

    `policy` must come from `load_active_policy`-style loading of the folder to publish (its
    `version` names the folder). Returns the version. Publishing the active version again
    records nothing new and returns it."""
    pid, version = policy.id, policy.version
    dest = version_dir(settings, pid, version)
    if not dest.is_dir():
        versions = dest.parent.parent
        versions.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=versions, prefix=".incoming-"))
        try:
            (tmp / pid).mkdir()
            for name in POLICY_FILES:
                if (policy.path / name).is_file():
                    shutil.copy2(policy.path / name, tmp / pid / name)
            os.replace(tmp, dest.parent)  # the version appears whole or not at all
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    rec = active_record(settings, pid) or {"version": None, "history": []}
    if rec.get("version") == version:
        return version
    rec["history"] = [*rec.get("history", []),
                      _event("promote", version, actor, approver, note, deltas)]
    rec["version"] = version
    _write_atomic(_root(settings, pid) / "active.json", rec)
    return version


def activate(settings: Settings, policy_id: str, version: str, *, actor: str,
             note: str = "") -> None:
    """Make an earlier promoted version active again (a rollback), recorded in the history."""
    if not (version_dir(settings, policy_id, version) / "policy.yaml").is_file():
        known = ", ".join(sorted(p.name for p in (_root(settings, policy_id) / "versions")
                                 .glob("[!.]*"))) or "none"
        raise NotFound(f"policy {policy_id} has no promoted version {version!r}; promoted: "
                       f"{known}")
    rec = active_record(settings, policy_id) or {"version": None, "history": []}
    rec["history"] = [*rec.get("history", []),
                      _event("rollback", version, actor, None, note, None)]
    rec["version"] = version
    _write_atomic(_root(settings, policy_id) / "active.json", rec)


class ActiveFollower:
    """Follows the active version of one policy for a running service: `poll()` looks at the
    pointer at most every `interval_s` and returns the newly active policy when it changed
    (a promotion or rollback), else None. Each process (and each Ray deployment) keeps its
    own follower and applies the result with `Pipeline.use_policy`."""

    def __init__(self, settings: Settings, current: Policy, *, interval_s: float = 5.0,
                 clock: Any = None) -> None:
        import time

        self.settings = settings
        self.policy_id = current.id
        self.version = current.version
        self.interval_s = interval_s
        self._clock = clock or time.monotonic
        self._next = self._clock() + interval_s

    def poll(self) -> Policy | None:
        now = self._clock()
        if now < self._next:
            return None
        self._next = now + self.interval_s
        rec = active_record(self.settings, self.policy_id)
        if rec is None:
            return None
        policy = load_active_policy(self.settings, self.policy_id)
        if policy.version == self.version:
            return None
        self.version = policy.version
        return policy
