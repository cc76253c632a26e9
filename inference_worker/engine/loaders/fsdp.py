"""Raw FSDP flat shards: ``checkpoint_last-model_part-{m}-shard{s}.pt`` with ``shard_metadata``.

Each shard ``s`` of part ``m`` holds the s-th chunk of every flat parameter (padded at its end,
``padding`` elements per shard). A tensor is rebuilt by reading only its own element range from
the memory-mapped shards, so consolidation never holds more than one tensor at a time — metaseq's
own tool needs twice the model in RAM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .base import PartedSource, TorchFileReader, narrow
from .metaseq import build_layout, config_for_parts

_SHARD_FILE = re.compile(r"-model_part-(\d+)-shard(\d+)\.pt$")
_WRAPPERS = ("_fsdp_wrapped_module.", "_fpw_module.")


def clean_name(name: str) -> str:
    for wrapper in _WRAPPERS:
        name = name.replace(wrapper, "")
    return name


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


@dataclass(frozen=True)
class FlatSlot:
    """Where a parameter lives: elements ``offset .. offset + numel`` of flat parameter ``flat_key``."""

    flat_key: str
    offset: int
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class FSDPPartReader:
    """One model-parallel part as named tensors, read out of its flat shards."""

    def __init__(self, files: list[Path]):
        self.shards = [TorchFileReader(f, state_key="model") for f in files]
        # flat parameters by wrapper-free name (some files keep FSDP wrapper names in keys)
        self.flat = [{clean_name(k): v for k, v in shard.state.items()} for shard in self.shards]
        self.checkpoint = self.shards[0].checkpoint
        self.slots: dict[str, FlatSlot] = {}
        self.chunks: dict[str, list[tuple[int, int]]] = {}  # flat key -> (shard, unpadded length)
        for module in self.checkpoint["shard_metadata"]["param_metadata"]:
            prefix = f"{module['fsdp_path']}." if module["fsdp_path"] else ""
            for flat_name, meta in module["params"].items():
                flat_key = clean_name(prefix + flat_name)
                offset = 0
                for name, shape in zip(meta["names"], meta["shapes"]):
                    slot = FlatSlot(flat_key, offset, tuple(shape))
                    self.slots[clean_name(prefix + name)] = slot
                    offset += slot.numel
                self.chunks[flat_key] = [
                    (s, self.flat[s][flat_key].numel() - self._padding(shard, module["fsdp_path"], flat_name))
                    for s, shard in enumerate(self.shards)
                ]
        self.plain_keys = {  # tensors stored outside flat parameters (e.g. decoder.version)
            clean_name(k): k for k in self.shards[0].keys() if clean_name(k) not in self.chunks
        }

    @staticmethod
    def _padding(shard: TorchFileReader, fsdp_path: str, flat_name: str) -> int:
        for module in shard.checkpoint["shard_metadata"]["param_metadata"]:
            if module["fsdp_path"] == fsdp_path:
                return int(module["params"][flat_name]["padding"])
        raise KeyError(f"{shard.path} has no metadata for {fsdp_path}")

    def keys(self) -> list[str]:
        return [*self.slots, *self.plain_keys]

    def shape(self, key: str) -> tuple[int, ...]:
        if key in self.slots:
            return self.slots[key].shape
        return self.shards[0].shape(self.plain_keys[key])

    def read(self, key, dim=None, start=0, stop=None):
        if key in self.plain_keys:
            return self.shards[0].read(self.plain_keys[key], dim, start, stop)
        slot = self.slots[key]
        return narrow(self._flat_range(slot.flat_key, slot.offset, slot.numel).view(slot.shape), dim, start, stop).clone()

    def _flat_range(self, flat_key: str, offset: int, numel: int) -> torch.Tensor:
        """Elements ``offset .. offset + numel`` of the unpadded flat parameter."""
        pieces, chunk_start = [], 0
        for shard, length in self.chunks[flat_key]:
            lo, hi = max(offset, chunk_start), min(offset + numel, chunk_start + length)
            if lo < hi:
                pieces.append(self.flat[shard][flat_key][lo - chunk_start : hi - chunk_start])
            chunk_start += length
        return torch.cat(pieces)


class FSDPSource(PartedSource):
    """FSDP shards of any number of model-parallel parts, readable at any target TP degree."""

    def __init__(self, path: Path):
        files = shard_files(path)
        if not files:
            raise FileNotFoundError(f"no *-model_part-*-shard*.pt files in {path}")
        parts = [FSDPPartReader(files[m]) for m in sorted(files)]
        layout = build_layout(parts)
        super().__init__(config_for_parts(path, parts[0].checkpoint, layout), parts, layout)
