"""Write OPT weights as they were published: Hugging Face, metaseq parts, raw FSDP shards.

Used to build the demo release and test checkpoints. ``state`` is a dict of full tensors by
canonical name (``decoder.layers.0.self_attn.q_proj.weight``, as the loaders use). The files hold
what Meta's hold, so that the tools a researcher will use on the real release (metaseq's
``reshard_fsdp``, ``reshard_mp``, ``stitch_fsdp_ckpt``, fairscale's ``consolidate_shard_weights``,
the Hub's converter) accept them: float16 weights, metaseq's top-level keys and config, and
fairscale's flattening metadata. docs/engine.md ("Checkpoint formats") describes every file.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

import torch

from .config import OPTConfig

OPT_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as in OPT's vocabulary
WEIGHT_DTYPE = torch.float16  # Meta's OPT weights, and the Hub's, are float16
TIED = ("decoder.embed_tokens.weight", "decoder.output_projection.weight")  # (source, shared copy)
VERSION_KEY = "decoder.version"  # the decoder's one buffer
# Module registration order, which fixes FSDP's flattening order: the decoder's own modules (the
# layers sit between embed_positions and layer_norm, each wrapped in its own FSDP instance), then
# each layer's.
ROOT_MODULES = ("decoder.embed_tokens", "decoder.project_in_dim", "decoder.embed_positions", "decoder.layer_norm",
                "decoder.project_out_dim")
LAYER_MODULES = ("self_attn.qkv_proj", "self_attn.out_proj", "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")


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
    """``config.json`` and ``model.safetensors`` in Hugging Face's layout (LM head tied), float16."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({**config.to_hf_dict(), "torch_dtype": "float16"}, indent=2))
    save_file({f"model.{name}": t.to(WEIGHT_DTYPE).contiguous() for name, t in state.items()},
              str(path / "model.safetensors"), metadata={"format": "pt"})


def _registration_key(name: str) -> tuple:
    module = name.rsplit(".", 1)[0]
    is_bias = name.endswith(".bias")
    if name == VERSION_KEY:
        return (2,)
    if name.startswith("decoder.layers."):
        _, _, layer, inner = module.split(".", 3)
        return (1, int(layer), LAYER_MODULES.index(inner), is_bias)
    return (0, ROOT_MODULES.index(module), is_bias)


def metaseq_parts(state: dict[str, torch.Tensor], n_parts: int) -> list[dict[str, torch.Tensor]]:
    """metaseq model-parallel part state dicts as ``reshard_fsdp`` writes them: float16, fused qkv
    in k, v, q order per part, keys in module order, ``decoder.version``, and no
    ``decoder.output_projection.weight`` (it is tied to the embedding)."""
    parts: list[dict[str, torch.Tensor]] = [{} for _ in range(n_parts)]
    for name, t in state.items():
        if ".q_proj." in name or ".v_proj." in name:
            continue
        if ".k_proj." in name:
            k, q, v = (state[name.replace("k_proj", p)].chunk(n_parts, 0) for p in ("k_proj", "q_proj", "v_proj"))
            for p in range(n_parts):
                parts[p][name.replace("k_proj", "qkv_proj")] = torch.cat([k[p], v[p], q[p]]).to(WEIGHT_DTYPE)
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
            parts[p][meta_name] = pieces[p].to(WEIGHT_DTYPE).clone()
    for part in parts:
        part[VERSION_KEY] = torch.tensor([3.0], dtype=WEIGHT_DTYPE)
    return [{k: part[k] for k in sorted(part, key=_registration_key)} for part in parts]


def metaseq_model_args(config: OPTConfig, n_parts: int) -> argparse.Namespace:
    """``cfg["model"]`` as metaseq keeps it: the architecture and OPT's flags (``opt_baselines.py``)."""
    return argparse.Namespace(
        _name="transformer_lm_megatron",
        arch="transformer_lm_megatron",
        activation_fn="relu",
        decoder_layers=config.n_layers,
        decoder_embed_dim=config.hidden,
        decoder_ffn_embed_dim=config.ffn_hidden,
        decoder_attention_heads=config.n_heads,
        decoder_input_dim=config.word_embed_dim,
        decoder_output_dim=config.word_embed_dim,
        decoder_normalize_before=config.pre_layer_norm,
        decoder_learned_pos=True,
        share_decoder_input_output_embed=True,
        no_scale_embedding=True,
        max_target_positions=config.max_positions,
        tokens_per_sample=config.max_positions,
        model_parallel_size=n_parts,
        dropout=0.1,
        attention_dropout=0.1,
        no_emb_dropout=True,
        checkpoint_activations=True,
        full_megatron_init=True,
        megatron_init_sigma=0.006,
    )


def metaseq_cfg(config: OPTConfig, n_parts: int) -> dict:
    """metaseq's config as its trainer saves it (``OmegaConf.to_container``): a dict of sections
    whose ``model`` is an argparse Namespace."""
    return {
        "_name": None,
        "common": {"fp16": True, "memory_efficient_fp16": True, "fp16_init_scale": 4, "seed": 1,
                   "model_parallel_size": n_parts, "log_format": "json", "log_interval": 1},
        "distributed_training": {"ddp_backend": "fully_sharded", "use_sharded_state": True,
                                 "no_reshard_after_forward": True, "distributed_world_size": n_parts},
        "dataset": {"num_workers": 8, "batch_size": 8, "required_batch_size_multiple": 1},
        "optimization": {"clip_norm": 1.0, "lr": [6e-4], "update_freq": [1], "max_update": 0},
        "checkpoint": {"save_interval_updates": 2000, "no_epoch_checkpoints": True, "no_best_checkpoints": True},
        "model": metaseq_model_args(config, n_parts),
        "task": {"_name": "streaming_language_modeling", "sample_break_mode": "none",
                 "tokens_per_sample": config.max_positions, "vocab_filename": "gpt2-vocab.json",
                 "merges_filename": "gpt2-merges.txt"},
        "criterion": {"_name": "vocab_parallel_cross_entropy"},
        "optimizer": {"_name": "adam", "adam_betas": "(0.9, 0.95)", "adam_eps": 1e-08, "weight_decay": 0.1},
        "lr_scheduler": {"_name": "polynomial_decay", "warmup_updates": 0, "end_learning_rate": 6e-5},
    }


def training_state(model: dict[str, torch.Tensor], cfg: dict, shard_metadata: dict) -> dict:
    """A metaseq checkpoint around ``model``: the keys its trainer writes (no optimizer state, as
    after ``reshard_fsdp --skip-optimizer-state``), and the legacy ``args`` that ``reshard_mp`` copies.
    Random weights: no update was ever made."""
    return {
        "cfg": cfg,
        "model": model,
        "criterion": None,  # metaseq saves None for a criterion without parameters
        "optimizer_history": [{"criterion_name": "VocabParallelCrossEntropyCriterion",
                               "optimizer_name": "MemoryEfficientFP16Optimizer",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": {},
        "extra_state": {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "shuffle": True},
                        "val_loss": None, "metrics": {}, "previous_training_time": 0.0},
        "shard_metadata": shard_metadata,
        "args": None,
    }


def save_metaseq(state: dict[str, torch.Tensor], config: OPTConfig, path: Path, n_parts: int) -> None:
    """``reshard-model_part-{i}.pt`` files as ``reshard_fsdp`` leaves them (``shard_metadata`` empty)."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = metaseq_cfg(config, n_parts)
    for p, part in enumerate(metaseq_parts(state, n_parts)):
        torch.save(training_state(part, cfg, shard_metadata={}), path / f"reshard-model_part-{p}.pt")


def save_fsdp_shards(state: dict[str, torch.Tensor], config: OPTConfig, path: Path, n_parts: int,
                     n_shards: int) -> None:
    """The model as raw FSDP shards ``checkpoint_last-model_part-{m}-shard{s}.pt``."""
    cfg = metaseq_cfg(config, n_parts)
    for part, part_state in enumerate(metaseq_parts(state, n_parts)):
        save_fsdp_part(part_state, path, part=part, n_shards=n_shards, cfg=cfg)


def fsdp_instances(part_state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """The parameters each FSDP instance flattens, by its path in ``named_modules`` order: the root
    ("") holds every parameter outside the layers, each layer (``decoder.layers.{i}``) its own."""
    instances: dict[str, list[str]] = {"": []}
    for name in sorted((n for n in part_state if n != VERSION_KEY), key=_registration_key):
        path = ".".join(name.split(".")[:3]) if name.startswith("decoder.layers.") else ""
        instances.setdefault(path, []).append(name)
    return instances


def save_fsdp_part(part_state: dict[str, torch.Tensor], path: Path, part: int, n_shards: int, cfg: dict) -> None:
    """One model part as fairscale's FSDP writes it on ``n_shards`` ranks: each instance's
    parameters flattened into ``flat_param_0``, split across shards with end padding, and the
    ``shard_metadata`` that ``consolidate_shard_weights`` reads (the tie recorded, not stored)."""
    path.mkdir(parents=True, exist_ok=True)
    shards = [{} for _ in range(n_shards)]
    metadata: list[list[dict]] = [[] for _ in range(n_shards)]
    for fsdp_path, names in fsdp_instances(part_state).items():
        prefix = f"{fsdp_path}." if fsdp_path else ""
        flat = torch.cat([part_state[n].reshape(-1) for n in names])
        chunks = list(flat.chunk(n_shards))
        size = chunks[0].numel()
        for s in range(n_shards):
            chunk = chunks[s] if s < len(chunks) else flat.new_zeros(0)
            padding = size - chunk.numel()
            shards[s][f"{prefix}flat_param_0"] = torch.cat([chunk, chunk.new_zeros(padding)]).clone()
            metadata[s].append({
                "fsdp_path": fsdp_path,
                "params": {"flat_param_0": {  # this key order is read by unpacking .values()
                    "names": [n[len(prefix):] for n in names],
                    "shapes": [part_state[n].shape for n in names],
                    "numels": [part_state[n].numel() for n in names],
                    "padding": padding,
                }},
                "no_broadcast_optim_state": False,
                "shared_param_info": [TIED] if not fsdp_path else [],
            })
    for s in range(n_shards):
        shards[s][VERSION_KEY] = part_state[VERSION_KEY].clone()
        shard_metadata = {"param_metadata": metadata[s], "buffer_names": [VERSION_KEY]}
        file = path / f"checkpoint_last-model_part-{part}-shard{s}.pt"
        torch.save(training_state(shards[s], cfg, shard_metadata), file)
