"""Throughput of the cheap signals on this machine; prints one JSON object.

    .venv/bin/python benchmarks/embed.py [--threads 2] [--texts 256] [--images 24]

- texts/s: all-MiniLM-L6-v2 (real packaged weights), batch 32, benign synthetic sentences.
- images/s: CLIP with the ViT-B-32 *shape and random weights* (no pretrained CLIP weights exist
  here; speed does not depend on the weight values; marked "random_weights": true), NudeNet,
  OpenNSFW and RapidOCR on the benign Kodak photos from ../shared/datasets/images/kodak.

Every model gets one warm-up call before timing. No content is printed, only numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
KODAK = (REPO / ".." / "shared" / "datasets" / "images" / "kodak").resolve()

_SUBJECTS = ["the garden", "our team", "the library", "a recipe", "the weather", "my bicycle",
             "the museum", "a birthday cake", "the train station", "the new phone"]
_VERBS = ["looks great", "needs fixing", "opens at nine", "was fun today", "is on sale",
          "got an update", "is closed on monday", "made everyone smile"]


def _texts(n: int) -> list[str]:
    return [
        f"I think {_SUBJECTS[i % len(_SUBJECTS)]} {_VERBS[(i // 3) % len(_VERBS)]}, see you {i}"
        for i in range(n)
    ]


def _rate(n: int, fn: Callable[[], object], repeat: int = 1) -> dict[str, float]:
    fn_start = time.perf_counter()
    for _ in range(repeat):
        fn()
    elapsed = time.perf_counter() - fn_start
    total = n * repeat
    return {"items": total, "seconds": round(elapsed, 3), "per_s": round(total / elapsed, 2),
            "ms_per_item": round(1000 * elapsed / total, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--ocr-images", type=int, default=6, help="OCR is slow: fewer images")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from childguard.models.embedders import OpenClipEmbedder, SentenceEmbedder
    from childguard.models.image_safety import NudeNetDetector, OpenNsfwScorer
    from childguard.models.ocr import RapidOcr
    from childguard.settings import Settings

    paths = sorted(KODAK.glob("*.png"))[: args.images]
    if not paths:
        print(json.dumps({"error": f"no benign photos at {KODAK}"}))
        return 3
    images = []
    for p in paths:
        with Image.open(p) as im:
            images.append(im.convert("RGB"))
    settings = Settings()
    out: dict[str, object] = {
        "machine": {"threads": args.threads, "python": platform.python_version(),
                    "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
                    "load_avg_1m_at_start": round(os.getloadavg()[0], 2)},
        "texts": {}, "images": {},
    }

    # -- text ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    minilm = SentenceEmbedder.from_settings(settings)
    load = time.perf_counter() - t0
    texts = _texts(args.texts)
    minilm.embed_texts(texts[:32])
    out["texts"] = {"minilm": {"model": minilm.model_version, "batch": 32, "load_s": round(load, 2),
                               **_rate(len(texts), lambda: minilm.embed_texts(texts))}}

    # -- images -------------------------------------------------------------------------
    res: dict[str, object] = {}
    t0 = time.perf_counter()
    clip = OpenClipEmbedder.random_weights_for_benchmark("ViT-B-32")
    load = time.perf_counter() - t0
    clip.embed_images(images[:2])
    batch = 8
    res["clip_vit_b_32"] = {
        "model": clip.model_version, "random_weights": clip.random_weights, "batch": batch,
        "load_s": round(load, 2),
        **_rate(len(images), lambda: [clip.embed_images(images[i:i + batch])
                                      for i in range(0, len(images), batch)]),
    }

    for name, factory in (("nudenet", NudeNetDetector), ("opennsfw", OpenNsfwScorer)):
        t0 = time.perf_counter()
        src = factory(threads=args.threads)
        load = time.perf_counter() - t0
        src.signals(images[0])
        res[name] = {"model": src.model_version, "batch": 1, "load_s": round(load, 2),
                     **_rate(len(images), lambda s=src: [s.signals(im) for im in images])}

    t0 = time.perf_counter()
    ocr = RapidOcr(threads=args.threads)
    load = time.perf_counter() - t0
    ocr_imgs = images[: args.ocr_images]
    ocr.read(ocr_imgs[0])
    res["rapidocr"] = {"model": ocr.model_version, "batch": 1, "load_s": round(load, 2),
                       "image_size": list(ocr_imgs[0].size),
                       **_rate(len(ocr_imgs), lambda: [ocr.read(im) for im in ocr_imgs])}
    out["images"] = res
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
