"""Meta's sample videos (../shared/datasets/videos, benign clips with reference vPDQ hashes),
for the video tests of every suite: one place that finds them and skips, saying where they
should be, when the shared datasets are not present (a strict `make test` fails on the skip)."""

from __future__ import annotations

from pathlib import Path

import pytest

VPDQ_ROOT = (Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "videos"
             / "vpdq_threatexchange").resolve()
VIDEOS = VPDQ_ROOT / "sample-videos"


def sample_video(name: str) -> Path:
    """The sample clip `<name>.mp4`, or a skip naming the missing file."""
    path = VIDEOS / f"{name}.mp4"
    if not path.is_file():
        pytest.skip(f"Meta's sample video {path} is missing (see ../shared/datasets/README.md)")
    return path
