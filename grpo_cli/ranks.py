"""Rank helpers for multi-process training under torchrun (docs/design.md, "Distributed"): the
process group, who does what, and the few collectives the trainer needs. One process (no torchrun)
makes every helper a no-op.

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


def all_max(value: float) -> float:
    """The largest of each rank's `value`."""
    if world() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


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


def is_fsdp(model: Any) -> bool:
    """Whether FSDP2 manages `model`. Never imports FSDP: it pulls in torch.distributed.tensor and
    sympy (about 45 MB resident), and a model can't be sharded before that import anyway."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(model, getattr(fsdp, "FSDPModule", ()))


def rng_states() -> list[torch.Tensor]:
    """Every rank's torch RNG state, in rank order (collective)."""
    return list(gather([torch.get_rng_state()])[0])
