"""Tensor parallelism on CPU with gloo: several real processes per test."""

import os
import subprocess
import sys

import pytest
import torch

from inference_worker.engine import Engine, Request, SamplingParams
from inference_worker.engine.tp import free_port

from .conftest import PROMPTS, REPO_ROOT, hf_greedy, relative_error
from .tp_logits import IDS, MASK


def run_ranks(world: int, out, checkpoints) -> None:
    port = free_port()
    processes = []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "PYTHONPATH": str(REPO_ROOT),
        }
        command = [sys.executable, "-m", "tests.inference_worker.tp_logits", str(out), *map(str, checkpoints)]
        processes.append(subprocess.Popen(command, env=env, cwd=REPO_ROOT))
    assert [p.wait(timeout=180) for p in processes] == [0] * world


@pytest.mark.parametrize("world", [2, 4])
def test_tp_logits_match_transformers(world, hf_models, hf_dirs, metaseq_dirs, tmp_path):
    """HF directories and 2-part metaseq checkpoints, at TP 2 and 4, with left padding."""
    checkpoints = {(kind, variant): dirs[variant] for kind, dirs in (("hf", hf_dirs), ("metaseq", metaseq_dirs)) for variant in dirs}
    run_ranks(world, tmp_path / "logits.pt", checkpoints.values())
    results = torch.load(tmp_path / "logits.pt")
    real = MASK.bool()
    for (kind, variant), path in checkpoints.items():
        with torch.no_grad():
            expected = hf_models[variant](IDS, attention_mask=MASK).logits
        assert relative_error(results[str(path)][real], expected[real]) < 1e-4, (kind, variant)


@pytest.fixture(scope="module")
def tp2_engine(hf_dirs):
    engine = Engine.from_pretrained(hf_dirs["pre_ln"], tp=2, num_threads=1, max_batch=2, max_batch_tokens=6)
    yield engine
    engine.close()


def test_tp2_engine_greedy_matches_transformers(tp2_engine, hf_models):
    expected = [hf_greedy(hf_models["pre_ln"], p, 16) for p in PROMPTS]
    assert tp2_engine.generate(PROMPTS, max_new_tokens=16) == expected


def test_seeded_sampling_is_identical_across_tp_degrees(tp2_engine, hf_dirs):
    single = Engine.from_pretrained(hf_dirs["pre_ln"])
    for params in (dict(temperature=0.8), dict(temperature=1.0, top_p=0.9), dict(temperature=1.0, top_k=5)):
        requests = [Request(p, SamplingParams(max_tokens=12, seed=21, **params)) for p in PROMPTS]
        expected = [o.completions[0].token_ids for o in single.complete(requests)]
        assert [o.completions[0].token_ids for o in tp2_engine.complete(requests)] == expected, params


def test_tp2_logprobs_and_penalties_match_tp1(tp2_engine, hf_dirs):
    single = Engine.from_pretrained(hf_dirs["pre_ln"])
    params = SamplingParams(max_tokens=8, logprobs=2, echo=True, frequency_penalty=2.0, repetition_penalty=1.3)
    [expected] = single.complete([Request(PROMPTS[2], params)])
    [actual] = tp2_engine.complete([Request(PROMPTS[2], params)])
    assert actual.completions[0].token_ids == expected.completions[0].token_ids
    assert actual.completions[0].logprobs[1:] == pytest.approx(expected.completions[0].logprobs[1:], abs=1e-4)


def test_tp2_cancellation_reaches_every_rank(tp2_engine):
    requests = [Request(p, SamplingParams(max_tokens=10, ignore_eos=True), request_id=str(i)) for i, p in enumerate(PROMPTS)]
    outputs = tp2_engine.complete(requests, on_token=lambda e: e.request_id != "0")
    assert [o.completions[0].finish_reason for o in outputs] == ["cancelled", "length", "length"]
    # the ranks are still in step: a following request works
    assert tp2_engine.generate([PROMPTS[0]], max_new_tokens=3) == [tp2_engine.generate([PROMPTS[0]], max_new_tokens=3)[0]]


def test_tp4_engine_from_two_metaseq_parts(hf_models, metaseq_dirs):
    with Engine.from_pretrained(metaseq_dirs["350m_style"], tp=4, num_threads=1) as engine:
        followers = engine._followers.processes
        result = engine.generate(PROMPTS, max_new_tokens=10)
    assert result == [hf_greedy(hf_models["350m_style"], p, 10) for p in PROMPTS]
    assert [p.wait(timeout=30) for p in followers] == [0, 0, 0]


def test_tp2_serving_engine(hf_models, hf_dirs):
    engine = Engine.from_pretrained(hf_dirs["350m_style"], tp=2, num_threads=1)
    engine.serve(max_len=64)
    futures = [engine.submit(Request(p, SamplingParams(max_tokens=8))) for p in PROMPTS]
    results = [f.result(timeout=120).completions[0].token_ids for f in futures]
    engine.close()
    assert results == [hf_greedy(hf_models["350m_style"], p, 8) for p in PROMPTS]
