"""Build a rank's model from any supported checkpoint directory, reading only its own slice.

Formats: a converted directory (``convert``), a Hugging Face directory, metaseq consolidated
parts, raw metaseq FSDP shards.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from ..config import OPTConfig
from ..model import OPT
from ..tp import TensorParallel, pack_for_cpu
from .base import TensorSource
from .converted import ConvertedSource, converted_degree, rank_file, read_config
from .fsdp import FSDPSource, shard_files
from .hf import HFSource, is_hf_directory
from .layout import local_slices
from .metaseq import MetaseqSource, part_files


def open_source(path: Path) -> TensorSource:
    """A reader of full tensors by canonical name for the checkpoint at ``path``."""
    path = Path(path)
    if converted_degree(path) is not None:
        return ConvertedSource(path)
    if is_hf_directory(path):
        return HFSource(path)
    if part_files(path):
        return MetaseqSource(path)
    if shard_files(path):
        return FSDPSource(path)
    raise FileNotFoundError(
        f"{path} is not an OPT checkpoint directory (expected config.json with safetensors/.bin, "
        "reshard-model_part-*.pt, reshard.pt or *-model_part-*-shard*.pt)"
    )


def read_local_state(source: TensorSource, tp: TensorParallel) -> dict[str, torch.Tensor]:
    """This rank's parameters, each cut from the source as ``local_slices`` says."""
    config = source.config
    state = {}
    for key, slices in local_slices(config, tp).items():
        parts = [source.read(s.name, s.dim, s.start, s.stop) for s in slices]
        tensor = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        if key == "embed_tokens.weight":
            rows = -(-config.vocab_size // tp.world)
            if tensor.shape[0] < rows:  # vocabulary padding on the last rank
                tensor = torch.cat([tensor, tensor.new_zeros(rows - tensor.shape[0], tensor.shape[1])])
        state[key] = tensor
    return state


def load_model(
    path: Path, tp: TensorParallel, device: torch.device, dtype: torch.dtype, max_batch: int = 16
) -> OPT:
    """Build the model on the meta device, then assign this rank's weights to it, laid out for
    batches of up to ``max_batch`` sequences (``tp.pack_for_cpu``)."""
    path = Path(path)
    if converted_degree(path) == tp.world:
        config = read_config(path)
        state = load_file(str(path / rank_file(tp.rank, tp.world)), device=str(device))
    else:
        source = open_source(path)
        config = source.config
        state = read_local_state(source, tp)
    with torch.device("meta"):
        model = OPT(config, tp)
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    del state  # the model holds the tensors now, so each packed weight frees its old copy
    pack_for_cpu(model, max_batch)
    return model.eval().requires_grad_(False)


def checkpoint_config(path: Path) -> OPTConfig:
    path = Path(path)
    return read_config(path) if converted_degree(path) is not None else open_source(path).config


__all__ = ["load_model", "open_source", "read_local_state", "checkpoint_config", "TensorSource"]
