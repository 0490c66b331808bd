"""Hidden states at the target positions with each shared prompt computed once.

The G completions of a prompt start with the same tokens. Instead of running every row's prompt
through the backbone, each distinct prefix (the tokens before a row's first target) runs once and
only the completion tokens run per row, at their true positions, attending to their row's prefix.
The first completion token is predicted by the prefix's last hidden state. Same values and
gradients as the full pass, to float rounding: the prompt's keys and values, and through them the
weights, get their gradient from every row.

- grpo's own model (grpo_cli.models.llama) runs prefixes and completions as one packed sequence
  (`llama.Packing`): one pass, no KV cache, so activation checkpointing works with it.
- A transformers model runs the prefixes with a KV cache, indexes the cache out to the rows and
  then runs the completions: two passes, and not under activation checkpointing (a recomputed
  layer would write to the cache again).

Used only where that is exact and cheap to check: a plain decoder-only model with full causal
attention, right-padded rows, and at least one prefix shared by two rows. Otherwise
`target_hidden` returns None and the caller runs the full rows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from grpo_cli.perf.grad_in_place import backbone_inputs

_ATTENTION = frozenset({"sdpa", "eager"})


def shareable(model: Any) -> bool:
    """Whether `model` (whose backbone and head the caller uses directly) may run prefixes and completions apart:
    grpo's own Llama-family model, or transformers' Llama-family decoder with the standard
    attention, whose backbone takes a KV cache / `position_ids` / a 2-D padding mask the
    standard way (RoPE from the position alone, causal mask offset by the cache length), without
    checkpointing."""
    from grpo_cli.models import llama

    if isinstance(model, llama.CausalLM):
        return True  # one packed pass, no cache written: a checkpointed layer recomputes the same
    config = model.config
    if getattr(config, "is_encoder_decoder", False) or getattr(config, "_attn_implementation", None) not in _ATTENTION:
        return False
    return llama.unsupported_architecture(config) is None and not _checkpointed(model)


def _checkpointed(model: Any) -> bool:
    # transformers flags each checkpointed layer (`gradient_checkpointing`); torch's wrapper is a module.
    return any(
        getattr(m, "gradient_checkpointing", False) is True or type(m).__name__ == "CheckpointWrapper"
        for m in model.modules()
    )


def target_hidden(model: Any, input_ids: Tensor, attention_mask: Tensor, mask: Tensor) -> Tensor | None:
    """Last hidden states `[M, H]` at the targets `mask.nonzero()` (row-major), which predict
    `input_ids[:, 1:][mask]`, or None where prefix sharing does not apply to this batch.

    input_ids, attention_mask: `[n, S]` right-padded. mask: `[n, S-1]` bool, true where the target
    `input_ids[:, t+1]` enters the loss. Rows without a target are left out (no target, no output).
    """
    from grpo_cli.models import llama

    s = input_ids.shape[1]
    device = input_ids.device
    lengths = attention_mask.sum(1)  # [n]
    cols = torch.arange(s, device=device)
    if not torch.equal(attention_mask.bool(), cols < lengths[:, None]):  # not right-padded
        return None
    if (mask & (cols[None, 1:] >= lengths[:, None])).any():  # a target past the row's end
        return None
    live = mask.any(1)
    rows = live.nonzero().squeeze(1)  # rows with a target
    if len(rows) < 2:
        return None
    first = mask.int().argmax(1)[rows]  # [r] first target; prefix length = first + 1
    ids_cpu = input_ids[rows].tolist()
    owner: list[int] = []  # row -> its distinct prefix
    index: dict[tuple[int, ...], int] = {}
    for ids, f in zip(ids_cpu, first.tolist()):
        owner.append(index.setdefault(tuple(ids[: f + 1]), len(index)))
    if len(index) == len(owner):  # nothing shared: the full pass costs no more
        return None

    prefixes = list(index)
    plen = torch.tensor([len(p) for p in prefixes], device=device)
    width = int(plen.max())
    prefix_ids = torch.tensor([list(p) + [p[0]] * (width - len(p)) for p in prefixes], device=device)  # right-padded
    # Completion inputs: tokens p .. L-2 (the last token is a target only, never an input).
    owner_t = torch.tensor(owner, device=device)
    start = plen[owner_t]  # [r]
    count = lengths[rows] - 1 - start  # [r] >= 0
    c = int(count.max())
    j = torch.arange(c, device=device)
    comp_ids = input_ids[rows].gather(1, (start[:, None] + j).clamp(max=s - 1))  # [r, C]
    if isinstance(model, llama.CausalLM):
        last, hidden = _packed(model, prefix_ids, plen, comp_ids, owner_t, start[:, None] + j)
    else:
        last, hidden = _two_passes(
            model, prefix_ids, plen, comp_ids, owner_t, count, start[:, None] + j, attention_mask.dtype
        )
    parts = [last] if hidden is None else [last, hidden.flatten(0, 1)]

    # Target t of row i: prefix state if t == p_i - 1, else completion state t - p_i.
    where_i, where_t = mask.nonzero(as_tuple=True)
    compact = live.cumsum(0) - 1  # row -> its index among `rows`
    k = compact[where_i]
    p = start[k]
    pick = torch.where(where_t == p - 1, owner_t[k], len(prefixes) + k * c + (where_t - p))
    return torch.cat(parts)[pick]


def _packed(
    model: Any, prefix_ids: Tensor, plen: Tensor, comp_ids: Tensor, owner: Tensor, positions: Tensor
) -> tuple[Tensor, Tensor | None]:
    """grpo's own model: prefixes and completions in one pass (`llama.Packing`). Returns the
    prefixes' last hidden states `[u, H]` and the completions' `[r, C, H]` (None when C = 0)."""
    from grpo_cli.models import llama

    u, w = prefix_ids.shape
    r, c = comp_ids.shape
    packing = llama.Packing(plen, w, owner, c)
    ids = torch.cat([prefix_ids.reshape(-1), comp_ids.reshape(-1)])[None]  # [1, N]
    pos = torch.cat([torch.arange(w, device=ids.device).repeat(u), positions.reshape(-1)])[None]
    inputs = backbone_inputs(model, ids)
    hidden = model.base_model.forward_packed(inputs.get("input_ids"), inputs.get("inputs_embeds"), pos, packing)[
        0
    ]  # [N, H]
    last = hidden[: u * w].view(u, w, -1)[torch.arange(u, device=ids.device), plen - 1]  # [u, H]: predicts token p
    return last, hidden[u * w :].view(r, c, -1) if c > 0 else None


def _two_passes(
    model: Any,
    prefix_ids: Tensor,
    plen: Tensor,
    comp_ids: Tensor,
    owner: Tensor,
    count: Tensor,
    positions: Tensor,
    mask_dtype: torch.dtype,
) -> tuple[Tensor, Tensor | None]:
    """A transformers model: the prefixes run once with a KV cache, which is indexed out to the
    completion rows (differentiable: each row's copy of its prefix); then the completion tokens run.
    Same returns as `_packed`."""
    from transformers import DynamicCache

    from grpo_cli.models.loading import cache_keyword

    device = prefix_ids.device
    width, c = prefix_ids.shape[1], comp_ids.shape[1]
    prefix_mask = (torch.arange(width, device=device) < plen[:, None]).to(mask_dtype)
    cache = DynamicCache()
    with_cache = {cache_keyword(model.base_model): cache, "use_cache": True}
    out = model.base_model(**backbone_inputs(model, prefix_ids), attention_mask=prefix_mask, **with_cache)
    last = out.last_hidden_state[torch.arange(len(plen), device=device), plen - 1]
    if c == 0:
        return last, None
    comp_mask = (torch.arange(c, device=device) < count[:, None]).to(mask_dtype)
    cache.batch_select_indices(owner)
    hidden = model.base_model(
        **backbone_inputs(model, comp_ids),
        attention_mask=torch.cat([prefix_mask[owner], comp_mask], 1),
        position_ids=positions,
        **with_cache,
    ).last_hidden_state  # [r, C, H]
    return last, hidden
