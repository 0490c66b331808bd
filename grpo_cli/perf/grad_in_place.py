"""Weight gradients added straight into `weight.grad`.

torch's autograd first builds each weight's gradient in a new tensor and then adds it to `.grad`.
For the LM head and the input embedding that tensor is the whole `[V, H]` matrix however few rows
a micro-batch touches: 134 MB each for a tied 65,536 x 512 embedding, twice per micro-batch. Where
the weight is a plain leaf parameter (no gradient hooks: one process, no DDP/FSDP), the blocked
head (grpo_cli.perf.logprobs) and the embedding lookup here add into `.grad` in place instead, which is
all autograd would have done with the temporary.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class _EmbeddingLookup(torch.autograd.Function):
    """`weight[ids]` whose backward adds into `weight.grad` rows in place (no dense `[V, H]` gradient)."""

    @staticmethod
    def forward(ctx: Any, ids: Tensor, weight: Tensor, padding_idx: int | None) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.param, ctx.padding_idx = weight, padding_idx
        return torch.nn.functional.embedding(ids, weight)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[None, None, None]:
        (ids,) = ctx.saved_tensors
        flat, rows = ids.reshape(-1), grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.padding_idx is not None:  # nn.Embedding never updates its padding row
            keep = flat != ctx.padding_idx
            flat, rows = flat[keep], rows[keep]
        grad = grad_buffer(ctx.param)
        grad.index_add_(0, flat, rows.to(grad.dtype))
        return None, None, None


def accumulates_in_place(weight: Tensor) -> bool:
    """A leaf parameter without gradient hooks, in one process: adding into its .grad is all autograd
    would do. (Under torchrun, DDP and FSDP reduce gradients from hooks on autograd's own
    accumulation, which a gradient added in place bypasses; torch 2.13's DDP was seen to reduce one
    anyway, but nothing documents that, so the ranks take autograd's path.)"""
    from grpo_cli.ranks import world

    return (
        world() == 1
        and weight.is_leaf
        and weight.requires_grad
        and not getattr(weight, "_backward_hooks", None)
        and not getattr(weight, "_post_accumulate_grad_hooks", None)
    )


def grad_buffer(param: Tensor) -> Tensor:
    """`param.grad`, created as zeros on first use (after `zero_grad(set_to_none=True)`)."""
    if param.grad is None:
        param.grad = torch.zeros_like(param)
    return param.grad


def backbone_inputs(model: Any, input_ids: Tensor) -> dict[str, Tensor]:
    """The token arguments of `model.base_model(...)`: `inputs_embeds` from `input_embeddings`
    where it applies, else `input_ids`."""
    embeds = input_embeddings(model, input_ids)
    return {"input_ids": input_ids} if embeds is None else {"inputs_embeds": embeds}


def input_embeddings(model: Any, input_ids: Tensor) -> Tensor | None:
    """The input embeddings through `_EmbeddingLookup` when a backward will follow and the
    model's embedding is a plain `nn.Embedding` (no scaling subclass, max_norm or sparse gradient);
    None to let the model embed `input_ids` itself."""
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if (
        not torch.is_grad_enabled()
        or type(embed) is not torch.nn.Embedding
        or embed.max_norm is not None
        or embed.sparse
        or embed.scale_grad_by_freq
        or not accumulates_in_place(embed.weight)
    ):
        return None
    return _EmbeddingLookup.apply(input_ids, embed.weight, embed.padding_idx)
