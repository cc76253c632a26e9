"""How each rank's parameters are cut from the full (canonical, Hugging Face-named) tensors.

This is the one place that knows the tensor-parallel layout; loading, converting and reading
converted checkpoints back at another TP degree all follow it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import OPTConfig
from ..tp import TensorParallel, padded_vocab


@dataclass(frozen=True)
class Slice:
    """Rows ``start:stop`` along ``dim`` of canonical tensor ``name`` (dim None: all of it)."""

    name: str
    dim: int | None = None
    start: int = 0
    stop: int | None = None


def local_slices(config: OPTConfig, tp: TensorParallel) -> dict[str, list[Slice]]:
    """For each parameter of ``OPT(config, tp)``: the slices that, stacked on dim 0, make it.

    The vocabulary slice of the last rank may be short; the loader pads it with zero rows.
    """
    rows = padded_vocab(config.vocab_size, tp.world) // tp.world
    vocab_start = tp.rank * rows
    out: dict[str, list[Slice]] = {
        "embed_tokens.weight": [
            Slice("decoder.embed_tokens.weight", 0, vocab_start, min(vocab_start + rows, config.vocab_size))
        ],
        "embed_positions.weight": [Slice("decoder.embed_positions.weight")],
    }
    if config.has_projections:
        out["project_in.weight"] = [Slice("decoder.project_in.weight")]
        out["project_out.weight"] = [Slice("decoder.project_out.weight")]
    if config.final_layer_norm:
        for p in ("weight", "bias"):
            out[f"final_layer_norm.{p}"] = [Slice(f"decoder.final_layer_norm.{p}")]
    a, b = tp.shard_range(config.hidden)
    f0, f1 = tp.shard_range(config.ffn_hidden)
    for i in range(config.n_layers):
        src, dst = f"decoder.layers.{i}.", f"layers.{i}."
        for p in ("weight", "bias"):
            out[f"{dst}self_attn.qkv.{p}"] = [Slice(f"{src}self_attn.{x}_proj.{p}", 0, a, b) for x in "qkv"]
            out[f"{dst}mlp.fc1.{p}"] = [Slice(f"{src}fc1.{p}", 0, f0, f1)]
            for norm in ("self_attn_layer_norm", "final_layer_norm"):
                out[f"{dst}{norm}.{p}"] = [Slice(f"{src}{norm}.{p}")]
        out[f"{dst}self_attn.out_proj.weight"] = [Slice(f"{src}self_attn.out_proj.weight", 1, a, b)]
        out[f"{dst}self_attn.out_proj.bias"] = [Slice(f"{src}self_attn.out_proj.bias")]
        out[f"{dst}mlp.fc2.weight"] = [Slice(f"{src}fc2.weight", 1, f0, f1)]
        out[f"{dst}mlp.fc2.bias"] = [Slice(f"{src}fc2.bias")]
    return out
