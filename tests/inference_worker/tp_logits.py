"""One tensor-parallel rank computing full logits for a left-padded batch (run by test_tp.py).

Usage: RANK=r WORLD_SIZE=n MASTER_ADDR=... MASTER_PORT=... python -m tests.inference_worker.tp_logits OUT DIR...
"""

import sys
from pathlib import Path

import torch

from inference_worker.engine.loaders import load_model
from inference_worker.engine.tp import exit_rank, join_torchrun, leave_torchrun

IDS = torch.tensor([[1, 1, 1, 2, 50, 60, 70, 80], [2, 9, 8, 7, 6, 5, 4, 999]])
MASK = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [1] * 8])


def main() -> None:
    torch.set_num_threads(1)
    out, checkpoints = Path(sys.argv[1]), sys.argv[2:]
    cpu = torch.device("cpu")
    tp = join_torchrun(cpu)
    results = {}
    for checkpoint in checkpoints:
        model = load_model(Path(checkpoint), tp, cpu, torch.float32)
        with torch.no_grad():
            results[checkpoint] = tp.all_gather(model(IDS, MASK), dim=-1)
    if tp.rank == 0:
        torch.save(results, out)
    leave_torchrun(tp)


if __name__ == "__main__":
    main()
    exit_rank(0)
