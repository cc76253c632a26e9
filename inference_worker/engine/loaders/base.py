"""Reading slices of checkpoint tensors without materialising whole files.

A *part reader* reads named tensors from one file (torch pickle with mmap, or safetensors).
A *tensor source* answers ``read(name, dim, start, stop)`` for the full, unsharded tensors of
the model under canonical Hugging Face names (``decoder.layers.0.fc1.weight``), whatever the
files look like; ``PartedSource`` assembles them from slices stored across several parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open

from ..config import OPTConfig
from .torchfile import load_torch_file


def narrow(t: torch.Tensor, dim: int | None, start: int, stop: int | None) -> torch.Tensor:
    if dim is None:
        return t
    stop = t.shape[dim] if stop is None else stop
    return t.narrow(dim, start, stop - start)


class PartReader(Protocol):
    def keys(self) -> list[str]: ...

    def shape(self, key: str) -> tuple[int, ...]: ...

    def read(self, key: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor: ...


class TorchFileReader:
    """A ``torch.save`` file, memory-mapped; ``state_key`` selects the state dict inside it."""

    def __init__(self, path: Path, state_key: str | None = None):
        self.path = path
        self.checkpoint = load_torch_file(path)
        self.state = self.checkpoint[state_key] if state_key else self.checkpoint

    def keys(self) -> list[str]:
        return [k for k, v in self.state.items() if isinstance(v, torch.Tensor)]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.state[key].shape)

    def read(self, key, dim=None, start=0, stop=None):
        # clone copies only the slice out of the mapped file
        return narrow(self.state[key], dim, start, stop).clone()


class SafetensorsReader:
    """A safetensors file; slices are read straight from disk."""

    def __init__(self, path: Path):
        self.path = path
        self.file = safe_open(str(path), framework="pt")

    def keys(self) -> list[str]:
        return list(self.file.keys())

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.file.get_slice(key).get_shape())

    def read(self, key, dim=None, start=0, stop=None):
        if dim is None:
            return self.file.get_tensor(key)
        view = self.file.get_slice(key)
        stop = view.get_shape()[dim] if stop is None else stop
        index = (slice(None),) * dim + (slice(start, stop),)
        return view[index]


class TensorSource(Protocol):
    config: OPTConfig

    def read(self, name: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Slice ``[start, stop)`` along ``dim`` (None: everything) of the full tensor ``name``."""
        ...


@dataclass(frozen=True)
class Piece:
    """Rows ``start:stop`` (along the split dim) of tensor ``key`` in part ``part``."""

    part: int
    key: str
    start: int
    stop: int


@dataclass(frozen=True)
class PartedTensor:
    """A full tensor stored as consecutive pieces along ``dim``; ``dim`` None means replicated."""

    dim: int | None
    pieces: tuple[Piece, ...]


class PartedSource:
    """Full tensors assembled from pieces spread across part files (metaseq parts, TP ranks)."""

    def __init__(self, config: OPTConfig, parts: list[PartReader], layout: dict[str, PartedTensor]):
        self.config = config
        self.parts = parts
        self.layout = layout

    def read(self, name, dim=None, start=0, stop=None):
        tensor = self.layout[name]
        if tensor.dim is None:
            piece = tensor.pieces[0]
            return self.parts[piece.part].read(piece.key, dim, start, stop)
        if dim is not None and dim != tensor.dim:
            return narrow(self._read_along(tensor, 0, None), dim, start, stop).clone()
        return self._read_along(tensor, start, stop)

    def _read_along(self, tensor: PartedTensor, start: int, stop: int | None) -> torch.Tensor:
        chunks, offset = [], 0
        for piece in tensor.pieces:
            length = piece.stop - piece.start
            lo, hi = max(start, offset), min(stop if stop is not None else offset + length, offset + length)
            if lo < hi:
                a, b = piece.start + lo - offset, piece.start + hi - offset
                chunks.append(self.parts[piece.part].read(piece.key, tensor.dim, a, b))
            offset += length
        if stop is not None and stop > offset:
            raise ValueError(f"slice {start}:{stop} is past the end ({offset}) of the tensor")
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=tensor.dim)
