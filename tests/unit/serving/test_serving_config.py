"""The Serve config file and the typed app builder agree (no Ray cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from childguard.serving.app import AppArgs, build_app, compose
from childguard.settings import Settings

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "src" / "childguard" / "serving" / "serve_config.yaml"
POLICIES = REPO / "policies"


def test_serve_config_is_valid_for_ray_and_for_app_args() -> None:
    raw = yaml.safe_load(CONFIG.read_text())
    ServeDeploySchema.model_validate(raw)
    (app,) = raw["applications"]
    assert app["import_path"] == "childguard.serving.app:build_app"
    args = AppArgs.model_validate(app["args"])
    assert args.embedder.num_gpus > 0 and args.judge.num_replicas >= 1


def test_app_args_reject_unknown_keys_and_bad_resources() -> None:
    with pytest.raises(ValidationError):
        AppArgs.model_validate({"embeder": {"num_replicas": 2}})
    with pytest.raises(ValidationError):
        AppArgs.model_validate({"judge": {"num_cpus": -1}})


def test_builder_binds_one_deployment_per_stage(tmp_path: Path) -> None:
    settings = Settings.load(home=tmp_path, policies_dir=POLICIES)
    args = AppArgs(models="reference", judge={"num_replicas": 2, "num_cpus": 0.5})
    app = compose(settings, args)
    assert isinstance(app, Application)
    ingress = app._bound_deployment
    assert ingress.name == "Ingress"
    children = {a._bound_deployment.name: a._bound_deployment
                for a in ingress.init_args if isinstance(a, Application)}
    assert set(children) == {"HashMatcher", "Embedder", "Judge", "ImageSafety"}
    judge = children["Judge"]
    assert judge.num_replicas == 2
    assert judge.ray_actor_options["num_cpus"] == 0.5


def test_build_app_reads_settings_overrides(tmp_path: Path) -> None:
    app = build_app(AppArgs(models="reference", settings={
        "home": str(tmp_path), "policies_dir": str(POLICIES), "judge": {"backend": "reference"},
    }))
    settings = app._bound_deployment.init_args[0]
    assert isinstance(settings, Settings)
    assert settings.judge.backend == "reference" and settings.home == tmp_path
