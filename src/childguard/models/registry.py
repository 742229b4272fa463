"""The explicit registry of model implementations per role, checked at start-up.

Why explicit: a list you can read beats plugin discovery for a safety service. Every
implementation the service may build is named here with its role, the content types it covers
and whether it is a reference (test/demo) implementation. Targets are import-path strings
("module:Class"), so importing the registry imports no model code (no torch, no onnxruntime,
no llama.cpp) and one missing optional backend (vLLM on a CPU box) does not break the others.

`check_registry()` runs at start-up: names are unique per role, every role has exactly one
reference implementation, and every content type (text, image) is covered by a real and by a
reference implementation. With `verify_imports=True` it also checks each target module can be
found (without importing it), so a typo fails start-up with the name, not the first request.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from childguard.errors import ChildguardError
from childguard.settings import Settings

__all__ = [
    "CONTENT_TYPES",
    "REGISTRY",
    "Implementation",
    "RegistryError",
    "Role",
    "build",
    "check_registry",
    "get",
    "implementations",
    "resolve",
]

CONTENT_TYPES = frozenset({"text", "image"})


class Role(StrEnum):
    JUDGE = "judge"
    TEXT_EMBEDDER = "text_embedder"
    IMAGE_EMBEDDER = "image_embedder"
    IMAGE_SIGNAL = "image_signal"
    OCR = "ocr"


class RegistryError(ChildguardError):
    """The registry is inconsistent or names something that cannot be found (a bug)."""


@dataclass(frozen=True)
class Implementation:
    role: Role
    name: str
    target: str  # "package.module:Class"
    content_types: frozenset[str]
    reference: bool = False
    #: an optional backend (not installed in every venv), e.g. vLLM on CPU machines
    optional: bool = False

    @property
    def module(self) -> str:
        return self.target.split(":", 1)[0]

    @property
    def attr(self) -> str:
        return self.target.split(":", 1)[1]


_T = frozenset({"text"})
_I = frozenset({"image"})
_TI = frozenset({"text", "image"})
_M = "childguard.models"

REGISTRY: tuple[Implementation, ...] = (
    # judges (the judge engineer's modules; judges read text, OCR text and "has image")
    Implementation(Role.JUDGE, "llama_cpp", f"{_M}.judge_llamacpp:LlamaCppJudge", _TI),
    Implementation(Role.JUDGE, "llm_probe", f"{_M}.judge_probe:ProbeJudge", _TI),
    Implementation(Role.JUDGE, "openai", f"{_M}.judge_openai:OpenAICompatibleJudge", _TI),
    Implementation(Role.JUDGE, "vllm", f"{_M}.judge_vllm:VllmJudge", _TI, optional=True),
    Implementation(Role.JUDGE, "reference", f"{_M}.reference:ReferenceJudge", _TI, reference=True),
    # text embedders
    Implementation(Role.TEXT_EMBEDDER, "minilm", f"{_M}.embedders:SentenceEmbedder", _T),
    Implementation(Role.TEXT_EMBEDDER, "open_clip.text", f"{_M}.embedders:OpenClipEmbedder", _T),
    Implementation(
        Role.TEXT_EMBEDDER, "reference", f"{_M}.reference_signals:ReferenceTextEmbedder", _T,
        reference=True,
    ),
    # image embedders
    Implementation(Role.IMAGE_EMBEDDER, "open_clip", f"{_M}.embedders:OpenClipEmbedder", _I),
    Implementation(
        Role.IMAGE_EMBEDDER, "reference", f"{_M}.reference_signals:ReferenceClipEmbedder", _I,
        reference=True,
    ),
    # image-safety detectors
    Implementation(Role.IMAGE_SIGNAL, "nudenet", f"{_M}.image_safety:NudeNetDetector", _I),
    Implementation(Role.IMAGE_SIGNAL, "opennsfw", f"{_M}.image_safety:OpenNsfwScorer", _I),
    Implementation(
        Role.IMAGE_SIGNAL, "reference", f"{_M}.reference_signals:ReferenceImageSafety", _I,
        reference=True,
    ),
    # OCR
    Implementation(Role.OCR, "rapidocr", f"{_M}.ocr:RapidOcr", _I),
    Implementation(Role.OCR, "reference", f"{_M}.reference_signals:ReferenceOcr", _I,
                   reference=True),
)


def implementations(role: Role | str, *, include_reference: bool = True) -> list[Implementation]:
    role = Role(role)
    return [i for i in REGISTRY if i.role is role and (include_reference or not i.reference)]


def get(role: Role | str, name: str) -> Implementation:
    role = Role(role)
    for impl in REGISTRY:
        if impl.role is role and impl.name == name:
            return impl
    known = ", ".join(i.name for i in implementations(role))
    raise RegistryError(f"no {role.value} implementation named {name!r}; known: {known}")


def resolve(role: Role | str, name: str) -> Any:
    """Import and return the class registered as (role, name)."""
    impl = get(role, name)
    try:
        module = importlib.import_module(impl.module)
        return getattr(module, impl.attr)
    except (ImportError, AttributeError) as exc:
        raise RegistryError(
            f"{impl.role.value} implementation {name!r} ({impl.target}) cannot be imported: {exc}"
        ) from exc


def build(role: Role | str, name: str, settings: Settings, *args: Any, **kwargs: Any) -> Any:
    """Resolve (role, name) and construct it with `from_settings(settings, *args, **kwargs)`.

    Judges take the policy as the extra argument: `build("judge", "reference", s, policy)`.
    """
    return resolve(role, name).from_settings(settings, *args, **kwargs)


def check_registry(
    registry: Iterable[Implementation] = REGISTRY, *, verify_imports: bool = False
) -> None:
    """Raise RegistryError unless the registry is consistent (see the module docstring)."""
    entries = list(registry)
    problems: list[str] = []
    seen: set[tuple[Role, str]] = set()
    for impl in entries:
        key = (impl.role, impl.name)
        if key in seen:
            problems.append(f"duplicate {impl.role.value} name {impl.name!r}")
        seen.add(key)
        if ":" not in impl.target:
            problems.append(f"{impl.name!r}: target {impl.target!r} is not 'module:Class'")
        unknown = set(impl.content_types) - CONTENT_TYPES
        if unknown or not impl.content_types:
            problems.append(
                f"{impl.name!r}: content types {sorted(impl.content_types)} must be a non-empty "
                f"subset of {sorted(CONTENT_TYPES)}"
            )
    for role in Role:
        refs = [i for i in entries if i.role is role and i.reference]
        if len(refs) != 1:
            problems.append(
                f"role {role.value} needs exactly one reference implementation; has {len(refs)}"
            )
    for ctype in sorted(CONTENT_TYPES):
        for reference in (False, True):
            if not any(ctype in i.content_types and i.reference is reference for i in entries
                       if i.role is not Role.JUDGE):
                kind = "reference" if reference else "real"
                problems.append(f"no {kind} signal implementation covers content type {ctype!r}")
        if not any(ctype in i.content_types for i in entries if i.role is Role.JUDGE):
            problems.append(f"no judge covers content type {ctype!r}")
    if verify_imports:
        for impl in entries:
            if impl.optional or ":" not in impl.target:
                continue
            try:
                spec = importlib.util.find_spec(impl.module)
            except (ImportError, ValueError) as exc:
                spec = None
                problems.append(f"{impl.target}: {exc}")
                continue
            if spec is None:
                problems.append(
                    f"{impl.role.value} {impl.name!r}: module {impl.module} not found"
                )
    if problems:
        raise RegistryError("model registry is inconsistent: " + "; ".join(problems))
