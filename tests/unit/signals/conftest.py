"""Fixtures of the signals tests: benign photos, a tiny random-weight CLIP checkpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[3]
KODAK = (REPO / ".." / "shared" / "datasets" / "images" / "kodak").resolve()

#: a CLIP small enough to build in milliseconds; only for wiring, never for decisions
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def kodak_paths() -> list[Path]:
    paths = sorted(KODAK.glob("*.png"))
    if not paths:
        pytest.skip(f"benign Kodak photos not present at {KODAK} (../shared/datasets/images)")
    return paths


@pytest.fixture(scope="session")
def kodak_images(kodak_paths: list[Path]) -> list[Image.Image]:
    images = []
    for p in kodak_paths[:4]:
        with Image.open(p) as im:
            images.append(im.convert("RGB"))
    return images


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, object]]:
    """(config json, checkpoint, the model it was saved from), built with random weights."""
    import open_clip
    import torch

    d = tmp_path_factory.mktemp("tiny_clip")
    cfg = d / "cg-tiny-clip.json"
    cfg.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(cfg)
    torch.manual_seed(1234)
    model = open_clip.create_model("cg-tiny-clip", pretrained=None).eval()
    ckpt = d / "cg-tiny-clip.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    yield cfg, ckpt, model
