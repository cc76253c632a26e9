"""Loading ``torch.save`` checkpoints memory-mapped, including metaseq's pickled configs.

``weights_only=True`` is tried first. metaseq files may pickle their ``cfg`` as an omegaconf or
metaseq object; those classes are rebuilt as inert records (no code of theirs runs and neither
package needs to be installed) by a restricted unpickler that allows nothing else beyond tensors,
plain containers and the NumPy numbers a trainer's ``extra_state`` holds (a loss, a meter's value).
"""

from __future__ import annotations

import argparse
import codecs
import collections
import pickle
import types
from pathlib import Path
from typing import Any

import torch

_CONFIG_PACKAGES = {"omegaconf", "metaseq", "fairseq", "fairscale", "enum"}
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("argparse", "Namespace"): argparse.Namespace,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
}


_NUMERIC_KINDS = "biufc"  # bool, signed and unsigned integers, floats, complex


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """How pickle protocol 2 (``torch.save``'s) spells bytes: ``_codecs.encode(text, "latin1")``."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"refusing to encode checkpoint text as {encoding!r}")
    return codecs.encode(text, "latin1")


def _numpy_dtype(*args: Any) -> Any:
    import numpy

    return numpy.dtype(*args)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """A NumPy number rebuilt from its raw bytes; any other kind of scalar (an object) is refused."""
    import numpy

    if not isinstance(dtype, numpy.dtype) or dtype.kind not in _NUMERIC_KINDS or not isinstance(data, bytes):
        raise pickle.UnpicklingError(f"refusing to load a numpy scalar of dtype {dtype!r} from a checkpoint")
    return numpy.frombuffer(data, dtype=dtype, count=1)[0]


_NUMPY_GLOBALS = {
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class Record:
    """Stand-in for a pickled config object: keeps its constructor args and state."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.state = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __reduce__(self):  # pragma: no cover - records are never re-pickled
        raise pickle.PicklingError("checkpoint config records are read-only")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if (module, name) in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[(module, name)]
        if module.split(".")[0] in _CONFIG_PACKAGES:
            return type(name, (Record,), {"__module__": module})
        if module.startswith("torch") and (
            name.startswith("_rebuild") or name.endswith("Storage") or isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a checkpoint")


_restricted_pickle = types.SimpleNamespace(Unpickler=_RestrictedUnpickler, load=pickle.load, __name__="restricted")


def load_torch_file(path: Path) -> Any:
    """The unpickled checkpoint with tensors memory-mapped from the file (read lazily)."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except pickle.UnpicklingError:
            pass
    return torch.load(path, map_location="cpu", mmap=True, weights_only=False, pickle_module=_restricted_pickle)


def plain(obj: Any) -> Any:
    """A config object (dict, Namespace, omegaconf record) as plain dicts, lists and scalars."""
    if isinstance(obj, argparse.Namespace):
        return plain(vars(obj))
    if isinstance(obj, Record):
        state = obj.state
        if isinstance(state, tuple):  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            if "_content" in state:
                return plain(state["_content"])
            if "_val" in state:
                return plain(state["_val"])
            return plain(state)
        return plain(obj.args[0]) if obj.args else None
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj
