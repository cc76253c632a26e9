"""Entry point of a follower rank started by ``ranks.Followers`` (not imported by the package)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from .engine import Engine, resolve_dtype
from .ranks import announce
from .tp import connect, exit_rank, rendezvous


def follow() -> None:
    """A follower rank: load this rank's slice, then run what rank 0 sends until told to stop."""
    options = json.loads(sys.argv[1])
    if options["num_threads"]:
        torch.set_num_threads(options["num_threads"])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = torch.device(options["device"])
    if device.type == "cuda":
        device = torch.device("cuda", rank)
    store = rendezvous(rank, world, os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
    announce(store, rank, "connecting")
    group = connect(device, rank, world, store)
    engine = Engine.build(
        Path(options["path"]),
        group,
        device,
        resolve_dtype(options["dtype"]),
        max_batch=options["max_batch"],
        max_batch_tokens=options["max_batch_tokens"],
    )
    announce(store, rank, "loaded")
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "close":
                break
            engine._run(poll=None, max_len=0)  # requests arrive from rank 0 at each step
    finally:
        engine.close()


if __name__ == "__main__":
    follow()
    exit_rank(0)
