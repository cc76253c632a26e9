"""Tensor-parallel GPU workers: the engine's own ``--tp 2`` and ``torchrun --nproc-per-node 2`` give the
answers of one rank, and no rank outlives its worker."""

import signal
import subprocess

import pytest

from inference_worker import services
from inference_worker.completions import parse_completion_request
from inference_worker.models import PromptJob
from tests.inference_worker.playground import (
    SLUG, gpu_worker, release_from_checkpoint, reset_playground_redis, researcher_with_token, wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)


def answer(user, **body) -> list[int]:
    request = parse_completion_request({"model": SLUG, "prompt": "Tensor parallel inference", "max_tokens": 12,
                                        "temperature": 0.9, "seed": 77, **body})
    job = services.job_submit(user=user, request=request, source=PromptJob.Source.API)
    done = wait_until(lambda: (j := PromptJob.objects.get(pk=job.pk)).status == "succeeded" and j, 60, message="job")
    return done.outputs[0]["token_ids"]


def processes_named(text: str) -> list[str]:
    result = subprocess.run(["pgrep", "-f", text], capture_output=True, text=True)
    return result.stdout.split()


def test_tp_workers_answer_as_one_rank_does_and_leave_no_rank_behind(playground_checkpoint, tmp_path):
    reset_playground_redis()
    release = release_from_checkpoint(playground_checkpoint)
    user, _ = researcher_with_token(release)
    with gpu_worker(playground_checkpoint, tmp_path / "tp1.log"):
        expected = answer(user)
    with gpu_worker(playground_checkpoint, tmp_path / "tp2.log", tp=2, worker_id="tp2-own-ranks") as worker:
        assert answer(user) == expected
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    wait_until(lambda: not processes_named("inference_worker.engine.follower"), 20, message="the follower to exit")
    with gpu_worker(playground_checkpoint, tmp_path / "torchrun.log", tp=2, torchrun=True,
                    worker_id="tp2-torchrun") as launcher:
        assert answer(user) == expected
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=60)
    wait_until(lambda: not processes_named("tp2-torchrun"), 20, message="every torchrun rank to exit")
    reset_playground_redis()
