"""Inference-only matrix products: weights prepared once, then reused for every batch.

Used by the token encoder and the LSTM stack when no gradient is needed (see `use_fast_path`);
training and fine-tuning always run the plain autograd code next to each fast path.

Measured on a 2-core AMD EPYC with AVX512-BF16 (benchmarks/README.md): for fp32, PyTorch's
default CPU matmul (MKL) reaches about 90 GFLOP/s per core on the shapes of the biLM, oneDNN's
inner product about 200 when its weights are reordered ("prepacked") once. So on CPU every
product goes through `torch.ops.mkldnn._linear_pointwise`; elsewhere (CUDA, float64, builds
without oneDNN) through plain `torch.addmm`.

Modes:
- "fp32": the same arithmetic as the reference path up to float rounding: over 1,000
  sentences on random models of the published shapes, at most 8.6e-6 (small) and 1.2e-5
  (original; 48 of 72M values above 1e-5) from the reference path, which is itself 5e-6 from
  float64 (this path: 9e-6). oneDNN gives each row of a product the same bits whatever the
  number of rows (from 2 rows up; checked for every shape of the biLM), so outputs stay
  batch invariant.
- "bf16": weights and product inputs in bfloat16, accumulation and everything else in fp32
  (oneDNN's AVX512-BF16 kernels; about 2x the fp32 rate). Per-token cosine to the
  reference >= 0.9996.
- "int8": dynamic quantisation as torch.ao's quantize_dynamic (FBGEMM): int8 weights with one
  scale per output column, activations quantised per call with one scale per tensor. CPU only.
  Per-token cosine to the reference >= 0.997. The activation scale depends on the whole
  batch, so unlike fp32 a sentence's vectors change (slightly) with its batch.
- "reference": no fast path at all, the plain autograd code (for checks and comparisons).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import nn

InferenceMode = Literal["fp32", "bf16", "int8", "reference"]
INFERENCE_MODES: tuple[str, ...] = ("fp32", "bf16", "int8", "reference")
# What every biLM computes with when no gradient is needed, unless told otherwise: the fast
# fp32 path (within ~1e-5 of "reference", the exact autograd path that parity checks use).
DEFAULT_INFERENCE_MODE: InferenceMode = "fp32"

# Products with fewer rows use other kernels (MKL: below 12 rows; oneDNN: 1 row) whose
# summation order differs, which would make a sentence's vectors depend on its batch. Every
# product runs on at least this many rows; the spare rows cost little and are discarded.
MIN_GEMM_ROWS = 16


def bucket_rows(rows: int) -> int:
    """The row count a product runs on: at least MIN_GEMM_ROWS, rounded up to a multiple of 16
    up to 64 rows, then to one of 8 sizes per doubling (at most 12.5% spare rows).

    Why: oneDNN builds (and caches) one kernel per distinct shape, and every distinct output
    size is a distinct heap block; a long `elmokit embed` run sees thousands of row counts.
    Over 100k lines its peak RSS grew 616 -> 1,295 MB without buckets, 346 -> 386 MB with
    them (benchmarks/README.md). Rows are independent in these kernels, so the spare rows
    change no result bit (tests/test_inference_modes.py).
    """
    if rows <= 64:
        return max(MIN_GEMM_ROWS, -(-rows // 16) * 16)
    step = 1 << (rows.bit_length() - 4)  # rows in [2^k, 2^(k+1)) -> multiples of 2^(k-3)
    return -(-rows // step) * step


def check_inference_mode(mode: str) -> InferenceMode:
    if mode not in INFERENCE_MODES:
        raise ValueError(f"inference mode must be one of {INFERENCE_MODES}, got {mode!r}")
    return mode  # type: ignore[return-value]


def use_fast_path(mode: InferenceMode, parameters: Iterable[nn.Parameter]) -> bool:
    """True when the inference code may replace the autograd code: no gradient can be needed
    and we are not being traced by torch.compile (which would see the cached weights)."""
    if mode == "reference" or _compiling():
        return False
    return not (torch.is_grad_enabled() and any(p.requires_grad for p in parameters))


def _compiling() -> bool:
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)  # >= 2.3
    return bool(is_compiling is not None and is_compiling())


def _has_onednn_linear() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    try:  # private ops (used by torch.compile's CPU backend), present since torch 2.1
        torch.ops.mkldnn._linear_pointwise  # noqa: B018
        torch.ops.mkldnn._reorder_linear_weight  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


_ONEDNN_LINEAR = _has_onednn_linear()


def _onednn_usable(weight: torch.Tensor) -> bool:
    return _ONEDNN_LINEAR and weight.device.type == "cpu" and weight.dtype == torch.float32


class PackedLinear:
    """y = x @ weight + bias for a weight in the `x @ W` layout [in, out], prepared for `mode`.

    Inputs and outputs are in the weight's dtype (float32 in the bf16 and int8 modes too).
    `prepack` reorders fp32 weights into oneDNN's blocked layout, a copy of the weight: worth
    it for products run many times on few rows (the LSTM steps, ~25% faster at 64 rows); the
    big one-shot products read the parameter in place (a transposed view, no extra memory).
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        mode: InferenceMode,
        prepack: bool = True,
    ) -> None:
        weight, bias = weight.detach(), None if bias is None else bias.detach()
        self.dtype = weight.dtype
        self.bias = bias
        self._call: Callable[[torch.Tensor], torch.Tensor]
        onednn = _onednn_usable(weight)
        if mode == "int8":
            if weight.device.type != "cpu" or weight.dtype != torch.float32:
                raise ValueError("int8 inference needs a float32 model on the CPU")
            self._call = self._int8(weight, bias)
        elif mode == "bf16":
            if onednn and torch.ops.mkldnn._is_mkldnn_bf16_supported():
                packed = torch.ops.mkldnn._reorder_linear_weight(
                    weight.t().to(torch.bfloat16).contiguous()
                )
                self._call = self._onednn_bf16(packed, bias)
            else:  # CUDA, or a CPU without bf16 support (slow there, but it runs)
                self._call = self._generic_bf16(weight.to(torch.bfloat16), bias)
        elif onednn:
            if prepack:
                packed = torch.ops.mkldnn._reorder_linear_weight(weight.t().contiguous())
            else:
                packed = weight.t()
            self._call = self._onednn_fp32(packed, bias)
        else:
            self._call = self._generic(weight, bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        padded_rows = bucket_rows(rows)
        if padded_rows == rows:
            return self._call(x)
        padded = torch.cat([x, x.new_zeros(padded_rows - rows, *x.shape[1:])])
        return self._call(padded)[:rows]

    # -- implementations ----------------------------------------------------------------

    @staticmethod
    def _onednn_fp32(
        packed: torch.Tensor, bias: torch.Tensor | None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        def call(x: torch.Tensor) -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

        return call

    @staticmethod
    def _onednn_bf16(
        packed: torch.Tensor, bias: torch.Tensor | None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        def call(x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.mkldnn._linear_pointwise(
                x.to(torch.bfloat16), packed, None, "none", [], ""
            )
            # Widen first, then add the fp32 bias in place: a mixed-dtype torch.add(bias, y)
            # took 9 ms for 1500 x 4096 values (5x the product itself).
            y = y.float()
            return y if bias is None else y.add_(bias)

        return call

    @staticmethod
    def _generic(
        weight: torch.Tensor, bias: torch.Tensor | None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        def call(x: torch.Tensor) -> torch.Tensor:
            return x @ weight if bias is None else torch.addmm(bias, x, weight)

        return call

    @staticmethod
    def _generic_bf16(
        weight: torch.Tensor, bias: torch.Tensor | None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        def call(x: torch.Tensor) -> torch.Tensor:
            y = (x.to(torch.bfloat16) @ weight).float()
            return y if bias is None else y.add_(bias)

        return call

    @staticmethod
    def _int8(
        weight: torch.Tensor, bias: torch.Tensor | None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        w = weight.t().contiguous()  # [out, in]
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
        zero_points = torch.zeros(w.shape[0], dtype=torch.long)
        with warnings.catch_warnings():
            # Quantised tensors are deprecated in recent PyTorch, but FBGEMM's dynamic linear
            # is still the fastest int8 product on x86 CPUs.
            warnings.simplefilter("ignore")
            quantized = torch.quantize_per_channel(w, scale, zero_points, 0, torch.qint8)
            packed = torch.ops.quantized.linear_prepack(quantized, bias)

        # Without VNNI, x86 int8 products sum pairs of u8 x s8 in saturating 16 bits, so
        # activations get 7 bits (reduce_range, as quantize_dynamic does); with VNNI the sums
        # are 32-bit and the 8th bit is free (min per-token cosine 0.9973 -> 0.9982 measured).
        vnni = getattr(torch.cpu, "_is_vnni_supported", lambda: False)()

        def call(x: torch.Tensor) -> torch.Tensor:
            return torch.ops.quantized.linear_dynamic(x.contiguous(), packed, not vnni)

        return call


class WeightCache:
    """Prepared weights, rebuilt when any source parameter changes (in-place update, load,
    device or dtype move) or the mode changes. Never saved: deep copies and pickles of the
    owning module start empty, since oneDNN's packed tensors cannot be copied."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._value: Any = None

    def get(
        self, mode: InferenceMode, parameters: Iterable[torch.Tensor], build: Callable[[], Any]
    ) -> Any:
        key = (mode, *((p.data_ptr(), p._version, p.dtype, p.device) for p in parameters))
        if key != self._key:
            self._value = None  # free the old copy before building the new one
            self._value = build()
            self._key = key
        return self._value

    def clear(self) -> None:
        self._key, self._value = None, None

    def __getstate__(self) -> dict[str, Any]:
        return {"_key": None, "_value": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
