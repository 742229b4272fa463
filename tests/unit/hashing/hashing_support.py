"""Helpers for the hashing tests: dataset paths, a SQLite-backed HashService, image edits."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from childguard.hashing.service import HashService
from childguard.settings import Settings
from childguard.store.db import make_engine
from childguard.store.migrate import migrate

REPO = Path(__file__).resolve().parents[3]
IMAGES = (REPO / ".." / "shared" / "datasets" / "images").resolve()
PDQ_DIR = IMAGES / "pdq_threatexchange"
KODAK = IMAGES / "kodak"


def make_service(tmp_path: Path, **hashing: object) -> HashService:
    home = tmp_path / "home"
    # explicit SQLite URL: a CHILDGUARD_DATABASE_URL in the environment must not leak in
    settings = Settings.load(
        home=home, database_url=f"sqlite:///{home / 'childguard.db'}", hashing=hashing
    )
    engine = make_engine(settings.db_url)
    migrate(engine)
    return HashService.from_settings(settings, engine)


def near_copy(data: bytes, *, crop: float = 0.01, scale: float = 0.6, quality: int = 50) -> bytes:
    """Slightly cropped (each side), resized and JPEG re-encoded copy of an image."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    dx, dy = int(w * crop), int(h * crop)
    img = img.crop((dx, dy, w - dx, h - dy)).resize(
        (int(w * scale), int(h * scale)), Image.Resampling.LANCZOS
    )
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def flat_png(color: tuple[int, int, int] = (120, 120, 120), size: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, "PNG")
    return out.getvalue()
