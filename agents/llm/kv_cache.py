"""A KV cache that grows by doubling, for long multi-turn generation on the CPU.

transformers' ``DynamicLayer`` appends each step's keys and values with ``torch.cat``,
which copies the whole cache at every generated token: O(length²) memory traffic per
turn. A multi-turn search rollout reaches thousands of tokens (six turns of up to 500
tokens plus retrieved passages), where that copying dominates the step time. This
layer writes into a preallocated buffer and doubles it when full (amortised O(1)
per token); attention reads a view of the filled part.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` backed by a buffer with spare capacity along the sequence axis."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_buffer = self._value_buffer = None
        self._length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        needed = self._length + key_states.shape[-2]
        if self._key_buffer is None or needed > self._key_buffer.shape[-2]:
            self._grow(key_states, value_states, max(needed, 2 * self._length, 64))
        self._key_buffer[..., self._length : needed, :] = key_states
        self._value_buffer[..., self._length : needed, :] = value_states
        self._length = needed
        self.keys = self._key_buffer[..., :needed, :]
        self.values = self._value_buffer[..., :needed, :]
        return self.keys, self.values

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, capacity: int) -> None:
        batch, heads, _, key_dim = key_states.shape
        keys = key_states.new_empty((batch, heads, capacity, key_dim))
        values = value_states.new_empty((batch, heads, capacity, value_states.shape[-1]))
        if self._length:
            keys[..., : self._length, :] = self.keys
            values[..., : self._length, :] = self.values
        self._key_buffer, self._value_buffer = keys, values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._key_buffer is not None:
            self._key_buffer = self._key_buffer[indices]
            self._value_buffer = self._value_buffer[indices]
            self.keys = self._key_buffer[..., : self._length, :]
            self.values = self._value_buffer[..., : self._length, :]


def growing_cache(config) -> DynamicCache:
    """A ``DynamicCache`` of :class:`GrowingLayer` for full-attention models; the stock
    dynamic cache for models with other layer kinds (sliding windows, linear attention)."""
    text_config = config.get_text_config(decoder=True)
    layer_types = getattr(text_config, "layer_types", None) or ["full_attention"]
    if any(kind != "full_attention" for kind in layer_types):
        return DynamicCache(config=config)
    cache = DynamicCache()
    cache.layers = [GrowingLayer() for _ in range(text_config.num_hidden_layers)]
    return cache
