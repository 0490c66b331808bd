"""Log-probs (and entropies) of chosen tokens straight from the model's last hidden states.

The usual path materialises the logits `[n, T, V]`, keeps them for backward and allocates their
gradient of the same size: with a real vocabulary (32k-150k) that dominates a step's memory.
Here the LM head is applied in blocks of positions inside one autograd function that keeps the
hidden states and one log-sum-exp per position, plus the probabilities only while they fit in
`KEEP_ELEMENTS`; otherwise backward recomputes each block's logits. Only the positions that enter
the loss (the completion tokens) are projected at all. The head's memory is then bounded by
constants (`KEEP_ELEMENTS` + two blocks), whatever the batch, sequence length and vocabulary.

Where a weight is a plain leaf parameter (one process, no hooks), the head's and the input
embedding's backward add their weight gradient straight into `weight.grad`, as torch's gradient
accumulation would, but without the `[V, H]` temporary each one allocates first: with a tied 65k x
512 embedding that is two 134 MB buffers per micro-batch (benchmarks/README.md).

Models whose head does more than a linear map (logit soft-capping, logit scaling) take the plain
path through `model(...).logits`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from grpo_cli.loss import selected_logprobs, token_entropy

BLOCK_ELEMENTS = 1 << 22
"""Logit elements per block (16 MiB in float32; two blocks live at a time): rows = BLOCK_ELEMENTS // V."""
KEEP_ELEMENTS = 1 << 24
"""When all M x V probabilities fit in this many elements (64 MiB in float32), forward keeps them for
backward instead of recomputing the head's matmul there (a quarter of the head's work)."""

_HEAD_EXTRAS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


class _HeadLogprobs(torch.autograd.Function):
    """(hidden [M, H], weight [V, H], bias [V] | None, tokens [M]) -> (log p(token) [M], entropy [M]).

    Both under softmax((hidden @ weight.T + bias) / temperature); entropy carries no gradient.
    """

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, tokens: Tensor, temperature: float, rows: int,
                keep: bool) -> tuple[Tensor, Tensor]:
        m, dtype = hidden.shape[0], torch.promote_types(hidden.dtype, torch.float32)  # bf16/fp16 -> fp32
        logp, entropy, lse = (hidden.new_empty(m, dtype=dtype) for _ in range(3))
        probs = hidden.new_empty(m, weight.shape[0], dtype=dtype) if keep else None  # [M, V]
        for i in range(0, m, rows):
            z = _block_logits(hidden[i : i + rows], weight, bias, temperature)  # [r, V]
            lse[i : i + rows] = torch.logsumexp(z, dim=-1)
            logp[i : i + rows] = z.gather(1, tokens[i : i + rows, None]).squeeze(1) - lse[i : i + rows]
            p = torch.sub(z, lse[i : i + rows, None], out=probs[i : i + rows] if keep else None).exp_()
            entropy[i : i + rows] = lse[i : i + rows] - (p * z).sum(-1)  # H = lse - E_p[z]
        ctx.save_for_backward(hidden, weight, bias, tokens, lse, probs)
        ctx.temperature, ctx.rows = temperature, rows
        ctx.param = weight if _accumulates_in_place(weight) else None
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx: Any, grad_logp: Tensor, _grad_entropy: Tensor) -> tuple[Tensor | None, ...]:
        hidden, weight, bias, tokens, lse, probs = ctx.saved_tensors
        temperature, rows = ctx.temperature, ctx.rows
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = (_grad_buffer(ctx.param) if ctx.param is not None else torch.zeros_like(weight)) if ctx.needs_input_grad[1] else None
        grad_bias = torch.zeros_like(bias) if bias is not None and ctx.needs_input_grad[2] else None
        for i in range(0, hidden.shape[0], rows):
            h, g = hidden[i : i + rows], grad_logp[i : i + rows].to(lse.dtype)
            if probs is not None:
                p = probs[i : i + rows]  # kept by forward; backward runs once, so it may be overwritten
            else:
                p = _block_logits(h, weight, bias, temperature).sub_(lse[i : i + rows, None]).exp_()  # recomputed
            # d logp(token) / d z = onehot(token) - softmax(z); chain through z = logits / T.
            dz = p.mul_(-g[:, None])  # in place: no new block
            dz.scatter_add_(1, tokens[i : i + rows, None], g[:, None])
            dz = dz.div_(temperature).to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[i : i + rows] = dz @ weight
            if grad_weight is not None:
                grad_weight.addmm_(dz.T, h)
            if grad_bias is not None:
                grad_bias += dz.sum(0)
        if ctx.param is not None:
            grad_weight = None  # already in ctx.param.grad
        return grad_hidden, grad_weight, grad_bias, None, None, None, None


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
        grad = _grad_buffer(ctx.param)
        grad.index_add_(0, flat, rows.to(grad.dtype))
        return None, None, None


def _accumulates_in_place(weight: Tensor) -> bool:
    """A leaf parameter without gradient hooks: adding into its .grad is all autograd would do."""
    return (weight.is_leaf and weight.requires_grad and not getattr(weight, "_backward_hooks", None)
            and not getattr(weight, "_post_accumulate_grad_hooks", None))


def _grad_buffer(param: Tensor) -> Tensor:
    if param.grad is None:
        param.grad = torch.zeros_like(param)
    return param.grad


def input_embeddings(model: Any, input_ids: Tensor) -> Tensor | None:
    """The input embeddings through `_EmbeddingLookup` when a backward will follow and the
    model's embedding is a plain `nn.Embedding` (no scaling subclass, max_norm or sparse gradient);
    None to let the model embed `input_ids` itself."""
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if (not torch.is_grad_enabled() or type(embed) is not torch.nn.Embedding or embed.max_norm is not None
            or embed.sparse or embed.scale_grad_by_freq or not _accumulates_in_place(embed.weight)):
        return None
    return _EmbeddingLookup.apply(input_ids, embed.weight, embed.padding_idx)


def _block_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, temperature: float) -> Tensor:
    z = torch.nn.functional.linear(hidden, weight, bias)  # [r, V]
    z = z.to(torch.promote_types(z.dtype, torch.float32))
    return z / temperature if temperature != 1.0 else z


def head_logprobs(hidden: Tensor, weight: Tensor, bias: Tensor | None, tokens: Tensor, temperature: float = 1.0,
                  block_elements: int = BLOCK_ELEMENTS, keep_elements: int = KEEP_ELEMENTS) -> tuple[Tensor, Tensor]:
    """Log-probs `[M]` of `tokens` `[M]` and the entropies `[M]` (no gradient) of the next-token
    distributions, from hidden states `[M, H]` through the linear head `weight [V, H]`, `bias`."""
    rows = max(1, block_elements // weight.shape[0])
    keep = torch.is_grad_enabled() and hidden.shape[0] * weight.shape[0] <= keep_elements
    return _HeadLogprobs.apply(hidden, weight, bias, tokens, temperature, rows, keep)


def fusable(model: Any) -> bool:
    """Whether the model's logits are exactly `linear(last hidden state)`: a Linear output
    embedding, a backbone under `base_model`, and no soft-capping or scaling in its config."""
    if _is_fsdp(model):  # FSDP2 gathers the root's weights in its forward hook; base_model() would skip it
        return False
    # A DDP wrapper has no get_output_embeddings: it takes the plain path, whose forward syncs gradients.
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear):
        return False
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    extras = [getattr(config, name, None) for name in _HEAD_EXTRAS]
    return getattr(model, "base_model", model) is not model and all(v is None or v == 1.0 for v in extras)


def _is_fsdp(model: Any) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without FSDP2
        return False
    return isinstance(model, FSDPModule)


def sequence_logprobs(model: Any, input_ids: Tensor, attention_mask: Tensor, mask: Tensor, temperature: float = 1.0,
                      *, entropy: bool = False) -> tuple[Tensor, Tensor | None]:
    """Log-probs `[n, T]` of `input_ids[:, 1:]` at the target positions where `mask` `[n, T]` is
    true (0 elsewhere), and, if asked, their mean entropy (a detached scalar over `mask`)."""
    mask = mask.bool()
    if not fusable(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]  # [n, T, V]
        logp = selected_logprobs(logits, input_ids[:, 1:], temperature)
        return logp, token_entropy(logits.detach() / temperature, mask) if entropy else None
    embeds = input_embeddings(model, input_ids)
    inputs = {"input_ids": input_ids} if embeds is None else {"inputs_embeds": embeds}
    hidden = model.base_model(**inputs, attention_mask=attention_mask).last_hidden_state[:, :-1]  # [n, T, H]
    head = model.get_output_embeddings()
    where = mask.nonzero(as_tuple=True)
    picked, ent = head_logprobs(hidden[where], head.weight, head.bias, input_ids[:, 1:][where], temperature)  # [M]
    logp = picked.new_zeros(mask.shape).index_put(where, picked)  # [n, T]
    mean_entropy = (ent.sum() / max(int(mask.sum()), 1)).detach() if entropy else None
    return logp, mean_entropy
