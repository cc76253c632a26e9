"""Our own layout: one safetensors file per TP rank holding exactly that rank's parameters.

Written by ``python -m inference_worker convert``. Loading at the degree it was written for maps
each rank's file straight into the model; at another degree it is read like any parted source.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import OPTConfig
from ..tp import TensorParallel
from .base import PartedSource, PartedTensor, Piece, SafetensorsReader
from .layout import local_slices

FORMAT = "gatehouse-tp-safetensors"


def rank_file(rank: int, world: int) -> str:
    return f"model-tp{rank:02d}-of-{world:02d}.safetensors"


def converted_degree(path: Path) -> int | None:
    """The TP degree a converted directory was written for, or None if it is not one."""
    config = path / "config.json"
    if not config.is_file():
        return None
    meta = json.loads(config.read_text()).get("gatehouse", {})
    return int(meta["tp"]) if meta.get("format") == FORMAT else None


def read_config(path: Path) -> OPTConfig:
    return OPTConfig.from_hf_dict(json.loads((path / "config.json").read_text()))


class ConvertedSource(PartedSource):
    """Full tensors reassembled from the per-rank files (used when loading at another degree)."""

    def __init__(self, path: Path):
        config = read_config(path)
        world = converted_degree(path)
        parts = [SafetensorsReader(path / rank_file(r, world)) for r in range(world)]
        pieces: dict[str, list[Piece]] = {}
        dims: dict[str, int | None] = {}
        for rank in range(world):
            for key, slices in local_slices(config, TensorParallel(rank, world)).items():
                offset = 0
                for s in slices:
                    dims[s.name] = s.dim
                    if s.dim is None:
                        pieces.setdefault(s.name, []).append(Piece(rank, key, 0, 0))
                        continue
                    length = s.stop - s.start
                    local_start = offset if s.dim == 0 else 0
                    pieces.setdefault(s.name, []).append(Piece(rank, key, local_start, local_start + length))
                    offset += length
        layout = {name: PartedTensor(dims[name], tuple(p if dims[name] is not None else p[:1])) for name, p in pieces.items()}
        super().__init__(config, parts, layout)
