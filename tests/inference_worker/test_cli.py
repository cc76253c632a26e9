"""The command line contract: ``python -m inference_worker generate|convert``."""

import json

import pytest

from inference_worker.engine.tokenizer import OPTTokenizer
from inference_worker.engine.tp import free_port

from .conftest import PROMPTS, hf_greedy, run_cli


def generate(checkpoint, *args, runner=("-m", "inference_worker")):
    result = run_cli(*runner, "generate", "--checkpoint", str(checkpoint), "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result


def test_generate_prompt_ids_json(hf_models, hf_dirs):
    prompt = PROMPTS[0]
    out, _ = generate(hf_dirs["pre_ln"], "--prompt-ids", ",".join(map(str, prompt)), "--max-new-tokens", "9")
    expected = hf_greedy(hf_models["pre_ln"], prompt, 9)
    assert out["token_ids"] == expected
    assert out["text"] == OPTTokenizer.from_directory(hf_dirs["pre_ln"]).decode(expected)


def test_generate_text_prompt_prepends_eos(hf_models, hf_dirs):
    tokenizer = OPTTokenizer.from_directory(hf_dirs["350m_style"])
    prompt = tokenizer.encode("Hello world!")
    assert prompt[0] == 2
    out, _ = generate(hf_dirs["350m_style"], "--prompt", "Hello world!", "--max-new-tokens", "6")
    assert out["token_ids"] == hf_greedy(hf_models["350m_style"], prompt, 6)


def test_generate_tp2_from_metaseq_parts_is_seed_reproducible(hf_models, metaseq_dirs):
    prompt = ",".join(map(str, PROMPTS[2]))
    greedy, _ = generate(metaseq_dirs["pre_ln"], "--tp", "2", "--prompt-ids", prompt, "--max-new-tokens", "8")
    assert greedy["token_ids"] == hf_greedy(hf_models["pre_ln"], PROMPTS[2], 8)
    sampling = ("--prompt-ids", prompt, "--max-new-tokens", "8", "--temperature", "1", "--top-p", "0.9", "--seed", "4")
    at_tp2, _ = generate(metaseq_dirs["pre_ln"], "--tp", "2", *sampling)
    at_tp1, _ = generate(metaseq_dirs["pre_ln"], *sampling)
    assert at_tp2 == at_tp1


def test_generate_under_torchrun_prints_once(hf_models, hf_dirs):
    runner = ("-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
              "-m", "inference_worker")
    out, result = generate(hf_dirs["pre_ln"], "--prompt-ids", "2,5,600", "--max-new-tokens", "7", runner=runner)
    assert out["token_ids"] == hf_greedy(hf_models["pre_ln"], [2, 5, 600], 7)
    assert result.stdout.count("token_ids") == 1


def test_convert_then_generate_from_the_converted_directory(hf_models, metaseq_dirs, tmp_path):
    out_dir = tmp_path / "converted"
    result = run_cli(
        "-m", "inference_worker", "convert", "--input", str(metaseq_dirs["350m_style"]), "--output", str(out_dir), "--tp", "2"
    )
    assert result.returncode == 0, result.stderr
    assert "convert" in result.stderr and "100%" in result.stderr  # the progress bar
    assert (out_dir / "gpt2-vocab.json").is_file()
    out, _ = generate(out_dir, "--tp", "2", "--prompt-ids", "2,8,9,10", "--max-new-tokens", "5")
    assert out["token_ids"] == hf_greedy(hf_models["350m_style"], [2, 8, 9, 10], 5)


@pytest.mark.parametrize("args, message", [(["--prompt-ids", "2,x"], "comma-separated"), ([], "required")])
def test_generate_rejects_bad_arguments(hf_dirs, args, message):
    result = run_cli("-m", "inference_worker", "generate", "--checkpoint", str(hf_dirs["pre_ln"]), *args)
    assert result.returncode == 2 and message in result.stderr


def test_generate_explains_an_unusable_checkpoint(tmp_path):
    result = run_cli("-m", "inference_worker", "generate", "--checkpoint", str(tmp_path), "--prompt-ids", "2,5")
    assert result.returncode == 2
    assert "is not an OPT checkpoint directory" in result.stderr and "Traceback" not in result.stderr


def test_generate_explains_a_rank_that_failed(hf_dirs, tmp_path):
    out_dir = tmp_path / "converted"
    assert run_cli("-m", "inference_worker", "convert", "--input", str(hf_dirs["pre_ln"]), "--output", str(out_dir),
                   "--tp", "2").returncode == 0
    damaged = out_dir / "model-tp01-of-02.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    result = run_cli("-m", "inference_worker", "generate", "--checkpoint", str(out_dir), "--tp", "2",
                     "--prompt-ids", "2,5", "--max-new-tokens", "2")
    assert result.returncode == 1
    assert "error: tensor-parallel rank 1 exited with code 1" in result.stderr
    assert "SafetensorError" in result.stderr  # rank 1's own error, without rank 0's traceback above it
    assert not result.stderr.startswith("Traceback")
