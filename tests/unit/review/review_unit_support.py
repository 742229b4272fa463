"""Helpers for the review bridge unit tests: a real SQLite store with review items in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from childguard.policy import Policy, load_policy
from childguard.schema import CategoryScore, ContentItem, Decision, Verdict
from childguard.settings import Settings

REPO = Path(__file__).resolve().parents[3]
POLICIES = REPO / "policies"

# a tiny valid PNG (1x1 grey pixel), generated with Pillow at import time
def png_bytes(shade: int = 128) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(buf, format="PNG")
    return buf.getvalue()


def policy() -> Policy:
    return load_policy(POLICIES / "child_safety")


def review_verdict(item_id: str, pol: Policy, *, code: str = "grooming", score: float = 0.5,
                   decision: Decision = Decision.REVIEW) -> Verdict:
    return Verdict(item_id=item_id, decision=decision, policy_id=pol.id,
                   policy_version=pol.version,
                   categories=(CategoryScore(code=code, score=score, decision=decision),))


def add_review_item(store: Any, pol: Policy, item_id: str, *, image: bytes | None = None,
                    callback_url: str | None = None, **kw: Any) -> None:
    item = ContentItem(id=item_id, text="placeholder text", image=image,
                       callback_url=callback_url, external_id=f"ext-{item_id}")
    store.save_verdict(item, review_verdict(item_id, pol, **kw), actor="test")


def make_settings(tmp_path: Path, **review: Any) -> Settings:
    return Settings.load(home=tmp_path / "home", policies_dir=POLICIES,
                         review={"label_studio_token": "0" * 40, **review})
