"""Megatron-style tensor parallelism: the process group and the parallel layers.

Every layer states its math; ``W`` is the full (unsharded) weight, ``W_r`` rank r's slice.
With ``world == 1`` every collective is a no-op and the layers are plain linears.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from . import native


@dataclass(frozen=True, eq=False)
class TensorParallel:
    """This process's place in its tensor-parallel group; ``group`` is None when alone.

    Collectives go through the group object itself, so an engine's group is private to it
    (several engines may live in one process) and torch.distributed's global state is only
    used under torchrun.
    """

    rank: int = 0
    world: int = 1
    group: dist.ProcessGroup | None = None
    store: dist.Store | None = None

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            self.group.allreduce([x], _timed(dist.AllreduceOptions())).wait()
        return x

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Concatenate every rank's ``x`` along ``dim`` in rank order."""
        if self.world == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        self.group.allgather([parts], [x.contiguous()], _timed(dist.distributed_c10d.AllgatherOptions())).wait()
        return torch.cat(parts, dim=dim)

    def broadcast(self, x: torch.Tensor) -> torch.Tensor:
        """Overwrite ``x`` on every rank with rank 0's ``x``."""
        if self.world > 1:
            options = _timed(dist.BroadcastOptions())
            options.rootRank = 0
            self.group.broadcast([x], options).wait()
        return x

    def release(self) -> None:
        """Drop this object's hold on its group: a group object that outlives its peers or
        ``destroy_process_group`` can abort the process at exit."""
        object.__setattr__(self, "group", None)
        object.__setattr__(self, "store", None)

    def abort(self) -> None:
        """Make collectives that wait for a dead peer return. NCCL kernels would wait forever;
        gloo's fail by themselves once the peer's sockets close (and its abort does not stop them)."""
        group = self.group
        if group is not None and group.name().lower() == "nccl":
            group.abort()

    def shard_range(self, size: int) -> tuple[int, int]:
        """[start, stop) of this rank's equal slice of a dimension of ``size``."""
        if size % self.world:
            raise ValueError(f"dimension {size} is not divisible by the TP degree {self.world}")
        step = size // self.world
        return self.rank * step, (self.rank + 1) * step


GROUP_TIMEOUT = timedelta(minutes=30)  # how long a collective waits for a slow peer
# How long setting up a private group waits for its peers. Each announced that it was connecting
# just before, so this runs out only when one died on the way; the collectives get GROUP_TIMEOUT.
CONNECT_TIMEOUT = timedelta(seconds=60)


def _timed(options):
    """Collective ``options`` that wait up to GROUP_TIMEOUT, whatever the group's own timeout."""
    options.timeout = GROUP_TIMEOUT
    return options


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def rendezvous(rank: int, world: int, host: str, port: int) -> dist.Store:
    """The store where the ranks of a private group meet, hosted by rank 0 at ``host:port``.

    Rank 0 does not wait here for the others to connect: it watches them arrive instead, so that
    it notices one that dies on the way (``ranks.Followers.wait_for``).
    """
    return dist.TCPStore(host, port, world, is_master=rank == 0, timeout=GROUP_TIMEOUT, wait_for_workers=False)


def connect(device: torch.device, rank: int, world: int, store: dist.Store) -> TensorParallel:
    """A private group of ``world`` ranks meeting at ``store``: NCCL on GPU, gloo on CPU."""
    if world == 1:
        return TensorParallel()
    if device.type == "cuda":
        group = dist.ProcessGroupNCCL(store, rank, world)
    else:
        group = dist.ProcessGroupGloo(store, rank, world, CONNECT_TIMEOUT)
    return TensorParallel(rank=rank, world=world, group=group, store=store)


def join_torchrun(device: torch.device) -> TensorParallel:
    """This torchrun rank in the default group (created here unless it already exists)."""
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=GROUP_TIMEOUT)
    return TensorParallel(dist.get_rank(), dist.get_world_size(), dist.distributed_c10d._get_default_group())


def leave_torchrun(tp: TensorParallel) -> None:
    """Leave torchrun's default group together and let it be destroyed now; a group object still
    referenced at interpreter exit aborts the process ("terminate called without an active
    exception")."""
    if dist.is_initialized():
        dist.barrier()
        tp.release()
        dist.destroy_process_group()


def exit_rank(code: int) -> NoReturn:
    """End a rank process whose work is done (its group left or released), skipping interpreter
    teardown.

    gloo's run-loop thread may still be freeing the last collectives' tensors, which takes the GIL;
    a thread that asks for it while the interpreter finalises aborts the process ("terminate
    called without an active exception"), and torchrun then reports a failure after a good run.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias``, for a weight laid out by ``pack_for_cpu`` (or left dense).

    On the CPU a single row with a dense weight goes through our matrix-vector kernel
    (``native.gemv``) where it is built; other dense rows through oneDNN, which takes dense
    weights as well (as fast as packed ones for a prefill's GEMMs), where it has the dtype."""
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    if x.device.type == "cpu":
        if x.numel() == x.shape[-1] and weight.is_contiguous() and native.gemv_available(weight.dtype):
            return native.gemv(x, weight, bias)
        if onednn_packs(weight.dtype):
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


@functools.cache
def onednn_packs(dtype: torch.dtype) -> bool:
    """Whether this PyTorch build's oneDNN has CPU linear kernels for ``dtype``."""
    if not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.float32:
        return True
    return dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def cpu_weight_layout(dtype: torch.dtype, max_batch: int) -> str:
    """How CPU linear weights of ``dtype`` are stored for an engine running up to ``max_batch``
    sequences: ``"onednn"`` (packed) or ``"dense"`` (row-major).

    Measured on the development machines: oneDNN's packed kernels are the fastest for batched
    steps and prefill everywhere (MKL, what ``F.linear`` calls, takes slow generic paths on AMD).
    A one-sequence decode step is matrix-vector products bound by memory bandwidth, and there our
    own kernel on dense weights reads them faster than oneDNN (a median 1.03-1.09x the measured
    bandwidth's floor against 1.39-1.59x, AMD EPYC with AVX-512), so an engine for one sequence
    at a time gets dense weights where the kernel builds. ``GATEHOUSE_CPU_WEIGHTS=onednn|dense`` overrides.
    """
    forced = os.environ.get("GATEHOUSE_CPU_WEIGHTS", "")
    if forced not in ("", "onednn", "dense"):
        raise ValueError(f"GATEHOUSE_CPU_WEIGHTS must be 'onednn' or 'dense', not {forced!r}")
    if not onednn_packs(dtype):
        return "dense"
    if forced:
        return forced
    return "dense" if max_batch == 1 and native.gemv_available(dtype) else "onednn"


def _packed(weight: torch.Tensor) -> torch.Tensor:
    # No batch-size hint: on the AMD machine the layout oneDNN picks for a hint of 1 read float32
    # weights at 44 GB/s in decode and made prefill slower; its default layout, 64 GB/s.
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


def pack_for_cpu(model: nn.Module, max_batch: int) -> None:
    """Lay out every CPU linear weight for the kernels ``cpu_weight_layout`` picks for batches of
    up to ``max_batch`` sequences.

    Packed oneDNN weights are opaque tensors that only ``linear`` reads, so with them the
    embedding keeps its dense table for lookups and the tied LM head gets a packed copy
    (``head``); dense weights serve both.
    """
    owned = set()
    for module in model.modules():
        if isinstance(module, (ColumnParallelLinear, RowParallelLinear)):
            weight = module.weight
            if weight.device.type == "cpu" and cpu_weight_layout(weight.dtype, max_batch) == "onednn":
                module.weight = nn.Parameter(_packed(weight), requires_grad=False)
                owned.add(id(module.weight))
        elif isinstance(module, VocabParallelEmbedding):
            weight = module.weight
            if weight.device.type == "cpu" and cpu_weight_layout(weight.dtype, max_batch) == "onednn":
                module.head = _packed(weight)
    # Loaders map checkpoint files, and a mapping lives as long as any tensor views it: own every
    # other tensor too, or a few biases would keep the whole file mapped beside the copies.
    for parameter in model.parameters():
        if id(parameter) not in owned and parameter.device.type == "cpu":
            parameter.data = parameter.data.contiguous().clone()


class ColumnParallelLinear(nn.Module):
    """``y_r = x @ W_r.T + b_r``; W split on out_features, so each rank holds a slice of y.

    Used for q/k/v (one fused GEMM: W_r stacks rank r's q, k and v rows) and fc1.
    """

    def __init__(self, in_features: int, out_features: int, tp: TensorParallel, bias: bool = True):
        super().__init__()
        if out_features % tp.world:
            raise ValueError(f"out_features {out_features} is not divisible by the TP degree {tp.world}")
        self.weight = nn.Parameter(torch.empty(out_features // tp.world, in_features))
        self.bias = nn.Parameter(torch.empty(out_features // tp.world)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class RowParallelLinear(nn.Module):
    """``y = all_reduce(x_r @ W_r.T) + b``; W split on in_features, b replicated and added once.

    Takes the slice of x a column-parallel layer produced; used for out_proj and fc2.
    """

    def __init__(self, in_features: int, out_features: int, tp: TensorParallel, bias: bool = True):
        super().__init__()
        if in_features % tp.world:
            raise ValueError(f"in_features {in_features} is not divisible by the TP degree {tp.world}")
        self.tp = tp
        self.weight = nn.Parameter(torch.empty(out_features, in_features // tp.world))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp.world == 1:
            return linear(x, self.weight, self.bias)
        y = self.tp.all_reduce(linear(x, self.weight))
        return y + self.bias if self.bias is not None else y


def padded_vocab(vocab_size: int, world: int) -> int:
    """Vocabulary rounded up so every rank holds an equal slice (extra rows are never produced)."""
    return -(-vocab_size // world) * world


class VocabParallelEmbedding(nn.Module):
    """``e = all_reduce(E_r[ids - start_r] if start_r <= ids < stop_r else 0)``; E split on vocab rows.

    The same ``E_r`` is the tied LM head: ``logits_r = h @ E_r.T`` gives rank r's vocabulary slice,
    so logits never need to be gathered to pick a greedy or Gumbel-max token.
    """

    def __init__(self, vocab_size: int, dim: int, tp: TensorParallel):
        super().__init__()
        self.tp = tp
        self.vocab_size = vocab_size
        self.rows_per_rank = padded_vocab(vocab_size, tp.world) // tp.world
        self.start = tp.rank * self.rows_per_rank
        self.weight = nn.Parameter(torch.empty(self.rows_per_rank, dim))
        self.head: torch.Tensor | None = None  # E_r packed for the LM head by ``pack_for_cpu``

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.tp.world == 1:
            return F.embedding(ids, self.weight)
        local = ids - self.start
        outside = (local < 0) | (local >= self.rows_per_rank)
        e = F.embedding(local.masked_fill(outside, 0), self.weight)
        e = e.masked_fill(outside.unsqueeze(-1), 0.0)
        return self.tp.all_reduce(e)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Rank r's slice of the LM head output, ids ``start_r .. start_r + rows_per_rank``."""
        return linear(h, self.weight if self.head is None else self.head)
