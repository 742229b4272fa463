"""Settings: defaults, environment, TOML file, priority, and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from childguard.settings import Settings


def test_embedded_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CHILDGUARD_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    s = Settings.load()
    assert s.home == tmp_path / ".local" / "share" / "childguard"
    assert s.db_url == f"sqlite:///{s.home / 'childguard.db'}"
    assert s.mlflow_uri.startswith("sqlite:///") and str(s.home) in s.mlflow_uri
    assert s.review.label_studio_url == "http://127.0.0.1:8080"
    assert (s.serve.host, s.serve.port) == ("127.0.0.1", 8000)
    assert (s.policies_dir / "child_safety" / "policy.yaml").is_file()


def test_environment_and_nested(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHILDGUARD_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("CHILDGUARD_JUDGE__BACKEND", "openai")
    monkeypatch.setenv("CHILDGUARD_SERVE__PORT", "9000")
    s = Settings.load()
    assert s.home == tmp_path / "h"
    assert s.judge.backend == "openai"
    assert s.serve.port == 9000


def test_toml_file_with_priority(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "cg.toml"
    cfg.write_text(
        f'home = "{tmp_path / "t"}"\ndatabase_url = "postgresql://x@127.0.0.1/test"\n'
        '[hashing]\npdq_radius = 20\n[judge]\nbackend = "reference"\n'
    )
    monkeypatch.delenv("CHILDGUARD_HOME", raising=False)
    monkeypatch.setenv("CHILDGUARD_JUDGE__BACKEND", "llama_cpp")
    s = Settings.load(cfg)
    assert s.home == tmp_path / "t"
    assert s.db_url == "postgresql://x@127.0.0.1/test"
    assert s.hashing.pdq_radius == 20
    assert s.judge.backend == "llama_cpp"  # environment beats the file
    assert Settings.load(cfg, judge={"backend": "vllm"}).judge.backend == "vllm"  # args beat both


def test_config_file_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[limits]\nmax_text_chars = 10\n")
    monkeypatch.setenv("CHILDGUARD_CONFIG", str(cfg))
    assert Settings.load().limits.max_text_chars == 10


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Settings.load(tmp_path / "nope.toml")


def test_unknown_and_invalid_values_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[hashing]\npdq_radius = 999\n")
    with pytest.raises(ValidationError, match="pdq_radius"):
        Settings.load(cfg)
    cfg.write_text("[judge]\nbakend = 'x'\n")
    with pytest.raises(ValidationError, match="bakend"):
        Settings.load(cfg)


def test_settings_are_frozen(settings: Settings) -> None:
    with pytest.raises(ValidationError):
        settings.policy = "other"  # type: ignore[misc]
