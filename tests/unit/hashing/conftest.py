"""Fixtures for the hashing tests (helpers live in hashing_support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hashing_support import IMAGES, make_service

from childguard.hashing.service import HashService


@pytest.fixture
def images_dir() -> Path:
    if not IMAGES.is_dir():
        pytest.skip(f"shared datasets not present at {IMAGES} (see ../shared/datasets/README.md)")
    return IMAGES


@pytest.fixture
def service(tmp_path: Path) -> HashService:
    return make_service(tmp_path)
