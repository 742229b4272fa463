"""What the policy rules cost per item, against text normalisation alone (its baseline: every
item is normalised for the probes anyway, and the rules normalise again to drop apostrophes).

Why: rules run on every text item, before the gate, so their time is paid by the items that
skip the judge, the ones a product service waits for most. Texts are benign and synthetic
(repeated ordinary sentences) at several lengths; nothing is read from a dataset.

    .venv/bin/python benchmarks/rules_match.py [--repeat 200]

Prints one JSON object: per length (words), ms per item for normalisation alone and for the
policy's rules on the message (and on a 4-message conversation), and their ratio, all
measured in this run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SENTENCE = ("the bus to practice leaves at five, bring water and a snack, and tell me if you "
            "need a ride home after the game on saturday. ")


def _ms(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm caches
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) * 1000 / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=200, help="matches per length (default 200)")
    ap.add_argument("--policy", type=Path,
                    default=Path(__file__).resolve().parents[1] / "policies" / "child_safety")
    args = ap.parse_args()

    from childguard.normalize import normalize_text
    from childguard.policy import load_policy

    policy = load_policy(args.policy)
    rules = policy.rules
    words_per_sentence = len(SENTENCE.split())
    out: dict[str, object] = {"policy": f"{policy.id}@{policy.version}", "rules": len(rules),
                              "repeat": args.repeat, "lengths": []}
    for n_sentences in (1, 4, 16, 64, 256):
        text = SENTENCE * n_sentences
        context = [SENTENCE] * 4
        reps = max(5, args.repeat // n_sentences)
        base = _ms(lambda t=text: normalize_text(t), reps)
        msg = _ms(lambda t=text: rules.match(t), reps)
        conv = _ms(lambda t=text, c=context: rules.match(t, context=c), reps)
        out["lengths"].append({  # type: ignore[union-attr]
            "words": words_per_sentence * n_sentences, "normalize_ms": round(base, 4),
            "rules_ms": round(msg, 4), "rules_with_context_ms": round(conv, 4),
            "rules_over_normalize": round(msg / base, 2) if base else None,
        })
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
