"""Multi-process training under torchrun (DESIGN.md section 9): the process group, who does what, and
the few collectives the trainer needs. One process (no torchrun) makes every helper a no-op.

The scheme, chosen so that N ranks compute what one process computes on the same global batch:
- every rank holds the same data order and takes the same global prompts each round;
- a rank samples and scores a contiguous share of those prompts (whole groups), then all ranks
  gather the round's completions and scores, so rewards, advantages, dynamic sampling and the
  step's reward metrics are computed on the global batch, identically everywhere;
- a completion's random stream depends on (seed, step, round, global prompt index, copy) only
  (`SamplingParams.prompt_offset`), so the samples do not depend on the number of ranks;
- a rank trains on a contiguous share of the batch's rows; the loss weights are those of the global
  batch and DDP / FSDP2 average gradients over ranks, so the loss is scaled by the world size;
- every rank runs as many micro-batches (padding ones carry no token), so collectives stay in step;
- rank 0 writes logs, metrics, checkpoints and runs the held-out evaluation; the others wait.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's rank; before the group exists, torchrun's RANK (so the CLI can quiet ranks > 0)."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def setup(device: str) -> bool:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); True if this call
    created it. Without torchrun (WORLD_SIZE unset or 1) nothing happens."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # Ranks > 0 wait while rank 0 evaluates or writes a checkpoint: allow for a long wait.
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=2))
    return True


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()  # no rank closes its connections while another is still talking to it
        dist.destroy_process_group()


def split_threads(threads: int) -> None:
    """`model.threads: 0` means every core; shared by the ranks of one machine, not each."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if threads == 0 and local > 1:
        from grpo_cli.config import available_cores

        torch.set_num_threads(max(1, available_cores() // local))


def shard(n: int) -> slice:
    """This rank's contiguous share of n items (sizes differ by at most one; rank order = item order)."""
    size, r = world(), rank()
    base, extra = divmod(n, size)
    start = r * base + min(r, extra)
    return slice(start, start + base + (r < extra))


def gather(*lists: list[Any]) -> tuple[list[Any], ...]:
    """Each list concatenated over ranks in rank order (the order of `shard`)."""
    if world() == 1:
        return lists
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, lists)
    return tuple([x for part in out for x in part[i]] for i in range(len(lists)))


def broadcast(obj: Any) -> Any:
    """Rank 0's object, on every rank."""
    if world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: dict[str, float]) -> dict[str, float]:
    """Per-key sums over ranks (float64 so the sum of partial sums rounds like one sum)."""
    if world() == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def padding(count: int) -> list[torch.Tensor]:
    """Micro-batches that bring this rank's `count` up to the largest count of any rank: each is row
    0 and the trainer masks it out (no token), but its forward/backward keeps DDP's gradient
    all-reduce and FSDP's all-gathers in step across ranks."""
    if world() == 1:
        return []
    most = torch.tensor([count])
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    return [torch.zeros(1, dtype=torch.long) for _ in range(int(most) - count)]


def local(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor from FSDP2's replicated DTensor results (e.g. the gradient norm)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def grad_scale() -> float:
    """DDP and FSDP average gradients over ranks, but the loss weights already normalise over the
    global batch: scaling each rank's loss by the world size turns that mean into the sum."""
    return float(world())


# ------------------------------------------------------------------------------- model wrapping


def is_fsdp(model: Any) -> bool:
    """Whether FSDP2 manages `model`. Never imports FSDP: it pulls in torch.distributed.tensor and
    sympy (about 45 MB resident), and a model can't be sharded before that import anyway."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(model, getattr(fsdp, "FSDPModule", ()))


def wrap(model: Any, parallel: str) -> Any:
    """The model the optimizer and the update use: DDP around it (whose forward computes the
    log-probs: `logprobs.LogprobModel`), or FSDP2 applied in place (each transformer block, then the
    root). The bare module (`Policy.model`) stays what the sampler calls."""
    if world() == 1:
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        blocks = set(getattr(model, "_no_split_modules", None) or [])
        for module in model.modules():
            if type(module).__name__ in blocks:
                fully_shard(module)
        return fully_shard(model)
    from torch.nn.parallel import DistributedDataParallel

    from grpo_cli.logprobs import LogprobModel

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
        if is_fsdp(model):
            model.set_requires_gradient_sync(last)
        yield mb


@contextmanager
def full_weights(model: Any) -> Iterator[None]:
    """FSDP2: whole weights on every rank for the duration (collective on entry and exit), so each
    rank can generate or evaluate on its own, running as many forwards as it needs. Others: no-op."""
    if world() == 1 or not is_fsdp(model):
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
    if world() == 1 or not is_fsdp(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=main_only))


class Savable:
    """`save_pretrained` of a model with its whole state dict (gathered first under FSDP)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.state = full_state_dict(model, main_only=True) if world() > 1 and is_fsdp(model) else None
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
    if world() == 1 or not is_fsdp(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    from grpo_cli.errors import UserError

    sharded = any(isinstance(k, str) for k in state.get("state", {}))  # FSDP's form keys by parameter name
    if sharded != (world() > 1 and is_fsdp(model)):
        written = "train.parallel=fsdp under torchrun" if sharded else "one process or train.parallel=ddp"
        raise UserError(f"--resume: this checkpoint's optimizer state was written with {written}; resume the same way")
    if not sharded:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def rng_states() -> list[torch.Tensor]:
    """Every rank's torch RNG state, in rank order (collective)."""
    return list(gather([torch.get_rng_state()])[0])


def restore_rng(state: dict[str, Any]) -> None:
    """This rank's RNG state from a checkpoint; a run resumed on a different number of ranks gives
    the new ranks rank 0's."""
    states = state.get("torch_rng_ranks") or [state["torch_rng"]]
    torch.set_rng_state(states[rank()] if rank() < len(states) else states[0])
