"""Hugging Face OPT directories: ``config.json`` plus safetensors or ``.bin``, single or sharded."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import OPTConfig
from .base import PartReader, SafetensorsReader, TorchFileReader

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def is_hf_directory(path: Path) -> bool:
    return (path / "config.json").is_file() and any(
        (path / name).is_file() or (path / f"{name}.index.json").is_file() for name in _WEIGHT_FILES
    )


def canonical_name(key: str) -> str | None:
    """``model.decoder.x`` and ``decoder.x`` both become ``decoder.x``; the tied LM head is dropped."""
    if key == "lm_head.weight":
        return None
    return key.removeprefix("model.")


class HFSource:
    """Full tensors by canonical name, each read from whichever file holds it."""

    def __init__(self, path: Path):
        self.config = OPTConfig.from_hf_dict(json.loads((path / "config.json").read_text()))
        self._readers: dict[Path, PartReader] = {}
        self._where: dict[str, tuple[Path, str]] = {}
        for file in self._weight_files(path):
            reader = self._reader(file)
            for key in reader.keys():
                name = canonical_name(key)
                if name is not None:
                    self._where[name] = (file, key)

    @staticmethod
    def _weight_files(path: Path) -> list[Path]:
        for name in _WEIGHT_FILES:
            index = path / f"{name}.index.json"
            if index.is_file():
                weight_map = json.loads(index.read_text())["weight_map"]
                return sorted({path / file for file in weight_map.values()})
            if (path / name).is_file():
                return [path / name]
        raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin (or index) in {path}")

    def _reader(self, file: Path) -> PartReader:
        if file not in self._readers:
            is_safetensors = file.suffix == ".safetensors"
            self._readers[file] = SafetensorsReader(file) if is_safetensors else TorchFileReader(file)
        return self._readers[file]

    def read(self, name, dim=None, start=0, stop=None):
        file, key = self._where[name]
        return self._reader(file).read(key, dim, start, stop)
