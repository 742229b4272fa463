"""Judge test fixtures: the packaged GGUF weights (pulled once, idempotent) and a real local
OpenAI-compatible server (`python -m llama_cpp.server`) on 127.0.0.1 for the client tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from childguard.models import weights
from childguard.policy import Policy, load_policy
from childguard.settings import Settings
from ports import free_port

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def judge_policy() -> Policy:
    return load_policy(REPO / "policies" / "child_safety")


@pytest.fixture(scope="session")
def weights_settings() -> Settings:
    """The default models dir (where `childguard models pull` puts them; `make test` runs it)."""
    return Settings.load(policies_dir=REPO / "policies")


def gguf(settings: Settings, name: str) -> Path:
    """Path of a packaged judge model, assembling it first if needed (never downloads)."""
    weights.pull_one(settings, name)
    return weights.model_path(settings, name)


@pytest.fixture(scope="session")
def judge_gguf(weights_settings: Settings) -> Callable[[str], Path]:
    return lambda name: gguf(weights_settings, name)


@pytest.fixture(scope="session")
def llama_server(weights_settings: Settings) -> Iterator[str]:
    """A real llama_cpp.server with the 0.5B wiring model; yields its /v1 base URL."""
    model = gguf(weights_settings, weights.WIRING_0_5B)
    port = free_port()
    log = open(Path("/tmp") / f"childguard-judge-server-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
         "--model_alias", weights.WIRING_0_5B, "--host", "127.0.0.1", "--port", str(port),
         "--n_ctx", "2048", "--n_threads", "2", "--n_threads_batch", "2",
         "--verbose", "False"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}; see "
                                   f"{log.name}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not start in 180 s; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
