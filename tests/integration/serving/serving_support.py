"""Helpers of the serving integration tests: the served app handle, keys, images.

The fixture itself lives in conftest.py; it starts a real Ray Serve deployment (module-scoped,
~25 s start).

It runs on a private local Ray instance (`address="local"`) on a free loopback port, with the
package's reference models (deterministic, no weights) and the reference judge, against a
SQLite store in a temporary home. Keys for every role, plus a revoked one, are created before
the app starts; a benign Kodak photo is put into a test hash bank so a bank hit can be tested
without any harmful material.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from childguard.schema import Severity
from childguard.settings import Settings
from childguard.store.store import Store

REPO = Path(__file__).resolve().parents[3]
POLICIES = REPO / "policies"
IMAGES = (REPO / ".." / "shared" / "datasets" / "images").resolve()
BANK = "cg-test-bank"


def kodak(n: int) -> Path:
    path = IMAGES / "kodak" / f"kodim{n:02d}.png"
    if not path.is_file():
        pytest.skip(f"Kodak image {path} not present (see ../shared/datasets/README.md)")
    return path


@dataclass
class Served:
    url: str
    settings: Settings
    store: Store
    keys: dict[str, str] = field(default_factory=dict)  # role name / 'revoked' -> secret
    banked_image: Path | None = None

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"} if who in self.keys else {}


def make_settings(home: Path) -> Settings:
    # small limits so the bad-input cases stay cheap to send
    limits = {"max_body_bytes": 4_000_000, "max_image_pixels": 1_000_000,
              "max_batch_items": 8, "max_context_messages": 5}
    # the repo's policies as shipped: these tests train no probes, so the pipelines decide on
    # the policy's own thresholds, not the calibrated ones (Pipeline `calibrated`)
    return Settings.load(home=home, policies_dir=POLICIES, judge={"backend": "reference"},
                         limits=limits)


def add_to_bank(settings: Settings, store: Store, image: Path) -> bool:
    """Put `image` (a benign photo) into a positive test bank, as another process would."""
    from childguard.hashing.service import HashService

    svc = HashService.from_settings(settings, store.engine)
    svc.ensure_bank(BANK, category="sexual_minors", severity=Severity.CRITICAL, added_by="test")
    svc.add_bytes(BANK, image.read_bytes(), added_by="test")
    return True


