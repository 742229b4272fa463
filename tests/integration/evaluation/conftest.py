"""Fixtures for the evaluation integration tests: one real MLflow sqlite store per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from childguard.settings import Settings


@pytest.fixture(scope="module")
def eval_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eval-home")


@pytest.fixture(scope="module")
def eval_settings(eval_home: Path) -> Settings:
    return Settings.load(home=eval_home / "home", policies_dir=eval_home / "policies")
