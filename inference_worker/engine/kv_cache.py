"""A preallocated, slot-based KV cache and the per-step view of which slots a batch uses."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class KVCache:
    """Keys and values of ``n_slots`` sequences of up to ``max_len`` tokens, allocated once.

    Layout per layer: (slots, heads, max_len, head_dim), so a batch of slots reads as the
    (B, H, T, D) tensor attention wants, without copying when the slots are contiguous.
    """

    def __init__(
        self,
        n_layers: int,
        n_slots: int,
        n_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ):
        shape = (n_layers, n_slots, n_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.n_slots = n_slots
        self.max_len = max_len

    def fits(self, n_slots: int, max_len: int, dtype: torch.dtype, n_layers: int, n_heads: int) -> bool:
        _, slots, heads, length, _ = self.k.shape
        return (
            slots >= n_slots
            and length >= max_len
            and self.k.dtype == dtype
            and self.k.shape[0] == n_layers
            and heads == n_heads
        )

    def write(self, layer: int, batch: CachedBatch, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store this step's k, v (B, T, H, D) at ``batch.write_pos`` of each row's slot."""
        if batch.same_single_position is not None and batch.slot_block is not None:
            # decode step of rows that are all at the same position: a plain strided copy
            self.k[layer, batch.slot_block, :, batch.same_single_position] = k[:, 0]
            self.v[layer, batch.slot_block, :, batch.same_single_position] = v[:, 0]
            return
        rows = batch.slots.unsqueeze(1)  # (B, 1)
        self.k[layer][rows, :, batch.write_pos] = k
        self.v[layer][rows, :, batch.write_pos] = v

    def read(self, layer: int, batch: CachedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, key_len, D) of the batch's slots."""
        n = batch.key_len
        if batch.slot_block is not None:
            block = batch.slot_block
            return self.k[layer, block, :, :n], self.v[layer, block, :, :n]
        return self.k[layer, batch.slots, :, :n], self.v[layer, batch.slots, :, :n]

    def copy_slot(self, src: int, dst: int, length: int) -> None:
        self.k[:, dst, :, :length] = self.k[:, src, :, :length]
        self.v[:, dst, :, :length] = self.v[:, src, :, :length]


@dataclass
class CachedBatch:
    """Where a step's tokens go in the cache and what each of them may attend to."""

    slots: torch.Tensor  # (B,) cache slot of each row
    slot_block: slice | None  # the same slots as a slice when they are consecutive
    write_pos: torch.Tensor  # (B, T) cache position of each new token
    key_len: int  # keys read: cache positions [0, key_len)
    mask: torch.Tensor | None  # (B, 1, T, key_len) True = attend; None = attend to all keys
    causal: bool  # single fresh sequence: plain causal attention
    same_single_position: int | None = None  # one new token per row, all at this position

    @classmethod
    def build(cls, slots: list[int], starts: list[int], n_tokens: int, device: torch.device) -> CachedBatch:
        """Rows ``b`` write tokens at ``starts[b] .. starts[b] + n_tokens`` of slot ``slots[b]``."""
        start = torch.tensor(starts, device=device)
        write_pos = start.unsqueeze(1) + torch.arange(n_tokens, device=device)  # (B, T)
        key_len = max(starts) + n_tokens
        consecutive = slots == list(range(slots[0], slots[0] + len(slots)))
        block = slice(slots[0], slots[0] + len(slots)) if consecutive else None
        causal = len(slots) == 1 and starts[0] == 0 and n_tokens > 1
        if n_tokens == 1 and min(starts) == max(starts):
            mask = None  # every row attends to all key_len keys
        elif causal:
            mask = None
        else:
            keys = torch.arange(key_len, device=device)
            mask = (keys.view(1, 1, -1) <= write_pos.unsqueeze(-1)).unsqueeze(1)  # (B, 1, T, key_len)
        return cls(
            slots=torch.tensor(slots, device=device),
            slot_block=block,
            write_pos=write_pos,
            key_len=key_len,
            mask=mask,
            causal=causal,
            same_single_position=starts[0] if n_tokens == 1 and min(starts) == max(starts) else None,
        )
