"""Write any supported checkpoint as the directory that loads fastest: one safetensors file per
TP rank holding exactly that rank's parameters, plus ``config.json`` and the tokenizer files.

Tensors are read and written one at a time (the safetensors header is computed up front from
the shapes), so memory stays bounded by the largest single tensor, whatever the model size.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from .loaders import open_source
from .loaders.converted import FORMAT, rank_file
from .loaders.layout import local_slices
from .model import OPT
from .tokenizer import tokenizer_files
from .tp import TensorParallel

_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def write_safetensors_streaming(
    path: Path, shapes: dict[str, tuple[int, ...]], dtype: torch.dtype, tensor: Callable[[str], torch.Tensor], progress
) -> None:
    """Write a safetensors file whose tensors are produced one by one by ``tensor(name)``."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = itemsize
        for d in shape:
            size *= d
        header[name] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for name, shape in shapes.items():
            t = tensor(name).to(dtype).contiguous()
            if tuple(t.shape) != tuple(shape):
                raise ValueError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")
            f.write(t.view(-1).view(torch.uint8).numpy().tobytes())
            progress.update(1)


def convert(input_path: Path, output_path: Path, tp: int = 1, dtype: torch.dtype | None = None) -> Path:
    """Convert ``input_path`` (any supported format) for loading at TP degree ``tp``."""
    input_path, output_path = Path(input_path), Path(output_path)
    source = open_source(input_path)
    config = source.config
    if dtype is None:
        dtype = source.read("decoder.embed_positions.weight", 0, 0, 1).dtype
    output_path.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        shapes = [{k: tuple(v.shape) for k, v in OPT(config, TensorParallel(r, tp)).state_dict().items()} for r in range(tp)]
    with tqdm(total=sum(len(s) for s in shapes), desc="convert", unit="tensor") as progress:
        for rank in range(tp):
            slices = local_slices(config, TensorParallel(rank, tp))

            def read(name: str) -> torch.Tensor:
                parts = [source.read(s.name, s.dim, s.start, s.stop) for s in slices[name]]
                t = parts[0] if len(parts) == 1 else torch.cat(parts)
                rows = shapes[rank][name][0]
                if t.shape[0] < rows:  # vocabulary padding of the last rank
                    t = torch.cat([t, t.new_zeros(rows - t.shape[0], *t.shape[1:])])
                return t

            write_safetensors_streaming(output_path / rank_file(rank, tp), shapes[rank], dtype, read, progress)
    meta = {**config.to_hf_dict(), "torch_dtype": str(dtype).removeprefix("torch."), "gatehouse": {"format": FORMAT, "tp": tp}}
    (output_path / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    for file in tokenizer_files(input_path):
        shutil.copyfile(file, output_path / file.name)
    return output_path
