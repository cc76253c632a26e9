"""Write OPT weights in the formats the portal distributes: HF, metaseq parts, raw FSDP shards.

Used to build the demo release and test checkpoints. ``state`` is a dict of full tensors by
canonical name (``decoder.layers.0.self_attn.q_proj.weight``, as the loaders use).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch

from .config import OPTConfig

OPT_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as in OPT's vocabulary


def random_state(config: OPTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights large enough that greedy decoding does not collapse to one token."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float = 0.15) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    def norm(prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": 0.8 + 0.4 * torch.rand(config.hidden, generator=generator),
                f"{prefix}.bias": normal(config.hidden)}

    h, f = config.hidden, config.ffn_hidden
    state = {
        "decoder.embed_tokens.weight": normal(config.vocab_size, config.word_embed_dim, std=0.25),
        "decoder.embed_positions.weight": normal(config.max_positions + 2, h, std=0.25),
    }
    if config.has_projections:
        state["decoder.project_in.weight"] = normal(h, config.word_embed_dim)
        state["decoder.project_out.weight"] = normal(config.word_embed_dim, h)
    if config.final_layer_norm:
        state.update(norm("decoder.final_layer_norm"))
    for i in range(config.n_layers):
        layer = f"decoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            state[f"{layer}.self_attn.{proj}.weight"] = normal(h, h)
            state[f"{layer}.self_attn.{proj}.bias"] = normal(h)
        state[f"{layer}.fc1.weight"], state[f"{layer}.fc1.bias"] = normal(f, h), normal(f)
        state[f"{layer}.fc2.weight"], state[f"{layer}.fc2.bias"] = normal(h, f), normal(h)
        state.update(norm(f"{layer}.self_attn_layer_norm"))
        state.update(norm(f"{layer}.final_layer_norm"))
    return state


def train_tokenizer(path: Path, corpus: Iterable[str], vocab_size: int, metaseq_names: bool = False) -> int:
    """A GPT-2-style byte-level BPE trained on ``corpus``; returns its vocabulary size."""
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(list(corpus), vocab_size=vocab_size, special_tokens=OPT_SPECIAL_TOKENS,
                                  show_progress=False)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_model(str(path))
    if metaseq_names:
        (path / "vocab.json").rename(path / "gpt2-vocab.json")
        (path / "merges.txt").rename(path / "gpt2-merges.txt")
    return tokenizer.get_vocab_size()


def save_hf(state: dict[str, torch.Tensor], config: OPTConfig, path: Path) -> None:
    """``config.json`` and ``model.safetensors`` in Hugging Face's layout (LM head tied)."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2))
    save_file({f"model.{name}": t.contiguous() for name, t in state.items()}, str(path / "model.safetensors"),
              metadata={"format": "pt"})


def metaseq_parts(state: dict[str, torch.Tensor], n_parts: int) -> list[dict[str, torch.Tensor]]:
    """metaseq model-parallel part state dicts: fused qkv in k, v, q order per part."""
    parts: list[dict[str, torch.Tensor]] = [{} for _ in range(n_parts)]
    for name, t in state.items():
        if ".q_proj." in name or ".v_proj." in name:
            continue
        if ".k_proj." in name:
            k, q, v = (state[name.replace("k_proj", p)].chunk(n_parts, 0) for p in ("k_proj", "q_proj", "v_proj"))
            for p in range(n_parts):
                parts[p][name.replace("k_proj", "qkv_proj")] = torch.cat([k[p], v[p], q[p]]).clone()
            continue
        meta_name = (
            name.replace("decoder.final_layer_norm.", "decoder.layer_norm.")
            .replace("decoder.project_in.", "decoder.project_in_dim.")
            .replace("decoder.project_out.", "decoder.project_out_dim.")
        )
        if name.endswith(("embed_tokens.weight", "fc1.weight", "fc1.bias")):
            pieces = t.chunk(n_parts, 0)
        elif name.endswith(("out_proj.weight", "fc2.weight")):
            pieces = t.chunk(n_parts, 1)
        else:
            pieces = (t,) * n_parts
        for p in range(n_parts):
            parts[p][meta_name] = pieces[p].clone()
    for part in parts:
        part["decoder.version"] = torch.tensor([3.0])
        part["decoder.output_projection.weight"] = part["decoder.embed_tokens.weight"].clone()
    return parts


def metaseq_args(config: OPTConfig) -> dict:
    return {
        "decoder_layers": config.n_layers,
        "decoder_embed_dim": config.hidden,
        "decoder_ffn_embed_dim": config.ffn_hidden,
        "decoder_attention_heads": config.n_heads,
        "decoder_normalize_before": config.pre_layer_norm,
        "max_target_positions": config.max_positions,
        "decoder_input_dim": config.word_embed_dim,
        "decoder_output_dim": config.word_embed_dim,
        "arch": "transformer_lm_megatron",
    }


def save_metaseq(state: dict[str, torch.Tensor], config: OPTConfig, path: Path, n_parts: int) -> None:
    """``reshard-model_part-{i}.pt`` files with the model args in ``cfg``."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"model": metaseq_args(config)}
    for p, part in enumerate(metaseq_parts(state, n_parts)):
        torch.save({"model": part, "cfg": cfg}, path / f"reshard-model_part-{p}.pt")


def save_fsdp_shards(state: dict[str, torch.Tensor], config: OPTConfig, path: Path, n_parts: int,
                     n_shards: int) -> None:
    """The model as raw FSDP shards ``checkpoint_last-model_part-{m}-shard{s}.pt``."""
    cfg = {"model": metaseq_args(config)}
    for part, part_state in enumerate(metaseq_parts(state, n_parts)):
        save_fsdp_part(part_state, path, part=part, n_shards=n_shards, cfg=cfg)


def save_fsdp_part(part_state: dict[str, torch.Tensor], path: Path, part: int, n_shards: int, cfg,
                   wrapped_keys: bool = False) -> None:
    """One model part as FSDP flat shards: each layer's (and the rest's) parameters flattened into
    one vector, split across shards with end padding, plus ``shard_metadata``.
    ``wrapped_keys`` keeps FSDP's wrapper module names in the flat parameter keys."""
    path.mkdir(parents=True, exist_ok=True)
    modules: dict[str, list[str]] = {}
    for name in part_state:
        if name != "decoder.version":
            fsdp_path = ".".join(name.split(".")[:3]) if name.startswith("decoder.layers.") else ""
            modules.setdefault(fsdp_path, []).append(name)
    shards = [{"decoder.version": part_state["decoder.version"]} for _ in range(n_shards)]
    metadata: list[list[dict]] = [[] for _ in range(n_shards)]
    for fsdp_path, names in modules.items():
        prefix = f"{fsdp_path}." if fsdp_path else ""
        flat = torch.cat([part_state[n].reshape(-1) for n in names])
        chunks = list(flat.chunk(n_shards))
        size = chunks[0].numel()
        for s in range(n_shards):
            chunk = chunks[s] if s < len(chunks) else flat.new_zeros(0)
            padding = size - chunk.numel()
            key = f"{prefix}_fsdp_wrapped_module.flat_param_0" if wrapped_keys and prefix else f"{prefix}flat_param_0"
            shards[s][key] = torch.cat([chunk, chunk.new_zeros(padding)]).clone()
            metadata[s].append({"fsdp_path": fsdp_path, "params": {"flat_param_0": {
                "names": ["_fpw_module." + n[len(prefix):] for n in names],
                "shapes": [tuple(part_state[n].shape) for n in names],
                "numels": [part_state[n].numel() for n in names],
                "padding": padding,
            }}})
    for s in range(n_shards):
        torch.save({"model": shards[s], "cfg": cfg,
                    "shard_metadata": {"param_metadata": metadata[s], "buffer_names": []}},
                   path / f"checkpoint_last-model_part-{part}-shard{s}.pt")
