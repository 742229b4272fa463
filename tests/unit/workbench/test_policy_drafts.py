"""Policy drafts on a real SQLite store and the real policy loader: a draft copies the active
version; an edit is validated in place (the file and field named); a draft whose rule examples
fail, or that its own author promotes with four-eyes on, is refused; a promotion becomes the
active version, in the audit log with its deltas, and a running pipeline that follows the
policy picks it up without a restart; a rollback returns to an earlier version."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from childguard.errors import Forbidden, NotFound, UserError
from childguard.pipeline import build_pipeline
from childguard.policy_versions import active_policy_path, load_active_policy
from childguard.schema import ContentItem
from childguard.settings import Settings
from childguard.store.roles import Role
from childguard.store.store import Store
from childguard.workbench.drafts import Drafts

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = Settings.load(home=tmp_path / "home", policies_dir=REPO / "policies",
                             judge={"backend": "reference"},
                             workbench={"reload_interval_s": 0.01})
    store = Store.from_settings(settings)
    yield settings, store, Drafts(settings, store)
    store.close()


def _raise_grooming_review(drafts: Drafts, draft_id: str, value: float) -> None:
    cal = yaml.safe_load(drafts.read(draft_id, "calibration.yaml"))
    cal["categories"]["grooming"]["review"] = value
    v = drafts.write(draft_id, "calibration.yaml", yaml.safe_dump(cal), "alice")
    assert v.ok, v.errors


def test_draft_edit_validate_promote_follow_rollback(env) -> None:  # type: ignore[no-untyped-def]
    settings, store, drafts = env
    shipped = load_active_policy(settings)
    d = drafts.create("alice", note="raise the grooming review bar")
    assert d.base_version == shipped.version
    assert drafts.read(d.id, "prompt.md") == (REPO / "policies/child_safety/prompt.md").read_text()

    # an invalid edit is kept but named, file and field
    bad = drafts.read(d.id, "prompt.md").replace("{{item}}", "{{nothing}}")
    v = drafts.write(d.id, "prompt.md", bad, "alice")
    assert not v.ok and "prompt.md" in v.errors[0]
    with pytest.raises(UserError, match="does not validate"):
        drafts.promote(d.id, "bob", Role.POLICY_AUTHOR)
    drafts.write(d.id, "prompt.md", (REPO / "policies/child_safety/prompt.md").read_text(),
                 "alice")
    # a rule whose golden example fails refuses promotion too
    rules = drafts.read(d.id, "rules.yaml")
    broken = rules.replace("      - the recipe calls for a secret ingredient\n",
                           "      - the recipe calls for a secret ingredient\n"
                           '      - "remember, {secrecy}"\n', 1)
    assert broken != rules
    v = drafts.write(d.id, "rules.yaml", broken, "alice")
    assert not v.ok and "grooming_secrecy" in " ".join(v.errors)
    assert drafts.write(d.id, "rules.yaml", rules, "alice").ok

    _raise_grooming_review(drafts, d.id, 0.3)
    new_version = drafts.validate(d.id).version
    assert new_version and new_version != shipped.version

    # the service pipeline (reference models) follows the active version
    # follows the active version; decides as a service with trained probes does, on
    # calibration.yaml's thresholds (the reference models train none)
    pipeline = build_pipeline(settings, models="reference", calibrated=True)
    item = ContentItem(text="what time is practice on saturday?")
    assert pipeline.classify(item).policy_version == shipped.version

    with pytest.raises(Forbidden, match="four-eyes"):
        drafts.promote(d.id, "alice", Role.POLICY_AUTHOR)
    with pytest.raises(Forbidden):
        drafts.promote(d.id, "carol", Role.REVIEWER)
    deltas = {"child_safety_v2": {"lookalikes_flagged": -0.02}}
    assert drafts.promote(d.id, "bob", Role.POLICY_AUTHOR, deltas=deltas) == new_version
    assert active_policy_path(settings).parent.name == new_version
    time.sleep(0.05)
    after = pipeline.classify(item)
    assert after.policy_version == new_version
    assert pipeline.policy.spec.category("grooming").thresholds.review == 0.3
    assert pipeline.judge is not None and pipeline.judge.policy.version == new_version

    # roll back to the shipped version (kept at the first promotion)
    hist = drafts.history()
    assert [h["action"] for h in hist] == ["promote", "promote"]
    assert hist[0]["version"] == shipped.version and hist[1]["actor"] == "bob"
    drafts.rollback("child_safety", shipped.version, "bob", Role.POLICY_AUTHOR)
    time.sleep(0.05)
    assert pipeline.classify(item).policy_version == shipped.version
    with pytest.raises(NotFound, match="no promoted version"):
        drafts.rollback("child_safety", "0123abcd", "bob", Role.ADMIN)

    events = [e.action for e in [e for e in store.audit_tail(100) if e.subject == "child_safety"]]
    assert {"policy.draft_created", "policy.draft_edited", "policy.promoted",
            "policy.rolled_back"} <= set(events)
    promoted = next(e for e in [e for e in store.audit_tail(100) if e.subject == "child_safety"]
                    if e.action == "policy.promoted")
    assert promoted.payload["deltas"] == deltas and promoted.payload["author"] == "alice"
    assert store.verify_audit().ok
    pipeline.close()


def test_an_admin_may_promote_their_own_draft_and_four_eyes_can_be_off(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings, store, drafts = env
    d = drafts.create("root")
    _raise_grooming_review(drafts, d.id, 0.25)
    assert drafts.promote(d.id, "root", Role.ADMIN)
    relaxed = Drafts(Settings.load(home=settings.home, policies_dir=settings.policies_dir,
                                   workbench={"four_eyes": False}), store)
    d2 = relaxed.create("alice")
    _raise_grooming_review(relaxed, d2.id, 0.26)
    assert relaxed.promote(d2.id, "alice", Role.POLICY_AUTHOR)
    with pytest.raises(UserError, match=r"holds policy\.yaml"):
        relaxed.write(d2.id, "../secrets.json", "{}", "alice")
    with pytest.raises(UserError, match="not valid"):
        relaxed.get("../../etc")
