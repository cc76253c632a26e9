"""OPT decoder in plain PyTorch, tensor-parallel through the layers in ``tp.py``.

Shapes: B batch, T new tokens, S keys attended, C hidden, H local heads, D head dim,
V_r this rank's vocabulary slice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import native
from .config import OPTConfig
from .kv_cache import CachedBatch, KVCache
from .tp import ColumnParallelLinear, RowParallelLinear, TensorParallel, VocabParallelEmbedding


class Attention(nn.Module):
    """Multi-head self-attention; each rank owns ``n_heads / world`` heads."""

    def __init__(self, config: OPTConfig, tp: TensorParallel):
        super().__init__()
        if config.n_heads % tp.world:
            raise ValueError(f"{config.n_heads} heads are not divisible by the TP degree {tp.world}")
        self.n_heads = config.n_heads // tp.world
        self.head_dim = config.head_dim
        self.qkv = ColumnParallelLinear(config.hidden, 3 * config.hidden, tp)  # rows: q_r, k_r, v_r
        self.out_proj = RowParallelLinear(config.hidden, config.hidden, tp)

    def forward(
        self,
        x: torch.Tensor,
        layer: int,
        cache: KVCache | None,
        batch: CachedBatch | None,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).unbind(2)  # (B, T, H, D) each
        if cache is not None:
            cache.write(layer, batch, k, v)
            k, v = cache.read(layer, batch)  # (B, H, S, D)
            mask, causal = batch.mask, batch.causal
        else:
            k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
            causal = False
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k, v, attn_mask=mask, is_causal=causal, scale=self.head_dim**-0.5
        )  # (B, H, T, D)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class FeedForward(nn.Module):
    """``fc2(relu(fc1(x)))``; fc1 column-parallel, fc2 row-parallel."""

    def __init__(self, config: OPTConfig, tp: TensorParallel):
        super().__init__()
        self.fc1 = ColumnParallelLinear(config.hidden, config.ffn_hidden, tp)
        self.fc2 = RowParallelLinear(config.ffn_hidden, config.hidden, tp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu_(self.fc1(x)))


class DecoderLayer(nn.Module):
    """Attention then feed-forward, each a residual branch; layer norm before (pre-LN) or after."""

    def __init__(self, config: OPTConfig, tp: TensorParallel):
        super().__init__()
        self.pre_layer_norm = config.pre_layer_norm
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.self_attn = Attention(config, tp)
        self.final_layer_norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.mlp = FeedForward(config, tp)

    def forward(self, x, layer, cache, batch, mask):
        if self.pre_layer_norm:
            x = x + self.self_attn(self.self_attn_layer_norm(x), layer, cache, batch, mask)
            return x.add_(self.mlp(self.final_layer_norm(x)))
        x = self.self_attn_layer_norm(x + self.self_attn(x, layer, cache, batch, mask))
        return self.final_layer_norm(x + self.mlp(x))


class OPT(nn.Module):
    """The decoder plus the LM head tied to the token embedding."""

    def __init__(self, config: OPTConfig, tp: TensorParallel = TensorParallel()):
        super().__init__()
        self.config = config
        self.tp = tp
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.word_embed_dim, tp)
        self.embed_positions = nn.Embedding(config.max_positions + config.position_offset, config.hidden)
        self.project_in = self.project_out = None
        if config.has_projections:
            self.project_in = nn.Linear(config.word_embed_dim, config.hidden, bias=False)
            self.project_out = nn.Linear(config.hidden, config.word_embed_dim, bias=False)
        self.layers = nn.ModuleList(DecoderLayer(config, tp) for _ in range(config.n_layers))
        self.final_layer_norm = (
            nn.LayerNorm(config.hidden, eps=config.layer_norm_eps) if config.final_layer_norm else None
        )
        self._native_model: bool | None = None  # native_ready's answer for the model's weights
        self._native_stack: native.DecoderStack | None = None  # made at the first step that uses it

    def _embed(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(tokens)  # (B, T, word_embed_dim)
        if self.project_in is not None:
            x = self.project_in(x)
        return x + self.embed_positions(positions + self.config.position_offset)  # (B, T, C)

    def _decode(self, tokens, positions, cache, batch, mask) -> torch.Tensor:
        x = self._embed(tokens, positions)
        for i, layer in enumerate(self.layers):
            x = layer(x, i, cache, batch, mask)
        if self.final_layer_norm is not None:
            x = self.final_layer_norm(x)
        if self.project_out is not None:
            x = self.project_out(x)
        return x

    def native_ready(self, cache: KVCache) -> bool:
        """Whether a step of one new token of one sequence can run as one call of our C kernel
        (``native_step``): on the CPU, a float32 or bfloat16 pre-LN model with its final layer
        norm and without projections, at TP 1, with dense weights. There the step is bound by
        reading the weights, and the forty-odd PyTorch operations of each layer added 0.6-1.5 ms
        to float32 steps of 7-14 ms and 1-2.5 ms to bfloat16 steps of 7-8 ms (opt-125m, AMD EPYC)."""
        if self._native_model is None:  # what does not change between steps, checked once
            qkv, head = self.layers[0].self_attn.qkv.weight, self.embed_tokens.weight
            self._native_model = (
                head.device.type == "cpu"
                and self.config.pre_layer_norm
                and self.final_layer_norm is not None
                and self.project_out is None
                and self.tp.world == 1
                and not qkv.is_mkldnn
                and qkv.is_contiguous()
                and head.is_contiguous()
                and native.gemv_available(head.dtype)
            )
        return self._native_model and cache.k.dtype == self.embed_tokens.weight.dtype

    def native_step(self, token: int, position: int, cache: KVCache, slot: int) -> torch.Tensor:
        """Logits (V,) after ``token`` at ``position`` of the sequence in cache ``slot``, whose
        new key and value are written there: the embeddings, the layers, the final layer norm and
        the LM head in one call of ``native.DecoderStack`` (where ``native_ready``)."""
        if self._native_stack is None:
            self._native_stack = native.DecoderStack(
                list(self.layers),
                self.embed_tokens.weight,
                self.embed_positions.weight,
                self.config.position_offset,
                (self.final_layer_norm.weight, self.final_layer_norm.bias),
                self.embed_tokens.weight,
                self.config.layer_norm_eps,
            )
        return self._native_stack.step(token, position, cache.k[:, slot], cache.v[:, slot], position)

    def _native_decode(self, tokens, positions, cache: KVCache | None, batch: CachedBatch | None) -> bool:
        """Whether ``forward_cached`` can take ``native_step``: one token of one sequence, written
        at the position its embedding is for."""
        return (
            cache is not None
            and tokens.shape == (1, 1)
            and batch.same_single_position is not None
            and self.native_ready(cache)
            and int(positions[0, 0]) == batch.same_single_position
        )

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V_r) of whole sequences without a cache; ``attention_mask`` marks real
        tokens (1) and padding (0), so a left-padded batch matches each prompt run alone."""
        B, T = tokens.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(tokens)
        valid = attention_mask.bool()
        positions = (attention_mask.long().cumsum(1) - 1).clamp(min=-1)  # pads: -1, table row 1
        positions = positions.masked_fill(~valid, -1)
        causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
        # a pad query attends to itself only, so no row is fully masked
        mask = causal & (valid.view(B, 1, T) | torch.eye(T, dtype=torch.bool, device=tokens.device))
        hidden = self._decode(tokens, positions, None, None, mask.unsqueeze(1))  # (B, T, C)
        return self.embed_tokens.logits(hidden)

    def forward_cached(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache,
        batch: CachedBatch,
        last_only: bool = True,
    ) -> torch.Tensor:
        """Run new tokens (B, T) at ``positions`` against the cache; logits (B, T or 1, V_r)."""
        if self._native_decode(tokens, positions, cache, batch):
            slot = batch.slot_block.start
            return self.native_step(int(tokens[0, 0]), batch.same_single_position, cache, slot).view(1, 1, -1)
        hidden = self._decode(tokens, positions, cache, batch, None)
        if last_only:
            hidden = hidden[:, -1:]
        return self.embed_tokens.logits(hidden)
