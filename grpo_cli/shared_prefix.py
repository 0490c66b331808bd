"""Hidden states at the target positions with each shared prompt computed once.

The G completions of a prompt start with the same tokens. Instead of running every row's prompt
through the backbone, each distinct prefix (the tokens before a row's first target) runs once
with a KV cache; the cache is indexed out to the rows (an autograd op: the prompt's keys and
values, and through them the weights, get their gradient from every row), and only the
completion tokens run per row, at their true positions, attending to the row's prefix. The first
completion token is predicted by the prefix pass's last hidden state. Same values and gradients
as the full pass, to float rounding.

Used only where that is exact and cheap to check: a plain decoder-only model with full causal
attention, no activation checkpointing (a recomputed layer would write to the cache again),
right-padded rows, and at least one prefix shared by two rows. Otherwise `target_hidden` returns
None and the caller runs the full rows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from grpo_cli.grad_in_place import backbone_inputs

_ATTENTION = frozenset({"sdpa", "eager"})


def shareable(model: Any) -> bool:
    """Whether `model` (already known to be fusable) may run prefixes and completions apart: a
    Llama-family decoder (grpo_cli.native's own, or transformers' with the standard attention), whose
    backbone takes `past_key_values` / `position_ids` / a 2-D padding mask the standard way (RoPE
    from the position alone, causal mask offset by the cache length), without checkpointing."""
    from grpo_cli import native

    if not isinstance(model, native.CausalLM):
        config = model.config
        if getattr(config, "is_encoder_decoder", False) or getattr(config, "_attn_implementation", None) not in _ATTENTION:
            return False
        if native.unsupported_architecture(config) is not None:
            return False
    return not _checkpointed(model)


def _checkpointed(model: Any) -> bool:
    # transformers flags each checkpointed layer (`gradient_checkpointing`); torch's wrapper is a module.
    return any(getattr(m, "gradient_checkpointing", False) is True or type(m).__name__ == "CheckpointWrapper" for m in model.modules())


def target_hidden(model: Any, input_ids: Tensor, attention_mask: Tensor, mask: Tensor) -> Tensor | None:
    """Last hidden states `[M, H]` at the targets `mask.nonzero()` (row-major), which predict
    `input_ids[:, 1:][mask]`, or None where prefix sharing does not apply to this batch.

    input_ids, attention_mask: `[n, S]` right-padded. mask: `[n, S-1]` bool, true where the target
    `input_ids[:, t+1]` enters the loss. Rows without a target are left out (no target, no output).
    """
    from transformers import DynamicCache

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
    prefix_mask = (torch.arange(width, device=device) < plen[:, None]).to(attention_mask.dtype)
    cache = DynamicCache()
    out = model.base_model(**backbone_inputs(model, prefix_ids), attention_mask=prefix_mask, past_key_values=cache, use_cache=True)
    last = out.last_hidden_state[torch.arange(len(prefixes), device=device), plen - 1]  # [u, H]: predicts token p

    # Completion inputs: tokens p .. L-2 (the last token is a target only, never an input).
    owner_t = torch.tensor(owner, device=device)
    start = plen[owner_t]  # [r]
    count = lengths[rows] - 1 - start  # [r] >= 0
    c = int(count.max())
    parts = [last]
    if c > 0:
        j = torch.arange(c, device=device)
        take = (start[:, None] + j).clamp(max=s - 1)  # [r, C]
        comp_ids = input_ids[rows].gather(1, take)
        comp_mask = (j < count[:, None]).to(attention_mask.dtype)
        cache.batch_select_indices(owner_t)  # indexing: differentiable, each row's copy of its prefix
        hidden = model.base_model(
            **backbone_inputs(model, comp_ids), attention_mask=torch.cat([prefix_mask[owner_t], comp_mask], 1),
            position_ids=start[:, None] + j, past_key_values=cache, use_cache=True,
        ).last_hidden_state  # [r, C, H]
        parts.append(hidden.flatten(0, 1))

    # Target t of row i: prefix state if t == p_i - 1, else completion state t - p_i.
    where_i, where_t = mask.nonzero(as_tuple=True)
    compact = live.cumsum(0) - 1  # row -> its index among `rows`
    k = compact[where_i]
    p = start[k]
    pick = torch.where(where_t == p - 1, owner_t[k], len(prefixes) + k * c + (where_t - p))
    return torch.cat(parts)[pick]
