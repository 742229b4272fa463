"""Age-indicator features: what they count, and that the wrapped embedder keeps its own identity
so probes of another feature set are never applied to it. Texts are benign on purpose."""

from __future__ import annotations

import numpy as np
import pytest

from childguard.models.lexical import LEXICON_VERSION, N_FEATURES, AgeFeatureEmbedder, age_features
from childguard.models.reference_signals import ReferenceTextEmbedder
from childguard.pipeline import embedder_keys


@pytest.mark.parametrize("text", [
    "my daughter is 12 years old and loves swimming",
    "the kids at the elementary school planted a garden",
    "a twelve-year-old won the spelling bee",
    "our toddler finally sleeps through the night",
    "she starts 7th grade next week",
    "my 9yo asked about volcanoes",
])
def test_age_indicators_are_counted(text: str) -> None:
    f = age_features(text)
    assert f.shape == (N_FEATURES,)
    assert f[0] > 0 and f[1] == 1.0 and 0 < f[2] <= 1.0


@pytest.mark.parametrize("text", [
    "the quarterly report is due on friday",
    "two adults planning a hiking trip in the alps",
    "I am 35 years old and learning the piano",
    "",
])
def test_texts_without_age_indicators_score_zero(text: str) -> None:
    assert age_features(text).tolist() == [0.0, 0.0, 0.0]


def test_more_indicators_score_higher() -> None:
    one = age_features("a kid at the park")
    three = age_features("a kid at the park with a toddler and a teenager")
    assert three[0] > one[0]


def test_embedder_appends_features_to_the_base_embedding() -> None:
    base = ReferenceTextEmbedder()
    emb = AgeFeatureEmbedder(base)
    texts = ["my son is 8 years old", "a meeting about the budget"]
    out = emb.embed_texts(texts)
    assert out.shape == (2, base.dim + N_FEATURES) and emb.dim == base.dim + N_FEATURES
    np.testing.assert_allclose(out[:, : base.dim], base.embed_texts(texts), rtol=1e-6)
    np.testing.assert_allclose(out[:, base.dim:], np.stack([age_features(t) for t in texts]))
    assert emb.embed_texts([]).shape == (0, base.dim + N_FEATURES)


def test_embedder_identity_never_matches_the_base_embedders_probes() -> None:
    base = ReferenceTextEmbedder()
    emb = AgeFeatureEmbedder(base)
    assert LEXICON_VERSION in emb.model_version
    # a probe set trained on the base embedder (another dimension) must not be looked up
    assert base.model_version not in embedder_keys(emb)
    assert base.model_version.split("@", 1)[0] not in embedder_keys(emb)


def test_the_probes_regularisation_follows_the_base_encoders_selection() -> None:
    from childguard.evaluation.probe_training import probe_C

    base = ReferenceTextEmbedder()
    assert probe_C(AgeFeatureEmbedder(base)) == AgeFeatureEmbedder.DEFAULT_PROBE_C == 0.5
    base.probe_C = 8.0  # type: ignore[attr-defined]  (what BaseEncoder.probe_c gives Gemma)
    assert probe_C(AgeFeatureEmbedder(base)) == 8.0
    assert probe_C(AgeFeatureEmbedder(base), 2.0) == 2.0  # models.probe_c still wins
    # one name with or without the age features (models.age_features: false probes the base)
    assert probe_C(base) == 8.0
    base.probe_C = None  # type: ignore[attr-defined]  (an encoder with no C of its own)
    assert probe_C(base) == 4.0 and probe_C(AgeFeatureEmbedder(base)) == 0.5
