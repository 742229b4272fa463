"""Policy drafts: copies of the active policy that policy authors edit, validate and promote.

Why here and not in `policies/`: the shipped folder is code review's business; a running
service's policy changes through drafts under the data dir, validated by the same loader as
`childguard policy validate` (schema, placeholders, every rule's must / must-not examples),
promoted into an immutable version folder (`policy_versions.publish`) by someone allowed to
(an admin, or with `workbench.four_eyes` a policy author other than the draft's author), every
step in the audit log with the author and the metric deltas the author saw.

    <home>/policy_drafts/<draft id>/draft.json        author, base version, created, note
    <home>/policy_drafts/<draft id>/<policy id>/      the policy files being edited
"""

from __future__ import annotations

import json
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from childguard.errors import Forbidden, NotFound, UserError
from childguard.policy import Policy
from childguard.policy_versions import (
    POLICY_FILES,
    activate,
    active_policy_path,
    active_record,
    load_active_policy,
    publish,
)
from childguard.settings import Settings
from childguard.store.roles import Role

__all__ = ["MAX_FILE_CHARS", "Draft", "Drafts", "Validation"]

#: a policy file larger than this is refused (the shipped rules file is ~40 kB)
MAX_FILE_CHARS = 400_000


class Auditor(Protocol):
    def append_audit(self, actor: str, action: str, subject: str, payload: dict[str, Any]
                     ) -> None: ...


@dataclass(frozen=True)
class Draft:
    id: str
    policy_id: str
    author: str
    base_version: str
    created_at: str
    note: str
    path: Path  # the draft's policy folder

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "policy_id": self.policy_id, "author": self.author,
                "base_version": self.base_version, "created_at": self.created_at,
                "note": self.note}


@dataclass(frozen=True)
class Validation:
    """The validator's answer for a draft: ok with the version it would get and the loaded
    policy (so callers need not load it again), or the errors (each names the file and field)."""

    ok: bool
    errors: tuple[str, ...] = ()
    version: str | None = None
    rules: int = 0
    rule_examples: int = 0
    policy: Policy | None = field(default=None, compare=False, repr=False)


class Drafts:
    """Drafts of the configured policies: create, read, edit, validate, promote, roll back."""

    def __init__(self, settings: Settings, audit: Auditor) -> None:
        self.settings = settings
        self.audit = audit
        self.root = settings.home / "policy_drafts"

    # -- drafts ------------------------------------------------------------------------------
    def create(self, author: str, *, policy_id: str | None = None, note: str = "") -> Draft:
        """A new draft: a copy of the policy's active version."""
        active = load_active_policy(self.settings, policy_id)
        draft_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        folder = self.root / draft_id / active.id
        folder.mkdir(parents=True)
        for name in POLICY_FILES:
            if (active.path / name).is_file():
                shutil.copy2(active.path / name, folder / name)
        meta = {"author": author, "policy_id": active.id, "base_version": active.version,
                "created_at": datetime.now(UTC).isoformat(), "note": note[:500]}
        (self.root / draft_id / "draft.json").write_text(json.dumps(meta, indent=1),
                                                          encoding="utf-8")
        self.audit.append_audit(author, "policy.draft_created", active.id,
                                {"draft": draft_id, "base_version": active.version})
        return self.get(draft_id)

    def get(self, draft_id: str) -> Draft:
        if not draft_id or any(c not in "0123456789abcdef-" for c in draft_id):
            raise UserError(f"draft id {draft_id[:40]!r} is not valid")
        meta_file = self.root / draft_id / "draft.json"
        if not meta_file.is_file():
            raise NotFound(f"no draft {draft_id!r}")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        return Draft(id=draft_id, policy_id=meta["policy_id"], author=meta["author"],
                     base_version=meta["base_version"], created_at=meta["created_at"],
                     note=meta.get("note", ""), path=self.root / draft_id / meta["policy_id"])

    def all(self) -> list[Draft]:
        if not self.root.is_dir():
            return []
        return [self.get(p.name) for p in sorted(self.root.iterdir(), reverse=True)
                if (p / "draft.json").is_file()]

    def delete(self, draft_id: str, actor: str) -> None:
        draft = self.get(draft_id)
        shutil.rmtree(self.root / draft.id)
        self.audit.append_audit(actor, "policy.draft_deleted", draft.policy_id,
                                {"draft": draft.id})

    # -- files -------------------------------------------------------------------------------
    def read(self, draft_id: str, name: str) -> str:
        draft = self.get(draft_id)
        path = draft.path / _file_name(name)
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    def write(self, draft_id: str, name: str, text: str, actor: str) -> Validation:
        """Replace one file of the draft and validate the whole draft. An invalid draft is
        kept as written (the author fixes it in place); it cannot be promoted."""
        draft = self.get(draft_id)
        name = _file_name(name)
        if len(text) > MAX_FILE_CHARS:
            raise UserError(f"{name} is {len(text)} characters; at most {MAX_FILE_CHARS} are "
                            "allowed")
        path = draft.path / name
        if not text.strip() and name in ("rules.yaml", "calibration.yaml"):
            path.unlink(missing_ok=True)  # optional files: empty means none
        else:
            path.write_text(text.replace("\r\n", "\n"), encoding="utf-8")
        result = self.validate(draft_id)
        self.audit.append_audit(actor, "policy.draft_edited", draft.policy_id,
                                {"draft": draft.id, "file": name, "valid": result.ok})
        return result

    def validate(self, draft_id: str) -> Validation:
        """The same checks as `childguard policy validate` (loading runs the rules' golden
        examples), plus the calibration file if present."""
        draft = self.get(draft_id)
        try:
            policy = self.load(draft_id)
        except UserError as exc:
            return Validation(ok=False, errors=(str(exc),))
        if policy.id != draft.policy_id:
            return Validation(ok=False, errors=(f"the draft's policy id is {policy.id!r}, not "
                                                f"{draft.policy_id!r}",))
        examples = sum(len(r.must_match) + len(r.must_not_match) for r in policy.rules.rules)
        return Validation(ok=True, version=policy.version, rules=len(policy.rules),
                          rule_examples=examples, policy=policy)

    def load(self, draft_id: str) -> Policy:
        """The draft as the pipeline would use it (calibrated); raises on invalid files."""
        from childguard.policy_calibration import load_calibrated_policy

        return load_calibrated_policy(self.get(draft_id).path)

    # -- promotion ---------------------------------------------------------------------------
    def promote(self, draft_id: str, actor: str, role: Role, *,
                deltas: dict[str, Any] | None = None, note: str = "") -> str:
        """Make the draft the active version; returns it. Refused for an invalid draft, and
        (four-eyes on) for its own author unless an admin."""
        draft = self.get(draft_id)
        if role not in (Role.ADMIN, Role.POLICY_AUTHOR):
            raise Forbidden(f"role {role.value} may not promote policies")
        check = self.validate(draft_id)
        if not check.ok or check.policy is None:
            raise UserError("the draft does not validate; fix it before promoting: "
                            + "; ".join(check.errors))
        if (self.settings.workbench.four_eyes and role is not Role.ADMIN
                and actor == draft.author):
            raise Forbidden(
                "four-eyes: a draft is promoted by an admin or by another policy author, not "
                f"by its author ({draft.author})")
        policy = check.policy
        current = load_active_policy(self.settings, draft.policy_id)
        if active_record(self.settings, draft.policy_id) is None:
            # the first promotion keeps the shipped version as a version, to roll back to
            publish(self.settings, current, actor="system",
                    note="the shipped policy, kept so a promotion can be rolled back")
        previous = current.version
        version = publish(self.settings, policy, actor=actor,
                          approver=actor if actor != draft.author else None,
                          note=note or draft.note, deltas=deltas)
        self.audit.append_audit(actor, "policy.promoted", draft.policy_id, {
            "version": version, "previous": previous, "draft": draft.id,
            "author": draft.author, "role": role.value, "deltas": deltas or {},
        })
        return version

    def rollback(self, policy_id: str, version: str, actor: str, role: Role, *,
                 note: str = "") -> None:
        """Make an earlier promoted version active again."""
        if role not in (Role.ADMIN, Role.POLICY_AUTHOR):
            raise Forbidden(f"role {role.value} may not roll back policies")
        previous = load_active_policy(self.settings, policy_id).version
        activate(self.settings, policy_id, version, actor=actor, note=note)
        self.audit.append_audit(actor, "policy.rolled_back", policy_id,
                                {"version": version, "previous": previous})

    def history(self, policy_id: str | None = None) -> list[dict[str, Any]]:
        pid = active_policy_path(self.settings, policy_id).name if policy_id is None \
            else policy_id
        rec = active_record(self.settings, pid)
        return list(rec.get("history", [])) if rec else []


def _file_name(name: str) -> str:
    if name not in POLICY_FILES:
        raise UserError(f"a policy draft holds {', '.join(POLICY_FILES)}; received {name!r}")
    return name
