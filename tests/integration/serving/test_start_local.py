"""A failed `start_local` leaves no half-started Ray Serve behind.

Why: on a loaded machine Ray's HTTP proxy once missed its 60 s start-up deadline; the failed
start left Serve running, and the next module's `start_local` attached to it ("New
http_options ... will not be applied"), kept the old port and every request was refused, so
one slow start failed 13 tests. The fault here is an app that cannot be composed, raised
inside the real start sequence (Ray and Serve start for real)."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_support import make_settings

from childguard.serving import app as serving_app
from childguard.serving.app import AppArgs, start_local, stop_local
from ports import free_port

pytestmark = pytest.mark.integration


def test_a_failed_start_shuts_its_ray_instance_down(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    assert not ray.is_initialized()
    settings = make_settings(tmp_path / "home")

    def broken_compose(*_: object) -> None:
        assert ray.is_initialized()  # the failure happens with Ray and Serve up
        raise RuntimeError("cannot compose the app (injected)")

    monkeypatch.setattr(serving_app, "compose", broken_compose)
    with pytest.raises(RuntimeError, match="injected"):
        start_local(settings, AppArgs(models="reference"), port=free_port())
    assert not ray.is_initialized(), "a failed start left its Ray instance running"
    stop_local()  # a no-op now; must not raise
