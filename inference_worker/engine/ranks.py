"""Tensor-parallel ranks 1..N-1 as subprocesses that follow rank 0's commands.

Rank 0 (the process that called ``Engine.from_pretrained``) writes one JSON line per command to
each follower's stdin; every rank then runs the same generation loop. A follower exits when told
to or when its stdin closes (rank 0 went away), so no rank outlives its engine.
Followers run ``python -m inference_worker.engine.follower`` with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT.

Rank 0 fails fast when a follower dies: a thread per follower waits for its process, and the
first unexpected exit is recorded (with the tail of its stderr) and kills the other followers,
which breaks any collective rank 0 is blocked in. Start-up waits on the followers' progress
through the rendezvous store (``announce`` / ``Followers.wait_for``), not on timers, and gloo's
group set-up runs beside the watch (``Followers.while_alive``), so a follower dying inside it is
noticed at once too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding inference_worker/
_STDERR_TAIL = 4000  # characters of a dead follower's stderr quoted in the error
T = TypeVar("T")


class RankExited(RuntimeError):
    """A follower rank exited while its engine still needed it."""


def announce(store: dist.Store, rank: int, stage: str) -> None:
    """Tell rank 0 that this follower has reached ``stage`` of its start-up."""
    store.set(f"{stage}/{rank}", "")


class Followers:
    """The follower processes of one engine, watched from the moment they start."""

    def __init__(self, processes: list[subprocess.Popen], stderr: list):
        self.processes = processes
        self._stderr = stderr  # one temporary file per follower, its stderr
        self._lock = threading.Lock()
        self._stopping = False
        self._failure: str | None = None
        self._failed = threading.Event()
        self._on_failure: list[Callable[[], None]] = []
        for rank, process in enumerate(processes, start=1):
            threading.Thread(target=self._watch, args=(rank, process), name=f"tp-rank-{rank}", daemon=True).start()

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
        processes, stderr = [], []
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
            stderr.append(tempfile.TemporaryFile())
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "inference_worker.engine.follower", json.dumps(options)],
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr[-1],
                    text=True,
                )
            )
        return cls(processes, stderr)

    # -- failure ------------------------------------------------------------------------------

    def _watch(self, rank: int, process: subprocess.Popen) -> None:
        code = process.wait()
        with self._lock:
            if self._stopping or self._failure is not None:
                return
            tail = self._stderr_tail(rank)
            self._failure = f"tensor-parallel rank {rank} exited with code {_exit_status(code)}" + (
                f"; its stderr ends with:\n{tail}" if tail else " and wrote nothing to stderr"
            )
        for other in self.processes:  # they would wait for the dead rank in a collective forever
            other.kill()
        for other in self.processes:
            other.wait()
        for hook in self._on_failure:
            hook()
        self._failed.set()  # only now, so that whoever raises the error has no follower left behind

    def _stderr_tail(self, rank: int) -> str:
        fd = self._stderr[rank - 1].fileno()
        size = os.fstat(fd).st_size
        data = os.pread(fd, _STDERR_TAIL, max(0, size - _STDERR_TAIL))  # leaves the shared offset alone
        return data.decode(errors="replace").strip()

    def on_failure(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (from a watching thread) once a follower has exited unexpectedly."""
        self._on_failure.append(hook)

    def exited(self, wait: float = 0.0) -> bool:
        """Whether a follower has exited unexpectedly, waiting up to ``wait`` seconds for it."""
        return self._failed.wait(wait)

    def error(self) -> RankExited:
        return RankExited(self._failure)

    def check(self) -> None:
        if self._failed.is_set():
            raise self.error()

    def wait_for(self, store: dist.Store, stage: str) -> None:
        """Block until every follower has announced ``stage``; raise as soon as one exits instead."""
        keys = [f"{stage}/{rank}" for rank in range(1, len(self.processes) + 1)]
        while not store.check(keys):
            if self.exited(wait=0.05):
                raise self.error()

    def while_alive(self, call: Callable[[], T]) -> T:
        """``call()``'s result, raising as soon as a follower exits instead of waiting for ``call``.

        ``call`` runs in a daemon thread: a blocking set-up such as gloo's cannot be interrupted, so
        once a follower has died it is left to give up by itself (``tp.CONNECT_TIMEOUT``).
        """
        outcome: dict = {}
        done = threading.Event()

        def run() -> None:
            try:
                outcome["result"] = call()
            except BaseException as error:  # handed to the waiting thread below
                outcome["error"] = error
            finally:
                done.set()

        threading.Thread(target=run, name="tp-set-up", daemon=True).start()
        while not done.wait(0.05):
            if self.exited():
                raise self.error()
        if "error" in outcome:
            if self.exited(wait=5.0):  # the call failed because a follower is dying; say why
                raise self.error() from None
            raise outcome["error"]
        return outcome["result"]

    # -- commands -----------------------------------------------------------------------------

    def _send(self, command: dict) -> None:
        self.check()
        line = json.dumps(command) + "\n"
        for process in self.processes:
            try:
                process.stdin.write(line)
                process.stdin.flush()
            except BrokenPipeError:
                if self.exited(wait=5.0):  # the follower is dying; say why once it is gone
                    raise self.error() from None
                raise

    def begin_run(self) -> None:
        """Followers enter the generation loop; rank 0 feeds them requests step by step."""
        self._send({"op": "run"})

    def close(self, timeout: float = 30) -> None:
        with self._lock:
            self._stopping = True
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
        self._close_files()

    def terminate(self) -> None:
        with self._lock:
            self._stopping = True
        for process in self.processes:
            process.kill()
            process.wait()
        self._close_files()

    def _close_files(self) -> None:
        for file in self._stderr:
            file.close()
        for process in self.processes:
            if process.stdin is not None:
                try:
                    process.stdin.close()
                except BrokenPipeError:
                    pass


def _exit_status(code: int) -> str:
    """``1``, or ``-9 (SIGKILL)`` for a process killed by a signal."""
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)
