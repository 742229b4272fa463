"""Single-item latency of the configured text encoder by message length; prints one JSON object.

    .venv/bin/python benchmarks/text_latency.py [--repeats 15] [--max-tokens 256] [--threads 2]
        [--throughput N] [--compare-runtime]

Why: the in-process p50 of items that skip the judge is almost all text-encoder time, and it
grows with the message's length (the OpenAI moderation set's median message is ~64 words, a
chat message ~10-30). This times one `embed_texts([text])` call per item, as the pipeline
makes it for a message without context, for benign synthetic texts of 10 to 400 words, with
the encoder as configured (`models.text_embedder`, its int8 setting, a fine-tuned encoder if
one exists) and, with `--max-tokens`, the same encoder reading at most that many tokens: the
ratio of the two in one run says what a token cap would buy. With `--throughput N`, it also
times one `embed_texts` call over N mixed-length texts as configured (an int8 encoder embeds one
text per forward pass, so a vector never depends on its batch companions) and the same call
with the texts batched 8 at a time (what the int8 encoder did before: faster, but its vectors
then depend on the batch), so the ratio says what batch independence costs in throughput. With
`--compare-runtime`, the same encoder is also timed in the other runtime (`models.text_runtime`:
torch or onnx, ONNX Runtime on an exported graph), with the cosine between the two vectors.
No content is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

LENGTHS = (10, 30, 60, 120, 250, 400)
_PHRASE = ("the garden team library recipe weather bicycle museum birthday station phone opens "
          "at nine was fun today is on sale got an update closed on monday made everyone smile "
          "and we walked home after practice")


def text_of(n_words: int) -> str:
    words = _PHRASE.split()
    return " ".join(words[i % len(words)] for i in range(n_words))


def timed(embed, texts: list[str], repeats: int) -> dict[str, float]:
    embed([texts[0]])  # warm-up
    out: dict[str, float] = {}
    for text in texts:
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            embed([text])
            samples.append((time.perf_counter() - t0) * 1000)
        out[str(len(text.split()))] = round(statistics.median(samples), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--throughput", type=int, default=0,
                    help="also time N mixed-length texts in one call: as configured vs batch 8")
    ap.add_argument("--compare-runtime", action="store_true",
                    help="also time the same encoder in the other runtime (torch / onnx)")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from childguard.models.embedders import SentenceEmbedder
    from childguard.settings import Settings

    settings = Settings.load()
    emb = SentenceEmbedder.from_settings(settings)
    texts = [text_of(n) for n in LENGTHS]
    model = emb._model  # the sentence-transformers model (its max_seq_length is the cap)
    result: dict[str, object] = {
        "encoder": emb.model_version,
        "max_seq_length": int(model.max_seq_length),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "repeats": args.repeats,
        "p50_ms_by_words": timed(emb.embed_texts, texts, args.repeats),
    }
    if args.max_tokens:
        full = model.max_seq_length
        model.max_seq_length = min(full, args.max_tokens)
        capped = timed(emb.embed_texts, texts, args.repeats)
        model.max_seq_length = full
        result[f"p50_ms_by_words_max{args.max_tokens}"] = capped
        base = result["p50_ms_by_words"]
        assert isinstance(base, dict)
        result["capped_over_full"] = {k: round(capped[k] / base[k], 3) for k in capped}
    if args.compare_runtime:
        # the other runtime, same settings otherwise: the ratio is measured in this run
        other_rt = "torch" if emb.runtime == "onnx" else "onnx"
        other = SentenceEmbedder.from_settings(settings.model_copy(update={
            "models": settings.models.model_copy(update={"text_runtime": other_rt})}))
        theirs = timed(other.embed_texts, texts, args.repeats)
        ours = result["p50_ms_by_words"]
        assert isinstance(ours, dict)
        vecs = emb.embed_texts(texts), other.embed_texts(texts)
        result["other_runtime"] = {
            "encoder": other.model_version,
            "p50_ms_by_words": theirs,
            "configured_over_other": {k: round(ours[k] / theirs[k], 3) for k in theirs},
            "cosine_by_words": {str(n): round(float(a @ b), 4)
                                for n, a, b in zip(LENGTHS, *vecs, strict=True)},
        }
    if args.throughput:
        mixed = [text_of(LENGTHS[i % len(LENGTHS)]) for i in range(args.throughput)]
        emb.embed_texts(mixed[:8])  # warm-up
        configured = emb.batch_size
        rates: dict[str, float] = {}
        for label, size in (("as_configured", configured), ("batch8", 8)):
            emb.batch_size = size
            t0 = time.perf_counter()
            emb.embed_texts(mixed)
            rates[label] = round(len(mixed) / (time.perf_counter() - t0), 2)
        emb.batch_size = configured
        result["throughput_texts_per_s"] = {"texts": len(mixed), "configured_batch": configured,
                                            **rates,
                                            "configured_over_batch8": round(
                                                rates["as_configured"] / rates["batch8"], 3)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
