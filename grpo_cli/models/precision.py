"""The compute precision (`model.dtype`): matmuls in bf16/fp16, weights that train kept in float32.

A model that trains keeps float32 parameters and optimizer state (the master weights: a bf16
weight cannot hold an update of 1e-5 of itself) and runs its forward and backward under
`torch.autocast` in the compute dtype. Weights that never train (a LoRA base, a reference model,
the model `grpo sample` and `grpo eval` load) are stored in the compute dtype itself: half the
bytes, and no cast per call. Sampling reads every weight once per token, so a model whose weights
are mostly float32 samples from a compute-dtype copy, cast from its current weights for each
sampling call and freed after it (`SamplingCopy`).

`model.dtype: auto` takes bf16 where the hardware runs it natively (a CUDA device that supports it;
a CPU with AVX512-BF16 or AMX) and, on a CPU, where the model's MLP weight (hidden x width) has at
least `AUTO_MIN_MLP_WEIGHTS` entries; float32 elsewhere. A rule of the model's shape, not a timing
taken at start: the same model on the same CPU always gets the same precision, so a seeded run or a
resumed one does not depend on how busy the machine was. The bound comes from timing the MLP matmul
for 64 rows on a 2-core AVX512-BF16 CPU (benchmarks/README.md, "bf16 on CPU"): bf16 saved 33 us at
128 x 512 (the shipped tiny model), 91 us at 192 x 768, 121 us at 256 x 1024 and 379 us at 576 x
1536 (SmolLM2). A small model's step is bound by the cost per op, not by its matmuls, and bf16 adds
casts: the tiny model's GRPO step took 0.70 CPU s in bf16 against 0.66 in float32, so it stays
float32; SmolLM2's took 0.75x the CPU time of float32.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch

AUTO_MIN_MLP_WEIGHTS = 256 * 1024
"""Entries in the MLP weight (hidden x width) from which `auto` takes bf16 on a bf16 CPU (about
where bf16 saves 0.1 ms on that matmul for 64 rows: the module docstring)."""
_ATTRIBUTE = "grpo_compute_dtype"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where that cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: str) -> bool:
    """Whether `device` computes bf16 matmuls in hardware."""
    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve(name: str, device: str, hidden: int, intermediate: int) -> torch.dtype:
    """The compute dtype `model.dtype` names, `auto` decided as the module docstring says."""
    if name != "auto":
        return getattr(torch, name)
    if not native_bf16(device):
        return torch.float32
    if device.startswith("cuda"):
        return torch.bfloat16
    return torch.bfloat16 if hidden * intermediate >= AUTO_MIN_MLP_WEIGHTS else torch.float32


def mark(model: Any, dtype: torch.dtype) -> None:
    """Record `model`'s compute dtype on it (a LoRA wrapper shares the module, so sees it too)."""
    setattr(model, _ATTRIBUTE, dtype)


def compute_dtype(model: Any) -> torch.dtype:
    """The dtype `model` computes in: the one `mark` recorded, else its first parameter's."""
    marked = getattr(model, _ATTRIBUTE, None)
    return marked if marked is not None else next(model.parameters()).dtype


def autocast(model: Any) -> contextlib.AbstractContextManager[Any]:
    """`torch.autocast` to the model's compute dtype where it has float32 weights to compute in a
    lower precision; otherwise nothing."""
    dtype = compute_dtype(model)
    if dtype == torch.float32 or not any(p.dtype == torch.float32 for p in model.parameters()):
        return contextlib.nullcontext()
    device = next(model.parameters()).device.type
    return torch.autocast(device_type=device, dtype=dtype)


def in_compute_dtype(model: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, each call under `autocast(model)` where that applies (decided now: call it once the
    model's weights have their dtypes)."""
    if isinstance(autocast(model), contextlib.nullcontext):
        return fn

    def under_autocast(*args: Any, **kwargs: Any) -> Any:
        with autocast(model):
            return fn(*args, **kwargs)

    return under_autocast


def store_frozen(model: Any) -> None:
    """Store the weights that do not train (a LoRA base) in the compute dtype, in place."""
    dtype = compute_dtype(model)
    if dtype == torch.float32:
        return
    for param in model.parameters():  # tied weights appear once
        if not param.requires_grad and param.dtype == torch.float32:
            param.data = param.data.to(dtype)


def mostly_float32(model: Any) -> bool:
    """Whether most of `model`'s weight bytes are float32 while it computes in a lower precision."""
    if compute_dtype(model) == torch.float32:
        return False
    wide = sum(p.numel() for p in model.parameters() if p.dtype == torch.float32)
    return wide * 2 > sum(p.numel() for p in model.parameters())


class SamplingCopy:
    """A compute-dtype copy of a float32 model (`mostly_float32`) for one sampling call: cast from
    the model's current weights when the call starts and its storage freed when it ends, so its
    bytes are not held through the update that follows (the step's memory peak: fp32 weights,
    AdamW state, gradients, autocast's casts). The module itself is made once; on SmolLM2 the step was
    no slower than with a copy held and refreshed (benchmarks/README.md). A model that is not mostly
    float32 samples itself under `autocast`."""

    def __init__(self) -> None:
        self.copy: Any = None

    @contextlib.contextmanager
    def weights(self, model: Any) -> Iterator[Any]:
        """The module to generate with, in the context it needs."""
        if not mostly_float32(model):
            self.copy = None
            with autocast(model):
                yield model
            return
        dtype = compute_dtype(model)
        if self.copy is None:
            # Parameters only: buffers keep their dtype, as in a frozen model `load_model` stores in the
            # compute dtype. RoPE's float32 `inv_freq` cast to bf16 would shift every rotary angle by up
            # to 0.4% of itself: samples from another model than the one trained (and evaluated apart).
            self.copy = copy.deepcopy(model).requires_grad_(False)
            mark(self.copy, dtype)
        mine = list(self.copy.parameters())
        with torch.no_grad():
            for param, theirs in zip(mine, model.parameters(), strict=True):
                param.data = theirs.detach().to(dtype)
        try:
            yield self.copy
        finally:
            for param in mine:
                param.data = param.data.new_empty(0)
