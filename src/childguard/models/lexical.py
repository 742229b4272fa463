"""Age-indicator features: the words that make content about a child, appended to an embedding.

Why: the policy's line between allowed adult content and sexual content involving minors is
often one word ("adults role-playing as adults, with no age indicators of a minor"). A sentence
embedding blurs single words into the topic of the whole text, and all-MiniLM-L6-v2 reads only
the first 256 word pieces of a long text, so a probe on it sees *sexual* far better than *about
a child*. Counting explicit age indicators over the whole text and giving the counts to the
same linear probe fixes much of that. Measured with 5-fold cross-validation (3 seeds) on the
OpenAI moderation dev half (488 rows, 39 sexual/minors): probe AUPRC 0.61 on MiniLM alone,
0.69 with these three features (C=2; C was later re-selected by CV, see `probe_C` below).

The lexicon names age and school-age terms only, never sexual vocabulary: the embedding already
carries the topic, the features carry the age. It is versioned (`LEXICON_VERSION`): the
embedder's `model_version` includes it, so probes trained on one lexicon are never applied to
features of another.

`AgeFeatureEmbedder` wraps any `TextEmbedder` and appends the features, so probes, the gate and
`eval train-probes` use it unchanged. Its rows are not unit-length (the base part is, the three
features are counts): only the linear probes read them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from childguard.models.base import TextEmbedder

__all__ = ["LEXICON_VERSION", "N_FEATURES", "AgeFeatureEmbedder", "age_features"]

LEXICON_VERSION = "age-v1"
N_FEATURES = 3

_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen"
    "|sixteen|seventeen"
)
_AGE = re.compile(
    r"\b(?:"
    r"child|children|childs?|kid|kids|kiddo|minor|minors|underage|under-age|under\s+18"
    r"|teen|teens|teenage|teenager|teenagers|preteen|pre-teen|tween|tweens"
    r"|daughter|daughters|son|sons|niece|nephew|stepdaughter|stepson|grandchild|granddaughter"
    r"|schoolgirl|schoolboy|schoolkid|pupil|pupils|student\s+in\s+\w+\s+grade"
    r"|little\s+(?:girl|boy|one|sister|brother)|young\s+(?:girl|boy|child)"
    r"|baby|babies|toddler|toddlers|infant|infants|prepubescent|pubescent|puberty"
    r"|elementary|kindergarten|middle\s+school|junior\s+high|high\s+school|\d+(?:st|nd|rd|th)\s+grade"
    r"|lolita|loli|shota|jailbait|pedo\w*|paedo\w*|ped0\w*"
    r"|(?:1[0-7]|[1-9])\s*(?:yo|y/o|y\.o\.|yrs?\s+old|years?\s+old|year-old|years-old)"
    rf"|(?:{_NUMBER_WORDS})[\s-]+years?[\s-]+old"
    r")\b",
    re.IGNORECASE,
)


def age_features(text: str) -> np.ndarray:
    """[log(1 + count), any present (0/1), density capped at 1] of age indicators in `text`."""
    n = len(_AGE.findall(text or ""))
    words = max(1, len((text or "").split()))
    return np.array([np.log1p(n), float(n > 0), min(1.0, 20.0 * n / words)], dtype=np.float32)


class AgeFeatureEmbedder(TextEmbedder):
    """`base`'s embedding with the age-indicator features appended (dim = base.dim + 3)."""

    name: ClassVar[str] = "minilm+age"
    #: the probes' inverse regularisation on these features (`probe_training.probe_C`):
    #: selected by 5-fold CV x 3 seeds on the OpenAI train half (+ our set's train rows),
    #: sexual_minors AUPRC on the held-out folds: C=0.5 0.688, C=4 0.669 (per-source heads,
    #: every row with S3 unknown as negative); the test half was not looked at to choose it.
    #: A base encoder with its own selected C (its `probe_C`, e.g. EmbeddingGemma 8) overrides it.
    DEFAULT_PROBE_C: ClassVar[float] = 0.5

    def __init__(self, base: TextEmbedder) -> None:
        self.base = base
        self.dim = int(base.dim) + N_FEATURES
        name, sep, rest = base.model_version.partition("@")
        # "<base name>+age-v1@<source>": its own name before '@', so probes trained on the base
        # embedder alone (another dimension) are never looked up for this one
        self._version = f"{name}+{LEXICON_VERSION}{sep}{rest}"

    @property
    def model_version(self) -> str:
        return self._version

    @property
    def probe_C(self) -> float:  # the name probe_training.probe_C reads
        own = getattr(self.base, "probe_C", None)
        return float(own) if own is not None else self.DEFAULT_PROBE_C

    @property
    def trained_on(self) -> tuple[str, ...]:
        """The items a fine-tuned base encoder was trained on (none for packaged weights)."""
        return tuple(getattr(self.base, "trained_on", ()) or ())

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        base = np.asarray(self.base.embed_texts(texts), dtype=np.float32)
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        feats = np.stack([age_features(t) for t in texts])
        return np.hstack([base, feats]).astype(np.float32)
