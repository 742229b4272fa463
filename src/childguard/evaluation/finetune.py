"""Fine-tune the packaged sentence encoder end to end with a multi-label head (CPU, minutes).

Why: frozen all-MiniLM-L6-v2 embeddings with linear probes rank by topic ("violent words",
"mentions a child") more than by what a message does; the encoder itself has to learn the
difference between a look-alike and a violation. The head is multi-label with a mask (a set
labels only some categories; an unknown label contributes no loss) plus auxiliary targets
(the OpenAI set's adult-sexual flag `S`), which teach the encoder what the neighbouring harms
look like without labelling them child-safety violations.

What ships is the encoder alone, saved as a sentence-transformers directory: the pipeline
reads it like the packaged model (`models.text_embedder = <dir>`), and the probes are trained
on its embeddings the usual way, so nothing downstream changes shape.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from childguard.evaluation.datasets import EvalItem

#: auxiliary target: the OpenAI moderation set's adult-sexual flag (meta other_flags holds S)
AUX_SEXUAL = "aux_S"


@dataclass(frozen=True)
class FineTuneConfig:
    epochs: int = 3
    batch_size: int = 16
    max_length: int = 128
    lr_encoder: float = 3e-5
    lr_head: float = 1e-3
    weight_decay: float = 0.01
    max_pos_weight: float = 10.0
    seed: int = 13
    #: contexts are joined before the message (as the probes read them), at most this many
    context_messages: int = 3
    #: train only the top N transformer layers (embeddings and lower layers frozen); None =
    #: end to end. A larger encoder (EmbeddingGemma-300M, 24 layers) is affordable on 2 cores
    #: only this way: the frozen part needs no gradients.
    train_layers: int | None = None


def item_text(it: EvalItem, context_messages: int = 3) -> str:
    """The text the encoder learns from, as the pipeline embeds it: the last context
    messages, then the message, normalised (case, leetspeak, homoglyphs, spacing)."""
    from childguard.normalize import normalize_text

    ctx = [m.text for m in it.context[-context_messages:]] if context_messages else []
    return normalize_text("\n".join([*ctx, it.text or ""]).strip())


def targets(items: Sequence[EvalItem], codes: Sequence[str]) -> tuple[np.ndarray, np.ndarray,
                                                                      list[str]]:
    """(labels, mask, names): one column per code plus the auxiliary one; mask 0 = unknown."""
    names = [*codes, AUX_SEXUAL]
    y = np.zeros((len(items), len(names)), dtype=np.float32)
    mask = np.zeros_like(y)
    for i, it in enumerate(items):
        for j, c in enumerate(codes):
            if c in it.labels:
                y[i, j] = float(it.labels[c])
                mask[i, j] = 1.0
        flags = (it.meta or {}).get("other_flags")
        if flags is not None:
            y[i, -1] = float("S" in flags.split(","))
            mask[i, -1] = 1.0
    return y, mask, names


@dataclass
class Tuned:
    """A fine-tuned encoder (a SentenceTransformer: pooling and normalisation as before) and
    its training head (a torch Linear over `scale` * the L2-normalised embedding, one column
    per name in `targets`). Kept apart: a module set as an attribute of the
    SentenceTransformer would join its forward chain."""

    model: Any
    head: Any
    scale: float
    targets: list[str]
    losses: list[float]


def fine_tune(base_dir: Path, items: Sequence[EvalItem], codes: Sequence[str],
              config: FineTuneConfig = FineTuneConfig(), *, progress: bool = False) -> Tuned:
    """Fine-tune a copy of the sentence-transformers model at `base_dir` on `items`."""
    import torch
    from sentence_transformers import SentenceTransformer

    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    model: Any = SentenceTransformer(str(base_dir), device="cpu", local_files_only=True)
    encoder: Any = model[0].auto_model
    tokenizer = model.tokenizer
    texts = [item_text(it, config.context_messages) for it in items]
    y, mask, names = targets(items, codes)
    keep = mask.sum(axis=0) > 0
    pos = (y * mask).sum(axis=0)
    neg = ((1 - y) * mask).sum(axis=0)
    pos_weight = torch.tensor(np.clip(neg / np.maximum(pos, 1.0), 1.0, config.max_pos_weight),
                              dtype=torch.float32)
    if config.train_layers is not None:
        freeze_below_top(encoder, config.train_layers)
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    dim = encoder.config.hidden_size
    head = torch.nn.Linear(dim, len(names))
    scale = torch.nn.Parameter(torch.tensor(10.0))
    opt = torch.optim.AdamW([
        {"params": trainable, "lr": config.lr_encoder},
        {"params": [*head.parameters(), scale], "lr": config.lr_head},
    ], weight_decay=config.weight_decay)
    n = len(texts)
    steps = config.epochs * math.ceil(n / config.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.0, 1 - s / steps))
    yt = torch.tensor(y)
    mt = torch.tensor(mask * keep[None, :].astype(np.float32))
    encoder.train()
    step = 0
    losses: list[float] = []
    for epoch in range(config.epochs):
        order = np.random.permutation(n)
        total = 0.0
        for b in range(0, n, config.batch_size):
            idx = order[b:b + config.batch_size]
            emb = _embed(encoder, tokenizer, [texts[i] for i in idx], config.max_length)
            logits = head(emb * scale)
            loss_el = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, yt[idx], pos_weight=pos_weight, reduction="none")
            m = mt[idx]
            loss = (loss_el * m).sum() / m.sum().clamp(min=1.0)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            step += 1
            total += float(loss.detach()) * len(idx)
        losses.append(total / n)
        if progress:
            print(json.dumps({"epoch": epoch + 1, "loss": round(total / n, 4)}), flush=True)
    encoder.eval()
    return Tuned(model=model, head=head, scale=float(scale.detach()), targets=names,
                 losses=losses)


def transformer_layers(encoder: Any) -> Any:
    """The stack of transformer blocks of a Hugging Face encoder (BERT-style `encoder.layer`,
    Gemma/Llama-style `layers`)."""
    for path in (("encoder", "layer"), ("layers",), ("model", "layers")):
        obj = encoder
        for name in path:
            obj = getattr(obj, name, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    raise ValueError(f"cannot find the transformer layers of {type(encoder).__name__}")


def freeze_below_top(encoder: Any, n: int) -> None:
    """Only the top `n` transformer blocks (and a final norm after them) keep gradients."""
    layers = transformer_layers(encoder)
    if not 0 < n <= len(layers):
        raise ValueError(f"train_layers must be between 1 and {len(layers)}; received {n}")
    for p in encoder.parameters():
        p.requires_grad_(False)
    for block in list(layers)[-n:]:
        for p in block.parameters():
            p.requires_grad_(True)
    norm = getattr(encoder, "norm", None)  # Gemma/Llama: a norm after the last block
    if norm is not None:
        for p in norm.parameters():
            p.requires_grad_(True)


def _embed(encoder: Any, tokenizer: Any, texts: Sequence[str], max_length: int) -> Any:
    """Mean-pooled, L2-normalised token states (what all-MiniLM-L6-v2's pooling does)."""
    import torch

    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
    out = encoder(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
    pooled = (out * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def head_scores(tuned: Tuned, texts: Sequence[str], *, max_length: int = 256,
                batch_size: int = 32) -> np.ndarray:
    """The fine-tuned head's probabilities (n, targets) for `texts`."""
    import torch

    encoder = tuned.model[0].auto_model
    outs = []
    with torch.no_grad():
        for b in range(0, len(texts), batch_size):
            emb = _embed(encoder, tuned.model.tokenizer, texts[b:b + batch_size], max_length)
            outs.append(torch.sigmoid(tuned.head(emb * tuned.scale)))
    return torch.cat(outs).numpy() if outs else np.zeros((0, len(tuned.targets)))
