"""Which precision a run trains in: the one asked for, unless the machine would emulate it.

bf16 autocast pays on GPUs and on CPUs with bf16 instructions (AVX512-BF16, AMX: ~5x fp32's
matmul rate). Elsewhere oneDNN emulates bf16 far below fp32 -- measured on a 2-core AMD EPYC
with AVX2 only: 1 GFLOP/s in bf16 against 96 in fp32 (2 threads); the quick-start recipe
in bf16 ran at ~2 images/s there (three 1-thread runs sharing the 2 cores), in fp32 at ~65
(alone, 2 threads). Such a CPU trains in fp32 and says so; the run's config keeps what was
asked, the log (``mixed_precision_used``) what was done.
"""

from __future__ import annotations

import torch


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls in hardware (as oneDNN sees it)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: no fast bf16 either
        return False


def training_precision(requested: str, on_gpu: bool) -> tuple[str, str | None]:
    """``(precision to train in, a note for the user or None)``."""
    if requested != "bf16" or on_gpu or native_cpu_bf16():
        return requested, None
    return "no", (
        "train.mixed_precision=bf16: this CPU has no bf16 instructions (no AVX512-BF16 or "
        "AMX), where bf16 runs ~100x slower than fp32; training in fp32 instead. Scores of "
        "the same recipe trained in bf16 elsewhere differ by the precision only."
    )
