"""One settings object, read once at the composition root and passed down.

Sources, highest priority first: keyword arguments, environment (`CHILDGUARD_` prefix, nested
fields with `__`, e.g. `CHILDGUARD_JUDGE__BACKEND=openai`), a TOML file (`CHILDGUARD_CONFIG` or
the `config_file` argument of `Settings.load`), then the embedded defaults below. Nothing else in
the package reads the environment: components take a `Settings` (or a part of it) in
`from_settings()`.

The embedded defaults describe a single machine: data under `~/.local/share/childguard` (or
`CHILDGUARD_HOME`), a SQLite store, a local MLflow store, Label Studio on 127.0.0.1:8080 and
Ray Serve on 127.0.0.1:8000.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def _default_home() -> Path:
    return Path.home() / ".local" / "share" / "childguard"


def _repo_policies_dir() -> Path:
    # src/childguard/settings.py -> repo root / policies (editable install, the normal case)
    return Path(__file__).resolve().parents[2] / "policies"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LimitsSettings(_Section):
    """What the API and the pipeline accept. Errors quote these numbers."""

    max_text_chars: int = Field(default=20_000, gt=0)
    max_context_messages: int = Field(default=50, ge=0)
    max_image_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=50_000_000, gt=0)
    max_image_side: int = Field(default=20_000, gt=0)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    max_batch_items: int = Field(default=64, gt=0)
    max_video_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    max_video_duration_s: float = Field(default=900.0, gt=0)
    max_video_frame_pixels: int = Field(default=3840 * 2160, gt=0)
    max_video_hashed_frames: int = Field(default=3600, gt=0)
    max_video_keyframes: int = Field(
        default=8, ge=1, description="keyframes of a video (scene changes, spread over its "
        "length) that go through the image signals and OCR")


class HashingSettings(_Section):
    pdq_quality_min: int = Field(default=50, ge=0, le=100)
    pdq_radius: int = Field(default=31, ge=0, le=128)
    dihedral: bool = False
    flood_window_s: float = Field(default=3600.0, gt=0)
    flood_max_hits: int = Field(default=1000, gt=0)
    video_seconds_per_hash: float = Field(
        default=1.0, ge=0, description="vPDQ sampling: one frame hash per this many seconds "
        "(0 = every frame)")
    video_distance: int = Field(default=31, ge=0, le=128,
                                description="vPDQ: frames this close (bits) match")
    video_query_match_pct: float = Field(default=80.0, ge=0, le=100)
    video_target_match_pct: float = Field(default=80.0, ge=0, le=100)


class JudgeSettings(_Section):
    backend: Literal["llama_cpp", "llm_probe", "openai", "vllm", "reference"] = "llama_cpp"
    model: str = "qwen2.5-coder-1.5b-instruct-q4_k_m"
    url: str | None = Field(default=None, description="OpenAI-compatible base URL (…/v1)")
    api_key: str | None = None
    threads: int = Field(default=2, gt=0)
    n_ctx: int = Field(default=4096, gt=0)
    timeout_s: float = Field(default=30.0, gt=0)
    prefix_cache: bool = True
    feature_cache_dir: Path | None = Field(
        default=None,
        description="llm_probe: keep the judge model's hidden states on disk here (vectors "
        "keyed by text hash, never text), so training and evaluation read each item once",
    )


#: what runs a sentence encoder's forward pass (models/embedders.py, models/onnx_encoder.py)
TextRuntime = Literal["torch", "onnx"]


class ModelSettings(_Section):
    cache_dir: Path | None = Field(default=None, description="defaults to <home>/models")
    text_embedder: str = Field(
        default="embeddinggemma-300m",
        description="the probes' sentence encoder: embeddinggemma-300m (default: fetched by "
        "`childguard models pull`, 1.2 GB, Gemma Terms of Use; fine-tuned in its top 4 blocks "
        "by `make run`), all-MiniLM-L6-v2 (packaged with the code, 90 MB, Apache-2.0; "
        "2.5x faster, weaker on held-out data: docs/quality.md) or a sentence-transformers "
        "directory; retrain probes and recalibrate when switching",
    )
    text_embedder_int8: bool | None = Field(
        default=None,
        description="int8 dynamic quantization of the text encoder's Linear layers; unset = "
        "the encoder's default (on for EmbeddingGemma: 1.65x faster per message on this CPU, "
        "152 -> 92 ms p50, the same held-out quality within the intervals, docs/experiments/"
        "gemma_int8_ensembles_2026-12-07.json; off for MiniLM, not measured there); the "
        "encoder's version says '+int8x1', so probes must be trained with the same setting",
    )
    text_runtime: TextRuntime | None = Field(
        default=None,
        description="what runs the text encoder's forward pass: torch, or onnx (the model "
        "exported once to ONNX under <home>/encoders/onnx and run by ONNX Runtime, int8 "
        "quantized by ONNX Runtime when text_embedder_int8 is on); unset = the encoder's "
        "default (onnx for EmbeddingGemma: v2 p50 123 -> 75 ms on 2 cores, calib quality no "
        "worse, docs/experiments/onnx_runtime_2026-12-07.json; torch for MiniLM); the "
        "version says '+ort', so probes must be trained with the same setting",
    )
    age_features: bool = Field(
        default=True,
        description="append age-indicator counts to the text embedding (models/lexical.py); "
        "probes must be trained with the same setting",
    )
    probe_context_messages: int = Field(
        default=3, ge=0,
        description="also score the last N conversation messages with the message, as the "
        "probes were trained (eval train-probes joins an item's context and text)",
    )
    probe_window_words: int = Field(
        default=0, ge=0,
        description="also score windows of this many words (half-overlapping) of a message "
        "longer than that, the highest score counting, so a wrapper around a violating "
        "sentence (an injection, a long post) does not dilute it; 0 = whole messages only",
    )
    probe_heads: Literal["pooled", "per_source"] = Field(
        default="per_source",
        description="per_source: a category labelled by several training sets gets one probe "
        "head per set, scored by the highest (models/probes.py HeadedProbe; measured "
        "sexual_minors AUPRC 0.559 pooled, 0.602 per source, docs/quality.md); pooled: one "
        "probe per category",
    )
    probe_c: float | None = Field(
        default=None, gt=0,
        description="the probes' inverse regularisation (logistic regression C); unset = the "
        "text embedder's own (probe_training.probe_C: EmbeddingGemma 8, the age features on "
        "another encoder 0.5, else 4.0)",
    )
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = Field(
        default=None, description="open_clip pretrained tag or local checkpoint path"
    )
    image_safety: bool = True
    ocr: bool = True
    ocr_min_chars: int = Field(
        default=3, ge=0, description="fewer letters/digits than this in an image: no text"
    )
    probe_dir: Path | None = Field(default=None, description="defaults to <home>/probes")
    tuned_encoder: str | None = Field(
        default="default",
        description="use the fine-tuned encoder this alias names under <home>/encoders "
        "(`childguard eval fine-tune --alias`) for the configured text_embedder when one "
        "exists (aliases are kept per base encoder), else the base weights; empty = always "
        "the base weights",
    )


class ServeSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    stage_timeout_s: float = Field(default=30.0, gt=0)


class WorkbenchSettings(_Section):
    """The policy workbench (issue 25): drafts, promotion, rollback."""

    four_eyes: bool = Field(
        default=True, description="a draft is promoted by an admin or by a policy author "
        "other than its author; off: its author may promote it")
    reload_interval_s: float = Field(
        default=5.0, gt=0, description="how often a running service checks for a newly "
        "promoted or rolled-back policy version")


class ReviewSettings(_Section):
    label_studio_url: str = "http://127.0.0.1:8080"
    label_studio_token: str | None = None
    project_title: str = "childguard review"
    webhook_secret: str | None = None
    media_retention_hours: float = Field(default=72.0, gt=0)
    training_retention_days: float = Field(
        default=365.0, ge=0,
        description="keep reviewed text + context (encrypted, evaluation role only, audited) "
        "this long after the final decision, for `eval snapshot-reviews` sets and retraining; "
        "0 = off. Images are never kept: only their hashes",
    )
    snapshot_interval_hours: float = Field(
        default=24.0, ge=0,
        description="the review worker writes a new version of the `reviewed` evaluation set "
        "when the latest is older than this (and something changed); 0 = off",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8000", description="how Label Studio reaches our media endpoint"
    )
    sla_hours: dict[str, float] = Field(
        default_factory=lambda: {"critical": 1.0, "high": 4.0, "medium": 24.0, "low": 72.0},
        description="review deadline per severity (hours after the item entered the queue)",
    )
    media_url_ttl_hours: float = Field(
        default=168.0, gt=0, description="lifetime of the signed media URLs put into tasks"
    )
    reconcile_interval_s: float = Field(
        default=60.0, gt=0, description="how often the worker pulls annotations it missed"
    )


class Settings(BaseSettings):
    """Everything configurable, with the embedded single-machine defaults."""

    model_config = SettingsConfigDict(
        env_prefix="CHILDGUARD_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    home: Path = Field(default_factory=_default_home)
    policies_dir: Path = Field(default_factory=_repo_policies_dir)
    policy: str = "child_safety"
    database_url: str | None = Field(default=None, description="defaults to SQLite in <home>")
    mlflow_tracking_uri: str | None = Field(default=None, description="defaults to <home>/mlflow")
    limits: LimitsSettings = LimitsSettings()
    hashing: HashingSettings = HashingSettings()
    judge: JudgeSettings = JudgeSettings()
    models: ModelSettings = ModelSettings()
    serve: ServeSettings = ServeSettings()
    review: ReviewSettings = ReviewSettings()
    workbench: WorkbenchSettings = WorkbenchSettings()

    @model_validator(mode="after")
    def _absolute_home(self) -> Settings:
        if not self.home.is_absolute():
            object.__setattr__(self, "home", self.home.resolve())
        return self

    # -- derived locations (all under home unless configured) -----------------------------
    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'childguard.db'}"

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.home / "mlflow" / "artifacts"

    @property
    def models_dir(self) -> Path:
        return self.models.cache_dir or self.home / "models"

    @property
    def probes_dir(self) -> Path:
        return self.models.probe_dir or self.home / "probes"

    @property
    def encoders_dir(self) -> Path:
        return self.home / "encoders"

    @property
    def media_dir(self) -> Path:
        return self.home / "media"

    @property
    def reviewed_dir(self) -> Path:
        """Snapshots of the `reviewed` evaluation set (ids, labels, hashes; no content)."""
        return self.home / "datasets" / "reviewed"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _TOML_FILE.get("path")
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Read settings once: overrides > environment > TOML file > defaults.

        `config_file` falls back to `$CHILDGUARD_CONFIG`; a named file that does not exist is an
        error (a typo must not silently give the defaults).
        """
        if config_file is None and os.environ.get("CHILDGUARD_CONFIG"):
            config_file = Path(os.environ["CHILDGUARD_CONFIG"])
        if config_file is not None and not config_file.is_file():
            raise FileNotFoundError(f"settings file {config_file} does not exist")
        _TOML_FILE["path"] = config_file
        try:
            return cls(**overrides)
        finally:
            _TOML_FILE["path"] = None


# The TOML path is handed to `settings_customise_sources` (a classmethod pydantic calls during
# __init__) for the duration of one `Settings.load` call only.
_TOML_FILE: dict[str, Path | None] = {"path": None}
