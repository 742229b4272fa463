"""The judge model's hidden state on a classification prompt, as features for the probes.

Why: a sentence embedding (all-MiniLM-L6-v2) encodes what a text is *about*; whether a message
sexualises or grooms a child is often in how it addresses someone, which a 22M-parameter
sentence model blurs (the frozen MiniLM probe misses grooming and sextortion). An
instruction-tuned LLM that has just read "does this message sexualise, groom or exploit a
minor?" followed by the message should hold, in the hidden state of its last prompt token,
the evidence it would answer from. A linear probe on that vector is a judge that costs one prompt
pass and no generation, is trained on our labels, and gives a calibrated score instead of a
yes/no token (`judge_probe.py` has what it measured).

How: llama.cpp with `embeddings=True` and last-token pooling returns that hidden state
(`llama_get_embeddings_seq`). The prompt is the model's chat frame with a short, fixed,
versioned question (`TEMPLATE_VERSION`); the item is tokenised with `special=False`, so text
that spells a control token ("<|im_end|>") stays text and cannot close the frame, and is cut to
`max_tokens` tokens. Several items go through one decode as separate sequences. Rows are
L2-normalised (the probes' scale does not depend on the prompt's length).

`model_version` names the model, the template version and the weights' checksum prefix, so a
probe trained on one never reads another's features. An optional on-disk cache (keyed by that
version and the text's sha256, holding vectors only, never text) lets `eval train-probes` and
`eval run` on the same sets pay for each prompt once.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from childguard.errors import ModelUnavailable
from childguard.models.base import TextEmbedder

__all__ = ["TEMPLATE_VERSION", "LlamaHiddenEmbedder"]

#: bump when the question or the frame changes: probes trained on another version are not used
TEMPLATE_VERSION = "hidden-v1"

_SYSTEM = "You are a child-safety content moderator."
_QUESTION = (
    "Does the following message sexualise a minor, groom or solicit a child, threaten or "
    "coerce a minor for sexual images, or trade or advertise sexual content or contact with "
    "minors? Read it carefully.\n\nMessage:\n"
)
_ANSWER = "Answer yes or no."


class LlamaHiddenEmbedder(TextEmbedder):
    """Last-token hidden state of a GGUF chat model on the moderation question, L2-normalised."""

    name: ClassVar[str] = "llm-hidden"
    #: probes on these rows want almost no regularisation: the hidden states of different
    #: texts are nearly parallel (cosine ~0.97), so what separates them is small in norm
    #: (5-fold CV, 1.5B judge, 130 rows / 29 positives of the OpenAI moderation dev half:
    #: sexual/minors AUPRC 0.45 at C=4, 0.66 at C=1e4)
    probe_C: ClassVar[float] = 1e4

    def __init__(
        self,
        model_path: Path,
        *,
        model_name: str,
        checksum: str,
        n_threads: int = 2,
        max_tokens: int = 256,
        batch_tokens: int = 1024,
        cache_dir: Path | None = None,
    ) -> None:
        try:
            import llama_cpp
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise ModelUnavailable(f"llama-cpp-python is not importable: {exc}") from exc
        if not Path(model_path).is_file():
            raise ModelUnavailable(f"hidden-state model file {model_path} does not exist")
        self._llama_cpp = llama_cpp
        self.max_tokens = max_tokens
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(model_path), embedding=True,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST,
                n_ctx=batch_tokens + 256, n_batch=batch_tokens, n_ubatch=batch_tokens,
                n_seq_max=16, n_threads=n_threads, n_threads_batch=n_threads, verbose=False,
            )
        except Exception as exc:
            raise ModelUnavailable(f"llama.cpp could not load {model_path}: {exc}") from exc
        self.dim = int(self.llm.n_embd())
        self._n_batch = batch_tokens
        self._n_seq = 16
        self._head, self._tail = self._frame()
        if len(self._head) > 256 or len(self._tail) + max_tokens > batch_tokens:
            raise ModelUnavailable(
                f"hidden-state prompt ({len(self._head)} + {len(self._tail)} frame tokens, "
                f"{max_tokens} item tokens) does not fit a batch of {batch_tokens} tokens"
            )
        self._head_ready = False
        self._version = f"{model_name}+{TEMPLATE_VERSION}@{checksum[:12]}"
        self._lock = threading.Lock()
        self._cache = _VectorCache(cache_dir / self._version, self.dim) if cache_dir else None

    @property
    def model_version(self) -> str:
        return self._version

    def close(self) -> None:
        self.llm.close()

    def _frame(self) -> tuple[list[int], list[int]]:
        """Token ids before and after the item: the chat frame with the question."""
        template = self.llm.metadata.get("tokenizer.chat_template") or ""
        if "<|im_start|>" in template or not template:
            head = (f"<|im_start|>system\n{_SYSTEM}<|im_end|>\n<|im_start|>user\n{_QUESTION}")
            tail = f"\n\n{_ANSWER}<|im_end|>\n<|im_start|>assistant\n"
        else:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            sentinel = "\x00ITEM\x00"
            eos = self.llm.detokenize([self.llm.token_eos()], special=True).decode(errors="ignore")
            fmt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token="",
                                      add_generation_prompt=True)
            prompt = fmt(messages=[{"role": "system", "content": _SYSTEM},
                                   {"role": "user",
                                    "content": f"{_QUESTION}{sentinel}\n\n{_ANSWER}"}]).prompt
            if prompt.count(sentinel) != 1:
                raise ModelUnavailable("the model's chat template does not render a user message")
            head, tail = prompt.split(sentinel)
        return (self.llm.tokenize(head.encode(), add_bos=True, special=True),
                self.llm.tokenize(tail.encode(), add_bos=False, special=True))

    def tokens(self, text: str) -> list[int]:
        """The prompt's token ids for `text` (the item cut to `max_tokens`)."""
        return [*self._head, *self._item_tokens(text)]

    def prompt_size(self, text: str) -> tuple[int, int, bool]:
        """(prompt tokens, of which the shared cached head, whether the item was cut)."""
        n = len(self.llm.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=False))
        used = min(n, self.max_tokens)
        return len(self._head) + used + len(self._tail), len(self._head), n > self.max_tokens

    def _item_tokens(self, text: str) -> list[int]:
        """The item (cut to `max_tokens`, special tokens off) and the frame's tail."""
        item = self.llm.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=False)
        return [*item[: self.max_tokens], *self._tail]

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        cache = self._cache
        keys = [self._key(t) for t in texts] if cache else []  # no hashing without a cache
        todo: list[int] = []
        for i in range(len(texts)):
            hit = cache.get(keys[i]) if cache else None
            if hit is None:
                todo.append(i)
            else:
                out[i] = hit
        if todo:
            with self._lock:
                vecs = self._decode([self._item_tokens(texts[i]) for i in todo])
            for i, v in zip(todo, vecs, strict=True):
                out[i] = v
                if cache:
                    cache.put(keys[i], v)
        return out

    def _key(self, text: str) -> str:
        return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()

    def _decode(self, suffixes: list[list[int]]) -> list[np.ndarray]:
        """Hidden states for many prompts, packed into as few decodes as the batch allows.

        The frame's head is the same for every item: it is decoded once into sequence 0 of the
        KV cache and shared (`llama_memory_seq_cp`) with sequences 1..n, so each decode carries
        only the items and the tail. llama-cpp-python has no public multi-sequence API for
        this, hence the low-level calls on its context and batch.
        """
        lc = self._llama_cpp
        ctx = self.llm._ctx
        mem = lc.llama_get_memory(ctx.ctx)
        if not self._head_ready:
            lc.llama_memory_clear(mem, True)
            self._fill([(0, 0, self._head)])
            ctx.decode(self.llm._batch)
            self._head_ready = True
        result: list[np.ndarray] = []
        group: list[list[int]] = []

        def flush() -> None:
            if not group:
                return
            for seq in range(1, len(group) + 1):
                lc.llama_memory_seq_rm(mem, seq, -1, -1)
                lc.llama_memory_seq_cp(mem, 0, seq, -1, -1)
            self._fill([(seq + 1, len(self._head), toks) for seq, toks in enumerate(group)])
            try:
                ctx.decode(self.llm._batch)
            finally:
                for seq in range(1, len(group) + 1):
                    lc.llama_memory_seq_rm(mem, seq, -1, -1)
            for seq in range(1, len(group) + 1):
                ptr = lc.llama_get_embeddings_seq(ctx.ctx, seq)
                if not ptr:
                    raise ModelUnavailable("llama.cpp returned no pooled embedding")
                result.append(_unit(np.ctypeslib.as_array(ptr, shape=(self.dim,)).copy()))
            group.clear()

        used = 0
        for toks in suffixes:
            if group and (used + len(toks) > self._n_batch or len(group) >= self._n_seq - 1):
                flush()
                used = 0
            group.append(toks)
            used += len(toks)
        flush()
        return result

    def _fill(self, seqs: list[tuple[int, int, list[int]]]) -> None:
        """Put (sequence id, first position, tokens) runs into the context's batch; every
        token is an output (llama.cpp's embedding mode asks for that)."""
        b = self.llm._batch
        b.reset()  # type: ignore[no-untyped-call]
        raw = b.batch
        n = 0
        for seq, pos0, toks in seqs:
            for i, tok in enumerate(toks):
                raw.token[n] = tok
                raw.pos[n] = pos0 + i
                raw.seq_id[n][0] = seq
                raw.n_seq_id[n] = 1
                raw.logits[n] = True
                n += 1
        raw.n_tokens = n


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return np.asarray(v / max(float(np.linalg.norm(v)), 1e-12), dtype=np.float32)


class _VectorCache:
    """Vectors on disk, one .npy per text hash under a directory named by the model version."""

    def __init__(self, root: Path, dim: int) -> None:
        self.root = root
        self.dim = dim
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        p = self._path(key)
        if not p.is_file():
            return None
        try:
            v: Any = np.load(p, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return v if getattr(v, "shape", None) == (self.dim,) else None

    def put(self, key: str, v: np.ndarray) -> None:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".{threading.get_ident()}.tmp")
        with tmp.open("wb") as fh:
            np.save(fh, np.asarray(v, dtype=np.float32), allow_pickle=False)
        tmp.replace(p)
