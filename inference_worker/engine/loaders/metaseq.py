"""metaseq model-parallel parts (``reshard-model_part-{i}.pt`` or ``reshard.pt``), any count.

A part holds whole tensors (after ``reshard_fsdp``) or, as in OPT's May 2022 release, still one
FSDP-flat vector with its ``shard_metadata`` (read by ``flat.py``).

Split rules across parts: embed_tokens, q/k/v (fused ``qkv_proj``, per part ordered k, v, q) and
fc1 on dim 0; out_proj.weight and fc2.weight on dim 1; everything else replicated.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..config import OPTConfig
from .base import PartedSource, PartedTensor, Piece, PartReader
from .flat import part_reader
from .torchfile import plain

_PART_FILE = re.compile(r"reshard-model_part-(\d+)\.pt$")
_RENAMES = {
    "decoder.layer_norm.": "decoder.final_layer_norm.",
    "decoder.project_in_dim.": "decoder.project_in.",
    "decoder.project_out_dim.": "decoder.project_out.",
}
_DROPPED = {"decoder.version", "decoder.output_projection.weight"}
_SPLIT_DIM0 = re.compile(r"(embed_tokens\.weight|[qkv]_proj\.(weight|bias)|fc1\.(weight|bias))$")
_SPLIT_DIM1 = re.compile(r"(out_proj\.weight|fc2\.weight)$")


def part_files(path: Path) -> list[Path]:
    """The consolidated part files of a directory in part order (empty when there are none)."""
    numbered = sorted(
        (int(m.group(1)), p) for p in path.glob("reshard-model_part-*.pt") if (m := _PART_FILE.search(p.name))
    )
    if numbered:
        if [i for i, _ in numbered] != list(range(len(numbered))):
            raise FileNotFoundError(f"missing metaseq parts in {path}: found {[i for i, _ in numbered]}")
        return [p for _, p in numbered]
    single = path / "reshard.pt"
    return [single] if single.is_file() else []


def metaseq_model_args(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The model args of a metaseq checkpoint as a plain dict (``cfg.model`` or legacy ``args``)."""
    cfg = plain(checkpoint.get("cfg"))
    if isinstance(cfg, dict) and cfg:
        model = cfg.get("model")
        return model if isinstance(model, dict) else cfg
    args = plain(checkpoint.get("args"))
    return args if isinstance(args, dict) else None


def canonical_name(key: str) -> str | None:
    if key in _DROPPED or key.endswith("_float_tensor"):
        return None
    for old, new in _RENAMES.items():
        key = key.replace(old, new)
    return key


def build_layout(parts: list[PartReader]) -> dict[str, PartedTensor]:
    """Map canonical names to the pieces of every part that hold them."""
    pieces: dict[str, list[Piece]] = {}
    dims: dict[str, int | None] = {}
    for index, part in enumerate(parts):
        for key in part.keys():
            name = canonical_name(key)
            if name is None:
                continue
            if ".qkv_proj." in name:
                third = part.shape(key)[0] // 3
                for j, proj in enumerate(("k_proj", "v_proj", "q_proj")):  # metaseq's per-part order
                    split = name.replace("qkv_proj", proj)
                    pieces.setdefault(split, []).append(Piece(index, key, j * third, (j + 1) * third))
                    dims[split] = 0
                continue
            dim = 0 if _SPLIT_DIM0.search(name) else 1 if _SPLIT_DIM1.search(name) else None
            dims[name] = dim
            length = part.shape(key)[dim] if dim is not None else 0
            pieces.setdefault(name, []).append(Piece(index, key, 0, length))
    return {name: PartedTensor(dims[name], tuple(p if dims[name] is not None else p[:1])) for name, p in pieces.items()}


def config_for_parts(path: Path, checkpoint: dict[str, Any], layout: dict[str, PartedTensor]) -> OPTConfig:
    """Architecture from a ``config.json`` beside the parts, else from the checkpoint's cfg."""
    vocab = sum(p.stop - p.start for p in layout["decoder.embed_tokens.weight"].pieces)
    if (path / "config.json").is_file():
        return OPTConfig.from_hf_dict(json.loads((path / "config.json").read_text()))
    args = metaseq_model_args(checkpoint)
    if args is None:
        raise ValueError(f"{path} has neither a config.json nor a cfg in its checkpoint")
    return OPTConfig.from_metaseq_args(args, vocab_size=vocab)


class MetaseqSource(PartedSource):
    """A directory of consolidated metaseq parts, readable at any target TP degree."""

    def __init__(self, path: Path):
        files = part_files(path)
        if not files:
            raise FileNotFoundError(f"no reshard-model_part-*.pt or reshard.pt in {path}")
        parts = [part_reader([f]) for f in files]
        layout = build_layout(parts)
        super().__init__(config_for_parts(path, parts[0].checkpoint, layout), parts, layout)
