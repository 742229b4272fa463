"""Judge latency on this machine: p50/p95 for a short and a long item, with and without the
policy prefix cache (same run, same loaded model), and tokens/s. Prints JSON.

    nice -n 10 .venv/bin/python benchmarks/judge.py [--model qwen2.5-coder-1.5b-instruct-q4_k_m]
        [--threads 2] [--repeats 7] [--cold-repeats 3]

Items are benign (the label path of the common case: no rationale is generated for "no").
The machine's load average is recorded because other processes share the two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from childguard.models import weights
from childguard.models.base import JudgeInput
from childguard.models.judge_llamacpp import LlamaCppJudge
from childguard.policy import load_policy
from childguard.schema import Message
from childguard.settings import Settings

SHORT = JudgeInput(item_id="bench-short", text="Is the swimming pool open on Sunday mornings?")
_LONG_CTX = tuple(
    Message(author="parent" if i % 2 else "coach",
            text=f"Message {i}: the under-12 team trains on Tuesday at 5pm at the north field; "
                 "bring water, shin pads and a jacket in case it rains, and tell me by Friday "
                 "if your child cannot make the match on Saturday.")
    for i in range(8)
)
LONG = JudgeInput(item_id="bench-long", text="Thanks, see everyone on Tuesday!",
                  context=_LONG_CTX)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=weights.JUDGE_1_5B)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--cold-repeats", type=int, default=3)
    args = ap.parse_args()
    settings = Settings.load()
    policy = load_policy(settings.policies_dir / settings.policy)
    weights.pull_one(settings, args.model)
    t0 = time.perf_counter()
    judge = LlamaCppJudge(weights.model_path(settings, args.model), policy,
                          n_threads=args.threads, n_ctx=settings.judge.n_ctx)
    load_s = time.perf_counter() - t0
    result: dict[str, object] = {
        "model": args.model, "threads": args.threads, "load_s": round(load_s, 2),
        "system_prefix_tokens": len(judge._head), "loadavg_start": os.getloadavg(),
        "items": {},
    }
    for name, item in (("short", SHORT), ("long", LONG)):
        judge.judge_with(item, use_cache=True)  # warm: prefix evaluated and kept
        warm, cold = [], []
        out = None
        for i in range(max(args.repeats, args.cold_repeats)):
            if i < args.cold_repeats:
                c = judge.judge_with(item, use_cache=False)
                cold.append(c.elapsed_ms)
            if i < args.repeats:
                out = judge.judge_with(item, use_cache=True)
                warm.append(out.elapsed_ms)
        assert out is not None and out.status.value == "ok", out
        own = out.prompt_tokens - out.cached_tokens
        result["items"][name] = {  # type: ignore[index]
            "prompt_tokens": out.prompt_tokens, "cached_tokens": out.cached_tokens,
            "cached": {"p50_ms": round(statistics.median(warm), 1),
                       "p95_ms": round(pct(warm, 0.95), 1), "n": len(warm),
                       "item_tokens_per_s": round(own / (statistics.median(warm) / 1000), 1)},
            "uncached": {"p50_ms": round(statistics.median(cold), 1),
                         "p95_ms": round(pct(cold, 0.95), 1), "n": len(cold),
                         "prompt_tokens_per_s": round(
                             out.prompt_tokens / (statistics.median(cold) / 1000), 1)},
        }
    # decode speed (one token per step), what a generated rationale costs per token
    judge.judge_with(SHORT, use_cache=True)
    steps = 16
    t1 = time.perf_counter()
    with judge._lock:
        for _ in range(steps):  # greedy decode, one token per llama_decode call
            judge._eval([int(judge._logits().argmax())])
    result["decode_tokens_per_s"] = round(steps / (time.perf_counter() - t1), 1)
    result["loadavg_end"] = os.getloadavg()
    json.dump(result, sys.stdout, indent=2)
    print()
    judge.close()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    raise SystemExit(main())
