"""The default text encoder as the service loads it: EmbeddingGemma-300M from the shared weights
cache, exported to ONNX and int8-quantized by ONNX Runtime, with the age features (wiring tests
run on MiniLM, tests/conftest.py).

Why: `make test` pins the wiring encoder for speed, so without this test the default `make run`
configuration would load an encoder no test ever loaded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from childguard.models.embedders import base_encoder, build_text_embedder
from childguard.models.weights import EMBEDDING_GEMMA, spec, status_spec
from childguard.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def default_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("CHILDGUARD_MODELS__TEXT_EMBEDDER", raising=False)
    monkeypatch.delenv("CHILDGUARD_MODELS__TEXT_EMBEDDER_INT8", raising=False)
    monkeypatch.delenv("CHILDGUARD_MODELS__TEXT_RUNTIME", raising=False)
    cache = os.environ.get("CHILDGUARD_MODELS__CACHE_DIR")
    models = {"cache_dir": Path(cache)} if cache else {}
    return Settings.load(home=tmp_path / "home", policies_dir=REPO / "policies", models=models)


def test_the_default_encoder_is_int8_embeddinggemma(default_settings: Settings) -> None:
    assert default_settings.models.text_embedder == EMBEDDING_GEMMA
    gemma = status_spec(default_settings, spec(EMBEDDING_GEMMA))
    if not gemma.ready:
        pytest.skip(f"{EMBEDDING_GEMMA} is not in the weights cache: `childguard models pull` "
                    "fetches it (make test does)")
    base = base_encoder(default_settings)
    assert base.int8 and base.train_layers == 4 and base.runtime == "onnx"
    emb = build_text_embedder(default_settings)
    assert emb.model_version.startswith(EMBEDDING_GEMMA)
    assert emb.model_version.endswith("+ort-int8x1")  # ONNX Runtime, int8, one text per pass
    assert "tuned" not in emb.model_version  # a fresh home: no fine-tuned encoder yet
    x = emb.embed_texts(["where do we meet for practice on saturday",
                         "what time is football training this weekend",
                         "the invoice for the printer cartridges is attached"])
    assert x.shape[0] == 3 and np.isfinite(x).all()
    unit = x[:, :768] / np.linalg.norm(x[:, :768], axis=1, keepdims=True)
    # two ways of asking about the same practice are closer than either is to an invoice
    assert unit[0] @ unit[1] > max(unit[0] @ unit[2], unit[1] @ unit[2])
