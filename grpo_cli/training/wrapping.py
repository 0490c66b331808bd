"""The model as the optimizer sees it under torchrun: DDP or FSDP2 wrapping, gradient accumulation
without a reduction per micro-batch, and whole weights or state dicts gathered for sampling, saving
and checkpoints. One process (no torchrun) makes every helper a no-op (docs/design.md, "Distributed").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from grpo_cli import ranks


def wrap(model: Any, parallel: str) -> Any:
    """The model the optimizer and the update use: DDP around it (whose forward computes the
    log-probs: `logprobs.LogprobModel`), or FSDP2 applied in place (each transformer block, then the
    root). The bare module (`Policy.model`) stays what the sampler calls."""
    if ranks.world() == 1:
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        blocks = set(getattr(model, "_no_split_modules", None) or [])
        for module in model.modules():
            if type(module).__name__ in blocks:
                fully_shard(module)
        return fully_shard(model)
    from torch.nn.parallel import DistributedDataParallel

    from grpo_cli.perf.logprobs import LogprobModel

    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    # No buffer sync in forward: it would be a collective in every forward, and the ranks run
    # different numbers of them (sampling); the model's buffers are constants anyway.
    return DistributedDataParallel(LogprobModel(model), device_ids=device_ids, forward_sync_buffers=False)


def accumulate(model: Any, micro: list[Any]) -> Iterator[Any]:
    """Yield the micro-batches with gradient synchronisation off for all but the last (DDP's
    `no_sync`, FSDP2's `set_requires_gradient_sync`): gradients are reduced once per step."""
    from torch.nn.parallel import DistributedDataParallel

    for i, mb in enumerate(micro):
        last = i == len(micro) - 1
        if isinstance(model, DistributedDataParallel) and not last:
            with model.no_sync():
                yield mb
            continue
        if ranks.is_fsdp(model):
            model.set_requires_gradient_sync(last)
        yield mb


@contextmanager
def full_weights(model: Any) -> Iterator[None]:
    """FSDP2: whole weights on every rank for the duration (collective on entry and exit), so each
    rank can generate or evaluate on its own, running as many forwards as it needs. Others: no-op."""
    if ranks.world() == 1 or not ranks.is_fsdp(model):
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for m in modules:
        m.unshard()
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for m in modules:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)


def full_state_dict(model: Any, *, main_only: bool = False) -> dict[str, torch.Tensor]:
    """The whole model's state dict (collective under FSDP: gathered on every rank, or with
    `main_only` on rank 0's CPU and empty elsewhere)."""
    if ranks.world() == 1 or not ranks.is_fsdp(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=main_only))


class Savable:
    """`save_pretrained` of a model with its whole state dict (gathered first under FSDP)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.state = full_state_dict(model, main_only=True) if ranks.world() > 1 and ranks.is_fsdp(model) else None
        if self.state:
            # Tied parameters (lm_head = embeddings) come back as separate copies: make them one
            # tensor again, so save_pretrained stores them once, as it does for the plain model.
            first: dict[int, str] = {}
            for name, param in model.named_parameters(remove_duplicate=False):
                self.state[name] = self.state[first.setdefault(id(param), name)]

    def save_pretrained(self, path: Any, **kwargs: Any) -> None:
        if self.state is not None:
            kwargs["state_dict"] = self.state
        self.model.save_pretrained(path, **kwargs)


def optimizer_state(model: Any, optimizer: Any) -> dict[str, Any]:
    """The optimizer state to checkpoint: FSDP2's shards gathered into one (collective), else as is
    (DDP ranks hold identical copies, in the single-process format)."""
    if ranks.world() == 1 or not ranks.is_fsdp(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    from grpo_cli.errors import UserError

    sharded = any(isinstance(k, str) for k in state.get("state", {}))  # FSDP's form keys by parameter name
    if sharded != (ranks.world() > 1 and ranks.is_fsdp(model)):
        written = "train.run.parallel=fsdp under torchrun" if sharded else "one process or train.run.parallel=ddp"
        raise UserError(f"--resume: this checkpoint's optimizer state was written with {written}; resume the same way")
    if not sharded:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
