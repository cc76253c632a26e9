"""Small random-weight OPT checkpoints in every format the engine reads, built by the tests.

transformers' OPTForCausalLM is the oracle; the checkpoints are written from its weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from inference_worker.engine import writers
from inference_worker.engine.config import OPTConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
VOCAB = 1000
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Researchers request access to large language models for non-commercial work.",
    "Hello world! Tensor parallel inference splits every matrix across ranks.",
    "A licence agreement is signed before weights can be downloaded.",
] * 20

torch.set_num_threads(1)


def hf_config(**overrides) -> transformers.OPTConfig:
    base = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        ffn_dim=256,
        num_attention_heads=4,
        max_position_embeddings=128,
        word_embed_proj_dim=64,
        do_layer_norm_before=True,
    )
    return transformers.OPTConfig(**{**base, **overrides})


VARIANTS = {
    "pre_ln": {},
    "350m_style": {"do_layer_norm_before": False, "word_embed_proj_dim": 32},
}


def random_hf_model(config, seed: int = 0) -> transformers.OPTForCausalLM:
    """Weights large enough that greedy decoding does not collapse to one token, each a float16
    value (held in float32), so that checkpoints written in float16 as Meta's were hold them exactly."""
    torch.manual_seed(seed)
    model = transformers.OPTForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.uniform_(0.8, 1.2)
            else:
                p.normal_(0.0, 0.25 if "embed" in name else 0.15)
            p.copy_(p.half().float())
    return model


def write_tokenizer(path: Path, metaseq_names: bool = False) -> None:
    writers.train_tokenizer(path, CORPUS, vocab_size=400, metaseq_names=metaseq_names)


def save_hf(model, path: Path, fmt: str = "safetensors", shards: int = 1) -> Path:
    """An HF directory: safetensors via save_pretrained, or ``.bin`` files written by torch.save."""
    path.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        size = "30KB" if shards > 1 else "1GB"
        model.save_pretrained(path, max_shard_size=size)
    else:
        model.config.save_pretrained(path)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        if shards == 1:
            torch.save(state, path / "pytorch_model.bin")
        else:
            keys = list(state)
            weight_map = {}
            for i in range(shards):
                name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
                chunk = keys[i::shards]
                torch.save({k: state[k] for k in chunk}, path / name)
                weight_map.update({k: name for k in chunk})
            (path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    write_tokenizer(path)
    return path


def canonical_state(model) -> dict[str, torch.Tensor]:
    """A transformers model's weights by the engine's canonical names (tied LM head dropped)."""
    return {k.removeprefix("model."): v for k, v in model.state_dict().items() if k != "lm_head.weight"}


def metaseq_parts(model, n_parts: int) -> list[dict[str, torch.Tensor]]:
    """The model's weights as metaseq model-parallel part state dicts (fused qkv in k, v, q order)."""
    assert model.config.num_attention_heads % n_parts == 0
    return writers.metaseq_parts(canonical_state(model), n_parts)


def metaseq_args(config, n_parts: int = 1) -> dict:
    """metaseq's model args for a transformers config, as a plain dict."""
    return vars(writers.metaseq_model_args(OPTConfig.from_hf_dict(config.to_dict()), n_parts))


def save_metaseq(model, path: Path, n_parts: int, cfg_style: str = "dict", single_file: bool = False) -> Path:
    """metaseq consolidated parts with the model args in ``cfg`` as a dict or a Namespace."""
    path.mkdir(parents=True, exist_ok=True)
    args = metaseq_args(model.config, n_parts)
    cfg = {"model": args} if cfg_style == "dict" else {"model": argparse.Namespace(**args)}
    for p, state in enumerate(metaseq_parts(model, n_parts)):
        name = "reshard.pt" if single_file else f"reshard-model_part-{p}.pt"
        torch.save({"model": state, "cfg": cfg}, path / name)
    write_tokenizer(path, metaseq_names=True)
    return path


save_fsdp_shards = writers.save_fsdp_part


@pytest.fixture(scope="session")
def hf_models():
    return {name: random_hf_model(hf_config(**overrides), seed=i) for i, (name, overrides) in enumerate(VARIANTS.items())}


@pytest.fixture(scope="session")
def hf_dirs(hf_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {name: save_hf(model, root / name) for name, model in hf_models.items()}


@pytest.fixture(scope="session")
def metaseq_dirs(hf_models, tmp_path_factory):
    """metaseq checkpoints with 2 parts of each variant (a part count unlike most target TPs)."""
    root = tmp_path_factory.mktemp("metaseq")
    return {name: save_metaseq(model, root / name, n_parts=2) for name, model in hf_models.items()}


def hf_greedy(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    out = model.generate(
        torch.tensor([prompt]),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=2,
        pad_token_id=1,
    )
    return out[0, len(prompt):].tolist()


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def run_cli(*args: str, env: dict | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=environment, cwd=REPO_ROOT, timeout=timeout
    )


PROMPTS = [[2, 31, 7, 400, 12, 9], [2, 5, 600], [2, 8, 8, 9, 100, 101, 102, 103, 104, 7, 3]]


@pytest.fixture(scope="session")
def playground_checkpoint(tmp_path_factory) -> Path:
    """A tiny HF checkpoint with a tokenizer, served by the playground's worker processes in tests."""
    model = random_hf_model(hf_config(max_position_embeddings=2048), seed=7)  # room for long jobs
    return save_hf(model, tmp_path_factory.mktemp("playground") / "opt-play")


@pytest.fixture(scope="session")
def slow_checkpoint(tmp_path_factory) -> Path:
    """A larger random OPT (about 3 ms a token on one thread), so that a job is still generating when
    a test stops, kills or drains its worker."""
    config = hf_config(hidden_size=384, num_hidden_layers=6, ffn_dim=1536, num_attention_heads=6,
                       word_embed_proj_dim=384, max_position_embeddings=2048)
    return save_hf(random_hf_model(config, seed=11), tmp_path_factory.mktemp("playground-slow") / "opt-play")
