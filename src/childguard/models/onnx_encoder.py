"""A sentence encoder's forward pass as an ONNX graph, run by ONNX Runtime.

Why: the probes' text encoder is almost all of the time an item that skips the judge spends in
process, and PyTorch pays per-operator overhead on a short chat message that ONNX Runtime does
not (EmbeddingGemma-300M, 2 cores, one 10-word message: 60 ms torch int8, 34 ms ONNX Runtime
fp32, 24 ms ONNX Runtime int8; ONNX Runtime's int8 also stays closer to fp32: cosine 0.97 vs
torch int8's 0.93; benchmarks/text_latency.py, docs/experiments/onnx_runtime_2026-12-07.json).

What is exported: the whole sentence-transformers model (transformer, pooling, dense layers,
normalisation) from the token ids and attention mask to the sentence vector, once per model
and export setting, with dynamic batch and sequence length. Tokenising stays with
sentence-transformers, so truncation and special tokens are what `encode` does. With int8 the
MatMul weights are quantized (ONNX Runtime dynamic quantization: per-tensor activation scales,
so one text per forward pass, as for torch int8: a vector never depends on its batch).

Exports are derived data kept under `<home>/encoders/onnx/<key>/`, the key a digest of the
model's version label, the weight files' sizes and modification times and the export setting;
written to a temporary directory and renamed into place, so a killed export leaves nothing a
later load would trust. A file that does not load is an error naming the directory to delete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from childguard.errors import ModelUnavailable

__all__ = ["OnnxForward", "export_key"]

log = logging.getLogger(__name__)

_GRAPH = "model.onnx"
_GRAPH_INT8 = "model_int8.onnx"
_META = "export.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def export_key(model_dir: Path, label: str, *, int8: bool) -> str:
    """What an export depends on: the model's label (its version), its weight files (size and
    modification time: a retrained directory under the same name is exported again) and int8."""
    parts = [label, f"int8={int8}"]
    for path in sorted(model_dir.rglob("*")):
        if path.is_file() and path.suffix in _WEIGHT_SUFFIXES:
            st = path.stat()
            parts.append(f"{path.relative_to(model_dir)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class OnnxForward:
    """`__call__(texts) -> (n, dim) float32` through an exported graph of `st_model`.

    `st_model` is the loaded fp32 SentenceTransformer: it tokenises, and is exported when no
    export exists under `cache_root`. `threads` is ONNX Runtime's intra-op thread count (the
    caller's torch setting, so one knob governs both runtimes)."""

    def __init__(self, st_model: Any, model_dir: Path, label: str, *, cache_root: Path,
                 int8: bool, threads: int) -> None:
        self._st = st_model
        self._preprocess = getattr(st_model, "preprocess", None) or st_model.tokenize
        self.int8 = int8
        self.dir = cache_root / export_key(model_dir, label, int8=int8)
        if not (self.dir / _META).is_file():
            self._export(label)
        graph = self.dir / (_GRAPH_INT8 if int8 else _GRAPH)
        try:
            meta = json.loads((self.dir / _META).read_text(encoding="utf-8"))
            self.input_names: tuple[str, ...] = tuple(meta["inputs"])
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = max(1, threads)
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = ort.InferenceSession(str(graph), opts,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelUnavailable(
                f"text encoder {label!r}: the ONNX export at {self.dir} does not load ({exc}); "
                "delete that directory to export it again") from exc

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        feats = self._preprocess(list(texts))
        feed = {name: np.asarray(feats[name].numpy(), dtype=np.int64)
                for name in self.input_names}
        out = self._session.run(None, feed)[0]
        return np.asarray(out, dtype=np.float32)

    # -- export ---------------------------------------------------------------------------
    def _export(self, label: str) -> None:
        import torch

        t0 = time.perf_counter()
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=self.dir.parent))
        try:
            sample = self._preprocess(["a short sample sentence to trace the graph with"])
            # in the order of the forward's parameters below
            names = [k for k in ("input_ids", "attention_mask", "token_type_ids")
                     if isinstance(sample.get(k), torch.Tensor)]
            st = self._st

            class _Forward(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.st = st

                def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
                    feats = {"input_ids": input_ids, "attention_mask": attention_mask}
                    if token_type_ids is not None:
                        feats["token_type_ids"] = token_type_ids
                    return self.st(feats)["sentence_embedding"]  # type: ignore[no-any-return]

            batch = torch.export.Dim("batch", min=1, max=1024)
            seq = torch.export.Dim("seq", min=2, max=int(st.max_seq_length))
            # the exporter reports progress on stdout, which carries a command's --json output
            with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
                torch.onnx.export(
                    _Forward().eval(), tuple(sample[k] for k in names), str(tmp / _GRAPH),
                    input_names=names, output_names=["sentence_vector"],
                    dynamic_shapes={k: {0: batch, 1: seq} for k in names},
                    dynamo=True, external_data=True, verbose=False)
            if self.int8:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(str(tmp / _GRAPH), str(tmp / _GRAPH_INT8),
                                 weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul", "Gemm"],
                                 use_external_data_format=True)
                for path in tmp.iterdir():  # the fp32 graph was only the quantizer's input
                    if path.name.startswith(_GRAPH):
                        path.unlink()
            (tmp / _META).write_text(json.dumps({
                "label": label, "int8": self.int8, "inputs": names,
                "torch": torch.__version__, "seconds": round(time.perf_counter() - t0, 1),
            }, indent=1), encoding="utf-8")
            try:
                os.replace(tmp, self.dir)
            except OSError:  # another process exported it first: theirs is as good
                if not (self.dir / _META).is_file():
                    raise
        except Exception as exc:
            raise ModelUnavailable(
                f"text encoder {label!r}: ONNX export failed ({type(exc).__name__}: {exc}); "
                "set models.text_runtime to 'torch' to run it in PyTorch") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("exported text encoder %s to ONNX (int8=%s) in %.0f s at %s",
                 label, self.int8, time.perf_counter() - t0, self.dir)
