"""A KV cache for decoding that writes into buffers allocated once, instead of growing by `torch.cat`.

`DynamicCache` concatenates every step, copying the whole cache of every layer (O(length) per token);
`SlotCache` allocates `capacity` positions per layer at prefill and copies in only the new token's
keys and values. Layers return the filled prefix as a view, so attention sees exactly the tensors a
`DynamicCache` would return (same shapes, same values) and the model's masks need no change.
"""

from __future__ import annotations

from functools import partial

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class SlotLayer(DynamicLayer):
    """A `DynamicLayer` whose keys/values are views of `[B, heads, capacity, head_dim]` buffers.
    Supports what the sampler uses: `update` and `batch_select_indices`."""

    is_croppable = False

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.dtype, self.device = key_states.dtype, key_states.device
            shape = key_states.shape[:2]
            self._keys = key_states.new_empty((*shape, self.capacity, key_states.shape[-1]))
            self._values = value_states.new_empty((*shape, self.capacity, value_states.shape[-1]))
            self.is_initialized = True
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"SlotCache holds {self.capacity} positions; asked for {end}")
        self._keys[:, :, self.length : end].copy_(key_states)
        self._values[:, :, self.length : end].copy_(value_states)
        self.length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        # Copy only the filled positions of the kept rows (the rest of the buffer is unwritten).
        if not self.is_initialized:
            return
        keys = self._keys.new_empty((len(indices), *self._keys.shape[1:]))
        values = self._values.new_empty((len(indices), *self._values.shape[1:]))
        torch.index_select(self.keys, 0, indices, out=keys[:, :, : self.length])
        torch.index_select(self.values, 0, indices, out=values[:, :, : self.length])
        self._keys, self._values = keys, values
        self.keys, self.values = keys[:, :, : self.length], values[:, :, : self.length]


class SlotCache(DynamicCache):
    """`DynamicCache()` (no config: one full-attention layer per decoder layer, created on first
    use) whose layers hold at most `capacity` positions, preallocated."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.layer_class_to_replicate = partial(SlotLayer, capacity)
