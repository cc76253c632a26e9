"""FSDP flat parameters: a part's tensors read out of ``flat_param_*`` vectors by ``shard_metadata``.

fairscale's FSDP flattens each wrapped module's parameters into one vector and, on ``n`` ranks,
stores the s-th chunk of it (padded at its end, ``padding`` elements) in shard ``s``, with the
names, shapes and numels in ``shard_metadata``. A tensor is rebuilt by reading only its own element
range from the memory-mapped shards, so consolidation never holds more than one tensor at a time
(metaseq's own tool needs twice the model in RAM). One file with the whole flat vector (OPT's May
2022 ``reshard-model_part-{i}.pt``, 66b's ``reshard-model_part-{i}-shard0.pt``) is one shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .base import PartReader, TorchFileReader, narrow

_WRAPPERS = ("_fsdp_wrapped_module.", "_fpw_module.")


def clean_name(name: str) -> str:
    """A name without FSDP's wrapper modules (as fairscale's ``_clean_path`` writes it)."""
    for wrapper in _WRAPPERS:
        name = name.replace(wrapper, "")
    return name


def is_flat(key: str) -> bool:
    return clean_name(key).rsplit(".", 1)[-1].startswith("flat_param")


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
        for shard in self.shards:
            if not (shard.checkpoint.get("shard_metadata") or {}).get("param_metadata"):
                raise ValueError(
                    f"{shard.path} holds FSDP-flat parameters but no shard_metadata to unflatten them with"
                )
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


def part_reader(files: list[Path]) -> PartReader:
    """One model part's files as named tensors: FSDP-flat shards, or one file of whole tensors."""
    first = TorchFileReader(files[0], state_key="model")
    if any(is_flat(k) for k in first.keys()):
        return FSDPPartReader(files)
    if len(files) > 1:
        raise ValueError(f"{files[0]} holds whole tensors, not FSDP-flat ones, but has {len(files)} shards")
    return first
