"""EmbeddingGemma-300M with int8 dynamic quantization of its Linear layers: is it faster on
this CPU, and does the probe lose quality? Both variants measured in one run.

Why: Gemma + logistic regression beats the packaged MiniLM on every held-out measure
(docs/experiments/encoder_holdout_2026-12-06.json) but costs ~140 ms p50 per message against
~25 ms, over issue 21's 50 ms budget for items that skip the judge. `torch.ao.quantization.
quantize_dynamic` (weights int8, activations quantized on the fly) is the cheapest speed-up that
keeps the same model; this measures (1) single-message latency, serving-style (batch of 1,
realistic lengths: the v2 test texts), fp32 vs int8 interleaved; (2) cosine between the two
embeddings; (3) the protocol-v2 report of `encoder_holdout.py` (fit on train, bars on v2 calib,
report on v2 test / XSTest / OpenAI test half) for both, from cached embeddings.

    PYTHONPATH=scripts/experiments .venv/bin/python scripts/experiments/gemma_int8.py \
        --model ~/.local/share/childguard/models/embeddinggemma-300m --out runs/enc-holdout
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def load(path: str, int8: bool):  # type: ignore[no-untyped-def]
    import torch
    from sentence_transformers import SentenceTransformer

    m = SentenceTransformer(path, device="cpu", local_files_only=True)
    if int8:
        m = torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8)
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--latency-items", type=int, default=120)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(2)
    from encoder_holdout import V2

    from childguard.evaluation.datasets import load_dataset
    from childguard.evaluation.finetune import item_text

    test = list(load_dataset(V2).split("test"))
    texts = [item_text(it) for it in test][: a.latency_items]
    models = {"fp32": load(a.model, False), "int8": load(a.model, True)}
    times: dict[str, list[float]] = {k: [] for k in models}
    embs: dict[str, list[np.ndarray]] = {k: [] for k in models}
    for m in models.values():  # warm-up
        m.encode(texts[:2], normalize_embeddings=True, show_progress_bar=False)
    for t in texts:  # interleaved, one message at a time, as the service embeds
        for k, m in models.items():
            t0 = time.perf_counter()
            e = m.encode([t], normalize_embeddings=True, show_progress_bar=False)
            times[k].append((time.perf_counter() - t0) * 1000)
            embs[k].append(np.asarray(e)[0])
    cos = np.sum(np.stack(embs["fp32"]) * np.stack(embs["int8"]), axis=1)
    res = {
        "items": len(texts),
        "latency_ms": {k: {"p50": round(float(np.percentile(v, 50)), 1),
                           "p90": round(float(np.percentile(v, 90)), 1)}
                       for k, v in times.items()},
        "speedup_p50": round(float(np.percentile(times["fp32"], 50)
                                   / np.percentile(times["int8"], 50)), 2),
        "cosine_fp32_int8": {"min": round(float(cos.min()), 4),
                             "mean": round(float(cos.mean()), 4)},
    }
    print(json.dumps(res), flush=True)
    (a.out / "gemma_int8_latency.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
