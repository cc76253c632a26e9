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
    """``x @ weight.T + bias``, for a dense weight or one packed by ``pack_for_cpu``.

    A single row with a dense float32 CPU weight goes through BLAS's matrix-vector product, which
    reads column-major weights fastest. Other dtypes take ``F.linear``: dense bfloat16 weights are
    only left where oneDNN has no bfloat16 kernels, and there ``torch.mv`` read them at 1.4-2.1 GB/s
    against ``F.linear``'s 13-19 (AMD EPYC with AVX2 only)."""
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    if x.device.type == "cpu" and weight.dtype == torch.float32 and x.numel() == x.shape[-1]:
        vector = x.reshape(-1)
        y = torch.mv(weight, vector) if bias is None else torch.addmv(bias, weight, vector)
        return y.view(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight, bias)


def onednn_packs(dtype: torch.dtype) -> bool:
    """Whether this PyTorch build's oneDNN has CPU linear kernels for ``dtype``."""
    if not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.float32:
        return True
    return dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@functools.cache
def cpu_vendor() -> str:
    """The CPU's vendor id (``GenuineIntel``, ``AuthenticAMD``...), or "" where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_weight_layout(dtype: torch.dtype, max_batch: int) -> str:
    """How CPU linear weights of ``dtype`` are stored for an engine running up to ``max_batch``
    sequences: ``"onednn"`` (packed) or ``"blas"`` (dense).

    Measured on the development machines: oneDNN's kernels are the faster for batched steps and
    prefill everywhere, and for everything on AMD, where MKL (Intel's BLAS, what ``F.linear`` and
    ``torch.mv`` call) takes slow generic paths (17-30 GB/s where oneDNN reads 64 on an AVX-512
    EPYC; on an AVX2-only one oneDNN still reads the LM head fastest). On Intel,
    MKL's float32 matrix-vector product decodes a single sequence about 10% faster than oneDNN,
    whose GEMMs serve batches 10-20% faster: so an engine for one sequence at a time gets MKL
    there, as oneDNN's own batch-size hint picks a layout for the batches to come.
    ``GATEHOUSE_CPU_WEIGHTS=onednn|blas`` overrides the choice.
    """
    forced = os.environ.get("GATEHOUSE_CPU_WEIGHTS", "")
    if forced not in ("", "onednn", "blas"):
        raise ValueError(f"GATEHOUSE_CPU_WEIGHTS must be 'onednn' or 'blas', not {forced!r}")
    if not onednn_packs(dtype):
        return "blas"
    if forced:
        return forced
    single = max_batch == 1 and dtype == torch.float32 and cpu_vendor() == "GenuineIntel"
    return "blas" if single else "onednn"


def _packed(weight: torch.Tensor) -> torch.Tensor:
    # No batch-size hint: on the AMD machine the layout oneDNN picks for a hint of 1 read float32
    # weights at 44 GB/s in decode and made prefill slower; its default layout, 64 GB/s.
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


def _for_blas(weight: torch.Tensor) -> torch.Tensor:
    # Tall float32 weights (q/k/v, fc1, the LM head) column-major: MKL's matrix-vector product
    # streams their long columns faster (on the Intel machine 10-11 GB/s became 17-25 GB/s);
    # square and wide ones, and bfloat16, read as fast or faster row-major.
    if weight.dtype == torch.float32 and weight.shape[0] > weight.shape[1]:
        return weight.detach().t().contiguous().t()
    return weight.detach().clone()


def pack_for_cpu(model: nn.Module, max_batch: int) -> None:
    """Lay out every CPU linear weight for the kernels ``cpu_weight_layout`` picks for batches of
    up to ``max_batch`` sequences.

    Batch-1 decode is matrix-vector products bound by memory bandwidth, and the layout decides
    how much of it a kernel uses. Packed oneDNN weights are opaque tensors that only ``linear``
    reads, so the embedding keeps its dense table for lookups and the tied LM head gets a packed
    copy (``head``); for BLAS the table itself is relaid, as lookups read either layout.
    """
    owned = set()
    for module in model.modules():
        if isinstance(module, (ColumnParallelLinear, RowParallelLinear)):
            weight = module.weight
            if weight.device.type == "cpu":
                layout = cpu_weight_layout(weight.dtype, max_batch)
                relaid = _packed(weight) if layout == "onednn" else _for_blas(weight)
                module.weight = nn.Parameter(relaid, requires_grad=False)
                owned.add(id(module.weight))
        elif isinstance(module, VocabParallelEmbedding):
            weight = module.weight
            if weight.device.type == "cpu":
                if cpu_weight_layout(weight.dtype, max_batch) == "onednn":
                    module.head = _packed(weight)
                else:  # lookups read a column-major table as well
                    module.weight = nn.Parameter(_for_blas(weight), requires_grad=False)
                    owned.add(id(module.weight))
    # Loaders map checkpoint files, and a mapping lives as long as any tensor views it: own the
    # other tensors too, or a few biases would keep the whole file mapped beside the copies.
    for parameter in model.parameters():
        if id(parameter) not in owned and parameter.device.type == "cpu":
            parameter.data = parameter.data.clone()


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
