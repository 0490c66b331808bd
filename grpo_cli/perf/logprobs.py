"""Log-probs (and entropies) of chosen tokens straight from the model's last hidden states.

The usual path materialises the logits `[n, T, V]`, keeps them for backward and allocates their
gradient of the same size: with a real vocabulary (32k-150k) that dominates a step's memory.
Here the LM head is applied in blocks of positions inside one autograd function that keeps the
hidden states and one log-sum-exp per position, plus the probabilities only while they fit in
`KEEP_ELEMENTS`; otherwise backward recomputes each block's logits. Only the positions that enter
the loss (the completion tokens) are projected at all. The head's memory is then bounded by
constants (`KEEP_ELEMENTS` + two blocks), whatever the batch, sequence length and vocabulary.
Rows that share a prompt (a group's G completions) run it once (grpo_cli.perf.shared_prefix).

The head's and the input embedding's weight gradients go straight into `.grad`
(grpo_cli.perf.grad_in_place).

Models whose head does more than a linear map (logit soft-capping, logit scaling) take the plain
path through `model(...).logits`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor

from grpo_cli.algorithms.loss import selected_logprobs, token_entropy
from grpo_cli.models import precision
from grpo_cli.perf import shared_prefix
from grpo_cli.perf.grad_in_place import accumulates_in_place, backbone_inputs, grad_buffer
from grpo_cli.ranks import is_fsdp

BLOCK_ELEMENTS = 1 << 22
"""Logit elements per block (16 MiB in float32; two blocks live at a time): rows = BLOCK_ELEMENTS // V."""
KEEP_ELEMENTS = 1 << 24
"""When all M x V probabilities fit in this many elements (64 MiB in float32), forward keeps them for
backward instead of recomputing the head's matmul there (a quarter of the head's work)."""

SHARE_PREFIXES = True
"""Run each prompt shared by several rows once (grpo_cli.perf.shared_prefix) where that applies; off
only to measure what it saves (benchmarks/step.py --ablate prefix)."""

_HEAD_EXTRAS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


class _HeadLogprobs(torch.autograd.Function):
    """(hidden [M, H], weight [V, H], bias [V] | None, tokens [M]) -> (log p(token) [M], entropy [M]).

    Both under softmax((hidden @ weight.T + bias) / temperature); entropy carries no gradient.
    """

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        tokens: Tensor,
        temperature: float,
        rows: int,
        keep: bool,
        with_entropy: bool,
    ) -> tuple[Tensor, Tensor]:
        m, dtype = hidden.shape[0], torch.promote_types(hidden.dtype, torch.float32)  # bf16/fp16 -> fp32
        logp, lse = (hidden.new_empty(m, dtype=dtype) for _ in range(2))
        entropy = hidden.new_zeros(m, dtype=dtype)
        probs = hidden.new_empty(m, weight.shape[0], dtype=dtype) if keep else None  # [M, V]
        # Block buffers reused for the whole call: fresh [r, V] temporaries per block fragment the
        # heap (tens of MB of free but resident blocks per micro-batch at a 65k vocabulary).
        p_buf = hidden.new_empty(min(rows, m), weight.shape[0], dtype=dtype)
        z_buf = None if keep else torch.empty_like(p_buf)
        if keep:  # all logits in one matmul, into the buffer each block's probabilities then replace
            _block_logits(hidden, weight, bias, temperature, out=probs)
        for i in range(0, m, rows):
            r = min(rows, m - i)
            z = (
                probs[i : i + r] if keep else _block_logits(hidden[i : i + r], weight, bias, temperature, out=z_buf[:r])
            )  # [r, V]
            # log-sum-exp by hand: torch.logsumexp would allocate an [r, V] temporary of its own.
            top = z.amax(dim=-1, keepdim=True)  # [r, 1]
            p = torch.sub(z, top, out=p_buf[:r]).exp_()  # unnormalised
            total = p.sum(dim=-1, keepdim=True)  # [r, 1]
            lse[i : i + r] = (top + total.log()).squeeze(1)
            logp[i : i + r] = z.gather(1, tokens[i : i + r, None]).squeeze(1) - lse[i : i + r]
            if keep or with_entropy:
                p.div_(total)  # softmax(z): backward's, and the entropy's weights
            if with_entropy:
                entropy[i : i + r] = lse[i : i + r] - torch.bmm(p[:, None, :], z[:, :, None]).view(
                    r
                )  # H = lse - E_p[z]
            if keep:
                z.copy_(p)  # the logits' place in probs now holds the probabilities backward needs
        ctx.save_for_backward(hidden, weight, bias, tokens, lse, probs)
        ctx.temperature, ctx.rows = temperature, rows
        ctx.param = weight if accumulates_in_place(weight) else None
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx: Any, grad_logp: Tensor, _grad_entropy: Tensor) -> tuple[Tensor | None, ...]:
        hidden, weight, bias, tokens, lse, probs = ctx.saved_tensors
        temperature, rows = ctx.temperature, ctx.rows
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = (
            (grad_buffer(ctx.param) if ctx.param is not None else torch.zeros_like(weight))
            if ctx.needs_input_grad[1]
            else None
        )
        grad_bias = torch.zeros_like(bias) if bias is not None and ctx.needs_input_grad[2] else None
        z_buf = (
            None
            if probs is not None
            else hidden.new_empty(min(rows, hidden.shape[0]), weight.shape[0], dtype=lse.dtype)
        )
        w = weight.to(hidden.dtype)  # under autocast: float32 master weight, bf16/fp16 hidden states
        if probs is not None:
            # Kept probabilities: one block, so the [V, H] weight gradient is read and written once
            # instead of once per block (at 65k x 512 that is 268 MB of memory traffic per block).
            rows = hidden.shape[0]
        for i in range(0, hidden.shape[0], rows):
            h, g = hidden[i : i + rows], grad_logp[i : i + rows].to(lse.dtype)
            if probs is not None:
                p = probs[i : i + rows]  # kept by forward; backward runs once, so it may be overwritten
            else:
                p = (
                    _block_logits(h, w, bias, temperature, out=z_buf[: h.shape[0]]).sub_(lse[i : i + rows, None]).exp_()
                )  # recomputed
            # d logp(token) / d z = onehot(token) - softmax(z); chain through z = logits / T.
            dz = p.mul_(-g[:, None])  # in place: no new block
            dz.scatter_add_(1, tokens[i : i + rows, None], g[:, None])
            dz = dz.div_(temperature).to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[i : i + rows] = dz @ w
            if grad_weight is not None:
                if grad_weight.dtype == dz.dtype:
                    grad_weight.addmm_(dz.T, h)
                else:  # float32 master weights under autocast: the product in the compute dtype, added
                    grad_weight.add_(dz.T @ h)
            if grad_bias is not None:
                grad_bias += dz.sum(0)
        if ctx.param is not None:
            grad_weight = None  # already in ctx.param.grad
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None


def _block_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, temperature: float, out: Tensor) -> Tensor:
    """Float32 (or wider) logits `[r, V]` / temperature, written into `out` when the matmul's own dtype
    is already `out`'s; a bf16/fp16 model's logits are computed then upcast into it."""
    if hidden.dtype == out.dtype and weight.dtype == out.dtype:
        z = (
            torch.addmm(bias, hidden, weight.t(), out=out)
            if bias is not None
            else torch.mm(hidden, weight.t(), out=out)
        )
    else:
        z = out.copy_(torch.nn.functional.linear(hidden, weight, bias))
    return z.div_(temperature) if temperature != 1.0 else z


def head_logprobs(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    tokens: Tensor,
    temperature: float = 1.0,
    block_elements: int = BLOCK_ELEMENTS,
    keep_elements: int = KEEP_ELEMENTS,
    *,
    entropy: bool = True,
) -> tuple[Tensor, Tensor]:
    """Log-probs `[M]` of `tokens` `[M]` and the entropies `[M]` (no gradient; zeros unless
    `entropy`) of the next-token distributions, from hidden states `[M, H]` through the linear head
    `weight [V, H]`, `bias`."""
    rows = max(1, block_elements // weight.shape[0])
    keep = torch.is_grad_enabled() and hidden.shape[0] * weight.shape[0] <= keep_elements
    return _HeadLogprobs.apply(hidden, weight, bias, tokens, temperature, rows, keep, entropy)


class LogprobModel(torch.nn.Module):
    """The policy as DDP wraps it (grpo_cli.training.wrapping.wrap): its forward is `sequence_logprobs` of
    the bare model, so the blocked LM head and prefix sharing run inside DDP's forward (which sets up
    the gradient all-reduce; calling the bare model's `base_model` around DDP would skip it). Its
    parameters are the model's, in the same order."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, mask: Tensor, temperature: float = 1.0, entropy: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        return sequence_logprobs(self.model, input_ids, attention_mask, mask, temperature, entropy=entropy)


def fusable(model: Any) -> bool:
    """Whether the model's logits are exactly `linear(last hidden state)`: a Linear output
    embedding, a backbone under `base_model`, and no soft-capping or scaling in its config."""
    if is_fsdp(model):  # FSDP2 gathers the root's weights in its forward hook; base_model() would skip it
        return False
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear):
        return False
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    extras = [getattr(config, name, None) for name in _HEAD_EXTRAS]
    return getattr(model, "base_model", model) is not model and all(v is None or v == 1.0 for v in extras)


LogprobPath = Callable[..., tuple[Tensor, "Tensor | None"]]
"""`(input_ids [n, S], attention_mask [n, S], mask [n, T], temperature, *, entropy) -> (logp [n, T],
mean entropy or None)` for one model."""


def logprob_path(model: Any) -> LogprobPath:
    """How `model` computes `sequence_logprobs`, chosen once (the trainer asks when it wraps the
    model): through the DDP wrapper's forward, through grpo's own model's forward under FSDP2, the
    plain `model(...).logits`, or the blocked head."""
    if isinstance(getattr(model, "module", None), LogprobModel):  # DDP around the policy: its forward computes them
        return precision.in_compute_dtype(model, partial(_through_ddp, model))
    if is_fsdp(model) and getattr(model, "computes_logprobs", False):  # FSDP2 on grpo's own model
        return precision.in_compute_dtype(model, partial(_through_forward, model))
    if not fusable(model):
        return precision.in_compute_dtype(model, partial(_plain_logprobs, model))
    return precision.in_compute_dtype(model, partial(_blocked, model))


def sequence_logprobs(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    *,
    entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs `[n, T]` of `input_ids[:, 1:]` at the target positions where `mask` `[n, T]` is
    true (0 elsewhere), and, if asked, their mean entropy (a detached scalar over `mask`)."""
    return logprob_path(model)(input_ids, attention_mask, mask, temperature, entropy=entropy)


def _through_ddp(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    *,
    entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    return model(input_ids, attention_mask, mask, temperature, entropy=entropy)


def _through_forward(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    *,
    entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    return model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        target_mask=mask,
        temperature=temperature,
        entropy=entropy,
        logprob_head=blocked_logprobs,
    )


def _plain_logprobs(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    *,
    entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]  # [n, T, V]
    logp = selected_logprobs(logits, input_ids[:, 1:], temperature)
    return logp, token_entropy(logits.detach() / temperature, mask.bool()) if entropy else None


def _blocked(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    *,
    entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    return blocked_logprobs(model, input_ids, attention_mask, mask.bool(), temperature, entropy)


def blocked_logprobs(
    model: Any, input_ids: Tensor, attention_mask: Tensor, mask: Tensor, temperature: float, entropy: bool
) -> tuple[Tensor, Tensor | None]:
    """`sequence_logprobs` through the blocked head (and shared prompts where they apply), for a
    model whose backbone and head it may call directly (`fusable`, or inside the model's forward)."""
    mask = mask.bool()
    where = mask.nonzero(as_tuple=True)
    hidden = (
        shared_prefix.target_hidden(model, input_ids, attention_mask, mask)
        if SHARE_PREFIXES and shared_prefix.shareable(model)
        else None
    )
    if hidden is None:
        hidden = model.base_model(**backbone_inputs(model, input_ids), attention_mask=attention_mask).last_hidden_state[
            :, :-1
        ][where]  # [M, H]
    if torch.is_autocast_enabled(hidden.device.type):  # the head's matmuls in the compute dtype too
        hidden = hidden.to(torch.get_autocast_dtype(hidden.device.type))
    head = model.get_output_embeddings()
    picked, ent = head_logprobs(
        hidden, head.weight, head.bias, input_ids[:, 1:][where], temperature, entropy=entropy
    )  # [M]
    logp = picked.new_zeros(mask.shape).index_put(where, picked)  # [n, T]
    mean_entropy = (ent.sum() / max(int(mask.sum()), 1)).detach() if entropy else None
    return logp, mean_entropy
