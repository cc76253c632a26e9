"""Raw FSDP flat shards: ``checkpoint_last-model_part-{m}-shard{s}.pt`` with ``shard_metadata``.

Each shard ``s`` of part ``m`` holds the s-th chunk of every flat parameter; ``flat.py`` reads the
tensors out of them. A part with a single ``-shard0`` file whose tensors are whole (not flat) is
read as it is.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import PartedSource
from .flat import part_reader
from .metaseq import build_layout, config_for_parts

_SHARD_FILE = re.compile(r"-model_part-(\d+)-shard(\d+)\.pt$")


def shard_files(path: Path) -> dict[int, list[Path]]:
    """Shard files per model part, each list in shard order."""
    found: dict[int, dict[int, Path]] = {}
    for file in path.glob("*-model_part-*-shard*.pt"):
        if m := _SHARD_FILE.search(file.name):
            found.setdefault(int(m.group(1)), {})[int(m.group(2))] = file
    parts = {}
    for part, shards in sorted(found.items()):
        if sorted(shards) != list(range(len(shards))):
            raise FileNotFoundError(f"missing FSDP shards of part {part} in {path}: found {sorted(shards)}")
        parts[part] = [shards[s] for s in range(len(shards))]
    return parts


class FSDPSource(PartedSource):
    """FSDP shards of any number of model-parallel parts, readable at any target TP degree."""

    def __init__(self, path: Path):
        files = shard_files(path)
        if not files:
            raise FileNotFoundError(f"no *-model_part-*-shard*.pt files in {path}")
        if sorted(files) != list(range(len(files))):
            raise FileNotFoundError(f"missing FSDP model parts in {path}: found {sorted(files)}")
        parts = [part_reader(files[m]) for m in sorted(files)]
        layout = build_layout(parts)
        super().__init__(config_for_parts(path, parts[0].checkpoint, layout), parts, layout)
