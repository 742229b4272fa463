"""Our vPDQ frame hashes against Meta's reference hashes, frame by frame, per sample video.

Hashes every frame (as the reference files were made) with bars=False (Meta's hasher has no
bar cropping) and prints one JSON object per video: frames, frames within PDQ distance 10 of
the reference (all, and of quality >= 50, the frames vPDQ matching counts), the largest
distance among those, and frames within the match radius 31. Videos are Meta's samples in
../shared/datasets/videos/vpdq_threatexchange (README: "vPDQ").

    .venv/bin/python benchmarks/vpdq_agreement.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from childguard.hashing.video import hamming_hex, hash_video, parse_vpdq

ROOT = (Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "videos"
        / "vpdq_threatexchange").resolve()


def main() -> int:
    rows = []
    for ref_path in sorted((ROOT / "vpdq-sample-hashes").glob("*.txt")):
        name = ref_path.stem
        video = ROOT / "sample-videos" / f"{name}.mp4"
        if "128x128" in name or not video.is_file():
            continue
        ours = hash_video(video, seconds_per_hash=0, bars=False).frames
        ref = parse_vpdq(ref_path.read_text(), where=name)
        pairs = list(zip(ours, ref, strict=False))
        d_all = [hamming_hex(a.pdq, b.pdq) for a, b in pairs]
        d_q = [hamming_hex(a.pdq, b.pdq) for a, b in pairs if b.quality >= 50]
        row = {"video": name, "frames": len(ours), "reference_frames": len(ref),
               "within_10": sum(d <= 10 for d in d_all),
               "quality50_frames": len(d_q), "quality50_within_10": sum(d <= 10 for d in d_q),
               "quality50_within_31": sum(d <= 31 for d in d_q),
               "quality50_max_distance": max(d_q) if d_q else None}
        rows.append(row)
        print(json.dumps(row), flush=True)
    total = {k: sum(r[k] for r in rows) for k in ("frames", "within_10", "quality50_frames",
                                                   "quality50_within_10", "quality50_within_31")}
    print(json.dumps({"total": total}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
