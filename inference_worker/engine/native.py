"""Our CPU decode kernels (``cpu_kernels.c``), compiled for this machine on first use.

The shared library is built with the system C compiler (``$CC``, else ``cc``) into
``$GATEHOUSE_CACHE_DIR/native`` (default ``~/.cache/gatehouse/native``), named by a hash of
the source, the flags, the compiler's version and the CPU's feature flags, so a later process
on the same machine loads it without compiling. Where there is no compiler, or the build fails,
``gemv_available`` is false, a warning says why, and the engine keeps oneDNN's kernels.
``GATEHOUSE_NATIVE=0`` turns the kernels off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_kernels.c")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-lm"]
if platform.machine() in ("x86_64", "AMD64"):
    # 256-bit vectors even where AVX-512 is there: on the AVX-512 AMD EPYC development machine
    # 512-bit ones streamed weights from memory 3-5% slower (1.22x the floor against 1.16-1.19x).
    FLAGS.append("-mprefer-vector-width=256")
DTYPES = (torch.float32, torch.bfloat16)
PER_LAYER = 12  # tensors of a layer that the C stack reads (layer_parameters)


def cache_dir() -> Path:
    root = os.environ.get("GATEHOUSE_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gatehouse"
    return Path(root) / "native"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def _build(compiler: str, flags: list[str] = FLAGS) -> Path:
    """Compile ``cpu_kernels.c`` unless this machine's build is cached; the library's path."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(
        "\0".join([SOURCE.read_text(), " ".join(flags), version, _cpu_flags(), platform.machine()]).encode()
    ).hexdigest()[:16]
    library = cache_dir() / f"cpu-kernels-{key}.so"
    if library.exists():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: concurrent processes never load a half-written file.
    fd, partial = tempfile.mkstemp(dir=library.parent, suffix=".so.partial")
    os.close(fd)
    try:
        result = subprocess.run([compiler, *flags, str(SOURCE), "-o", partial], capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(result.stderr.strip() or f"{compiler} exited with {result.returncode}")
        os.replace(partial, library)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return library


@functools.cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get("GATEHOUSE_NATIVE", "1") == "0":
        return None
    compiler = os.environ.get("CC") or "cc"
    try:
        return _bind(ctypes.CDLL(str(_build(compiler))))
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
        log.warning("CPU decode kernels unavailable (%s: %s); using oneDNN's", compiler, error)
        return None


def _bind(library: ctypes.CDLL) -> ctypes.CDLL:
    """``library`` with its functions' argument types declared."""
    pointer, size, count = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    library.gemv_float32.argtypes = [pointer] * 4 + [size, size, count]
    library.gemv_bfloat16.argtypes = [pointer] * 4 + [size, size, count]
    stacks = (library.decoder_stack_float32, library.decoder_stack_bfloat16)
    for stack in stacks:
        stack.argtypes = (
            [pointer, size, pointer, size]  # the token's and the position's embedding
            + [size, size, size, size, ctypes.c_float, pointer, pointer, pointer, size, size, size]
            + [pointer, pointer, pointer, size, pointer, pointer, count]  # final norm, head, logits, scratch
        )
    for function in (library.gemv_float32, library.gemv_bfloat16, *stacks):
        function.restype = None
    return library


def gemv_available(dtype: torch.dtype) -> bool:
    """Whether ``gemv`` can run weights of ``dtype`` here (compiling the kernels on first call)."""
    return dtype in DTYPES and _library() is not None


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` for one row ``x`` (any leading shape of size 1) and a dense
    row-major CPU ``weight`` of the same dtype, float32 or bfloat16."""
    rows, cols = weight.shape
    if x.numel() != cols or x.dtype != weight.dtype or not weight.is_contiguous():
        raise ValueError(f"gemv needs one row of {cols} and a contiguous {weight.dtype} weight")
    if bias is not None and (bias.dtype != weight.dtype or bias.numel() != rows):
        raise ValueError(f"gemv needs a {weight.dtype} bias of {rows}")
    if not (x.device.type == weight.device.type == "cpu") or (bias is not None and bias.device.type != "cpu"):
        raise ValueError("gemv runs on CPU tensors only")
    library = _library()
    x = x.contiguous()
    if bias is not None:
        bias = bias.contiguous()
    bias_pointer = None if bias is None else bias.data_ptr()
    y = torch.empty(*x.shape[:-1], rows, dtype=x.dtype)
    threads = torch.get_num_threads()
    function = library.gemv_float32 if weight.dtype == torch.float32 else library.gemv_bfloat16
    function(weight.data_ptr(), x.data_ptr(), bias_pointer, y.data_ptr(), rows, cols, threads)
    return y


def layer_parameters(layer: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """A pre-LN ``model.DecoderLayer``'s tensors in the order the C stack reads them, checked:
    dense, contiguous, on the CPU, all float32 or all bfloat16."""
    attention, mlp = layer.self_attn, layer.mlp
    dtype = attention.qkv.weight.dtype
    hidden, ffn = attention.out_proj.weight.shape[0], mlp.fc1.weight.shape[0]
    shapes = [(hidden,)] * 2 + [(3 * hidden, hidden), (3 * hidden,), (hidden, hidden), (hidden,)]
    shapes += [(hidden,)] * 2 + [(ffn, hidden), (ffn,), (hidden, ffn), (hidden,)]
    tensors = (
        layer.self_attn_layer_norm.weight,
        layer.self_attn_layer_norm.bias,
        attention.qkv.weight,
        attention.qkv.bias,
        attention.out_proj.weight,
        attention.out_proj.bias,
        layer.final_layer_norm.weight,
        layer.final_layer_norm.bias,
        mlp.fc1.weight,
        mlp.fc1.bias,
        mlp.fc2.weight,
        mlp.fc2.bias,
    )
    for tensor, shape in zip(tensors, shapes):
        if not (tensor is not None and tensor.shape == shape and _readable(tensor, dtype)):
            raise ValueError(
                f"the C decoder stack needs dense contiguous CPU tensors of shapes {shapes}, "
                "all float32 or all bfloat16"
            )
    return tensors


def _readable(tensor: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether the C kernels can read ``tensor`` through its address as an array of ``dtype``."""
    return (
        tensor.dtype == dtype in DTYPES
        and tensor.device.type == "cpu"
        and not tensor.is_mkldnn
        and tensor.is_contiguous()
    )


class DecoderStack:
    """One decode step of a pre-LN OPT model at TP 1 for one sequence, as one C call: the
    token's and position's embeddings; for each layer its layer norms, q/k/v, the new key and
    value written to the cache, attention, out_proj, fc1, ReLU and fc2 with their residuals;
    then the final layer norm and the LM head; between the barriers of one OpenMP region,
    instead of some forty PyTorch operations per layer.

    Everything is float32, or everything bfloat16 (activations then rounded to bfloat16 after
    each operation, as PyTorch's bfloat16 layers do). The weights are checked once, here, and
    their addresses kept: the stack holds the tensors (not the parameters), so their memory
    lives as long as it does.
    """

    def __init__(
        self,
        layers: list[torch.nn.Module],
        embed: torch.Tensor,
        positions: torch.Tensor,
        position_offset: int,
        final_norm: tuple[torch.Tensor, torch.Tensor],
        head: torch.Tensor,
        eps: float,
    ):
        self._tensors = [tuple(t.detach() for t in layer_parameters(layer)) for layer in layers]
        self.dtype, self.hidden = embed.dtype, embed.shape[1]
        self.ffn = self._tensors[0][8].shape[0]  # fc1.weight: (ffn, hidden)
        for tensors in self._tensors:
            if tensors[0].dtype != self.dtype or tensors[0].shape != (self.hidden,) or tensors[8].shape[0] != self.ffn:
                raise ValueError(f"every layer must be {self.dtype} of width {self.hidden}, like the embedding")
        tables = {"the embedding": embed, "the position table": positions, "the LM head": head}
        vectors = {"the final layer norm": final_norm[0], "its bias": final_norm[1]}
        for name, tensor in {**tables, **vectors}.items():
            rank = 2 if name in tables else 1
            if not _readable(tensor, self.dtype) or tensor.dim() != rank or tensor.shape[-1] != self.hidden:
                raise ValueError(f"{name} must be a dense contiguous {self.dtype} CPU tensor of width {self.hidden}")
        self._embed, self._positions, self._head = embed.detach(), positions.detach(), head.detach()
        self._final_norm = tuple(t.detach() for t in final_norm)
        self.position_offset, self.eps = position_offset, eps
        self._addresses = (ctypes.c_int64 * (len(self._tensors) * PER_LAYER))(
            *(t.data_ptr() for p in self._tensors for t in p)
        )
        library = _library()
        float32 = self.dtype == torch.float32
        self._function = library.decoder_stack_float32 if float32 else library.decoder_stack_bfloat16

    def step(
        self, token: int, position: int, keys: torch.Tensor, values: torch.Tensor, cache_position: int
    ) -> torch.Tensor:
        """The logits (vocab,) after ``token`` at ``position`` (the position embedding's index),
        attending to ``keys``/``values``: the sequence's cache slot, (layers, heads, max_len,
        head_dim), where the new key and value are written at ``cache_position``."""
        layers, heads, max_len, head_dim = keys.shape
        if not 0 <= cache_position < max_len:
            raise IndexError(f"cache position {cache_position} is outside the slot's {max_len}")
        if not 0 <= position + self.position_offset < self._positions.shape[0]:
            raise IndexError(f"position {position} is outside the position table")
        if not 0 <= token < self._embed.shape[0]:
            raise IndexError(f"token {token} is outside the vocabulary of {self._embed.shape[0]}")
        fits = layers == len(self._tensors) and heads * head_dim == self.hidden
        if not fits or not keys.dtype == values.dtype == self.dtype:
            raise ValueError(f"the cache slot must be {self.dtype}, {len(self._tensors)} layers of width {self.hidden}")
        if keys.stride() != values.stride() or keys.stride()[1:] != (max_len * head_dim, head_dim, 1):
            raise ValueError("each layer's cache slot must be contiguous, the same in keys and values")
        logits = torch.empty(self._head.shape[0], dtype=self.dtype)
        scratch = torch.empty(6 * self.hidden + self.ffn + heads * max_len)
        self._function(
            self._embed.data_ptr(),
            token,
            self._positions.data_ptr(),
            position + self.position_offset,
            layers,
            self.hidden,
            heads,
            self.ffn,
            self.eps,
            self._addresses,
            keys.data_ptr(),
            values.data_ptr(),
            keys.stride(0),
            max_len,
            cache_position,
            self._final_norm[0].data_ptr(),
            self._final_norm[1].data_ptr(),
            self._head.data_ptr(),
            self._head.shape[0],
            logits.data_ptr(),
            scratch.data_ptr(),
            torch.get_num_threads(),
        )
        return logits
