"""Megatron-style tensor parallelism: the process group and the parallel layers.

Every layer states its math; ``W`` is the full (unsharded) weight, ``W_r`` rank r's slice.
With ``world == 1`` every collective is a no-op and the layers are plain linears.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TensorParallel:
    """This process's place in the tensor-parallel group (the default process group)."""

    rank: int = 0
    world: int = 1

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(x)
        return x

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Concatenate every rank's ``x`` along ``dim`` in rank order."""
        if self.world == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=dim)

    def broadcast(self, x: torch.Tensor) -> torch.Tensor:
        """Overwrite ``x`` on every rank with rank 0's ``x``."""
        if self.world > 1:
            dist.broadcast(x, src=0)
        return x

    def shard_range(self, size: int) -> tuple[int, int]:
        """[start, stop) of this rank's equal slice of a dimension of ``size``."""
        if size % self.world:
            raise ValueError(f"dimension {size} is not divisible by the TP degree {self.world}")
        step = size // self.world
        return self.rank * step, (self.rank + 1) * step


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def init_process_group(device: torch.device, rank: int, world: int, master: str | None = None) -> TensorParallel:
    """Join (or create) the default group: NCCL on GPU, gloo on CPU.

    ``master`` is ``host:port``; without it the ``MASTER_ADDR``/``MASTER_PORT`` environment is used.
    """
    if world == 1:
        return TensorParallel()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        init_method = f"tcp://{master}" if master else "env://"
        dist.init_process_group(
            backend, init_method=init_method, rank=rank, world_size=world, timeout=timedelta(minutes=30)
        )
    if dist.get_world_size() != world:
        raise RuntimeError(f"process group has {dist.get_world_size()} ranks, expected {world}")
    return TensorParallel(rank=dist.get_rank(), world=world)


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
        return F.linear(x, self.weight, self.bias)


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
        y = self.tp.all_reduce(F.linear(x, self.weight))
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
        return F.linear(h, self.weight)
