"""Tensor-parallel ranks 1..N-1 as subprocesses that follow rank 0's commands.

Rank 0 (the process that called ``Engine.from_pretrained``) writes one JSON line per command to
each follower's stdin; every rank then runs the same generation loop. A follower exits when told
to or when its stdin closes (rank 0 went away), so no rank outlives its engine.
Followers run ``python -m inference_worker.engine.follower`` with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch



_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding inference_worker/


class Followers:
    def __init__(self, processes: list[subprocess.Popen]):
        self.processes = processes

    @classmethod
    def start(
        cls,
        *,
        path: Path,
        world: int,
        device: torch.device,
        dtype: torch.dtype,
        port: int,
        num_threads: int | None,
        max_batch: int,
        max_batch_tokens: int,
    ) -> Followers:
        options = {
            "path": str(path),
            "device": device.type,
            "dtype": str(dtype).removeprefix("torch."),
            "num_threads": num_threads,
            "max_batch": max_batch,
            "max_batch_tokens": max_batch_tokens,
        }
        processes = []
        for rank in range(1, world):
            env = {
                **os.environ,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(world),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")])),
            }
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "inference_worker.engine.follower", json.dumps(options)],
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    text=True,
                )
            )
        return cls(processes)

    def _send(self, command: dict) -> None:
        line = json.dumps(command) + "\n"
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"tensor-parallel rank exited with code {process.returncode}")
            process.stdin.write(line)
            process.stdin.flush()

    def begin_run(self) -> None:
        """Followers enter the generation loop; rank 0 feeds them requests step by step."""
        self._send({"op": "run"})

    def close(self, timeout: float = 30) -> None:
        for process in self.processes:
            if process.poll() is None:
                try:
                    process.stdin.write(json.dumps({"op": "close"}) + "\n")
                    process.stdin.close()
                except BrokenPipeError:
                    pass
        for process in self.processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def terminate(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()
