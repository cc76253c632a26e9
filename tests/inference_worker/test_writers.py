"""Our writers write what Meta published: the facts below come from metaseq's trainer,
``reshard_fsdp.py``, ``reshard_mp.py``, ``checkpoint_utils.py`` and ``opt_baselines.py``, and from
fairscale's FSDP ``local_metadata_dict`` — not from our own reader."""

import argparse
import json

import pytest
import torch
from safetensors import safe_open

from inference_worker.engine import writers
from inference_worker.engine.config import OPTConfig

CONFIG = OPTConfig(n_layers=2, hidden=64, n_heads=4, ffn_hidden=256, vocab_size=1000, max_positions=128,
                   word_embed_dim=64)
PROJECTED = CONFIG.replace(word_embed_dim=32, pre_layer_norm=False, final_layer_norm=False)  # 350m's shape
METASEQ_KEYS = {"model", "cfg", "criterion", "optimizer_history", "task_state", "extra_state"}
LAYER_ORDER = ["self_attn.qkv_proj.weight", "self_attn.qkv_proj.bias", "self_attn.out_proj.weight",
               "self_attn.out_proj.bias", "self_attn_layer_norm.weight", "self_attn_layer_norm.bias", "fc1.weight",
               "fc1.bias", "fc2.weight", "fc2.bias", "final_layer_norm.weight", "final_layer_norm.bias"]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def state():
    return writers.random_state(CONFIG, seed=3)


def assert_metaseq_training_state(checkpoint, n_parts):
    assert METASEQ_KEYS <= set(checkpoint)
    # what checkpoint_utils._upgrade_state_dict and reshard_mp read without a default
    history = checkpoint["optimizer_history"][-1]
    assert {"criterion_name", "optimizer_name", "lr_scheduler_state", "num_updates"} <= set(history)
    assert checkpoint["extra_state"]["train_iterator"]["epoch"] == 1
    assert "args" in checkpoint
    cfg = checkpoint["cfg"]
    assert cfg["common"]["model_parallel_size"] == n_parts
    assert cfg["common"]["memory_efficient_fp16"] is True
    assert cfg["task"]["_name"] == "streaming_language_modeling"
    model = cfg["model"]
    assert isinstance(model, argparse.Namespace)
    assert model.arch == "transformer_lm_megatron"
    assert model.activation_fn == "relu"
    assert model.decoder_learned_pos is True
    assert model.share_decoder_input_output_embed is True
    assert model.no_scale_embedding is True
    assert model.model_parallel_size == n_parts
    assert (model.decoder_layers, model.decoder_embed_dim, model.decoder_ffn_embed_dim,
            model.decoder_attention_heads) == (2, 64, 256, 4)


def test_consolidated_parts_carry_metaseqs_keys_config_and_float16_without_the_tied_copy(state, tmp_path):
    writers.save_metaseq(state, CONFIG, tmp_path, n_parts=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reshard-model_part-0.pt", "reshard-model_part-1.pt"]
    for file in tmp_path.iterdir():
        checkpoint = load(file)
        assert_metaseq_training_state(checkpoint, n_parts=2)
        assert checkpoint["shard_metadata"] == {}  # as reshard_fsdp leaves it after unflattening
        model = checkpoint["model"]
        assert "decoder.output_projection.weight" not in model
        assert all(t.dtype == torch.float16 for t in model.values())
        assert torch.equal(model["decoder.version"], torch.tensor([3.0], dtype=torch.float16))
        assert model["decoder.embed_tokens.weight"].shape == (500, 64)  # split by rows across parts
        assert model["decoder.layers.0.self_attn.qkv_proj.weight"].shape == (96, 64)  # k, v, q of 2 heads


def test_raw_fsdp_shards_carry_fairscales_metadata(tmp_path):
    state = writers.random_state(PROJECTED, seed=4)
    writers.save_fsdp_shards(state, PROJECTED, tmp_path, n_parts=1, n_shards=3)
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == [f"checkpoint_last-model_part-0-shard{s}.pt" for s in range(3)]
    for file in files:
        checkpoint = load(file)
        assert_metaseq_training_state(checkpoint, n_parts=1)
        metadata = checkpoint["shard_metadata"]
        assert metadata["buffer_names"] == ["decoder.version"]
        assert set(checkpoint["model"]) == {"flat_param_0", "decoder.version"} | {
            f"decoder.layers.{i}.flat_param_0" for i in range(2)}
        assert all(t.dtype == torch.float16 for t in checkpoint["model"].values())
        root, *layers = metadata["param_metadata"]
        for entry in metadata["param_metadata"]:
            assert set(entry) == {"fsdp_path", "params", "no_broadcast_optim_state", "shared_param_info"}
            assert entry["no_broadcast_optim_state"] is False
            assert list(entry["params"]["flat_param_0"]) == ["names", "shapes", "numels", "padding"]
            assert not any("_fpw_module" in n or "_fsdp_wrapped_module" in n
                           for n in entry["params"]["flat_param_0"]["names"])
        assert root["fsdp_path"] == ""
        assert root["shared_param_info"] == [("decoder.embed_tokens.weight", "decoder.output_projection.weight")]
        assert root["params"]["flat_param_0"]["names"] == [
            "decoder.embed_tokens.weight", "decoder.project_in_dim.weight", "decoder.embed_positions.weight",
            "decoder.project_out_dim.weight"]
        assert [e["fsdp_path"] for e in layers] == ["decoder.layers.0", "decoder.layers.1"]
        assert layers[0]["shared_param_info"] == []
        assert layers[0]["params"]["flat_param_0"]["names"] == LAYER_ORDER
        # the root's flat parameter is its own tensors and padding, with no second copy of the embedding
        root_meta = root["params"]["flat_param_0"]
        assert sum(root_meta["numels"]) == sum(
            t.numel() for n, t in state.items() if not n.startswith("decoder.layers."))
    chunks = [load(f)["model"]["flat_param_0"] for f in files]
    paddings = [load(f)["shard_metadata"]["param_metadata"][0]["params"]["flat_param_0"]["padding"] for f in files]
    assert sum(c.numel() for c in chunks) - sum(paddings) == sum(root_meta["numels"])


def test_fairscales_own_consolidation_rebuilds_the_consolidated_parts(state, tmp_path):
    """fairscale's ``FullyShardedDataParallel.consolidate_shard_weights``, which metaseq's
    ``stitch_fsdp_ckpt`` calls, reads our shards and gives back exactly our consolidated parts."""
    from fairscale.nn.data_parallel import FullyShardedDataParallel

    writers.save_fsdp_shards(state, CONFIG, tmp_path, n_parts=2, n_shards=3)
    for part, expected in enumerate(writers.metaseq_parts(state, 2)):
        shards = [load(tmp_path / f"checkpoint_last-model_part-{part}-shard{s}.pt") for s in range(3)]
        consolidated = FullyShardedDataParallel.consolidate_shard_weights(
            shard_weights=[s["model"] for s in shards], shard_metadata=[s["shard_metadata"] for s in shards])
        assert set(consolidated) == set(expected)
        for key, tensor in expected.items():
            assert torch.equal(consolidated[key], tensor), key


def test_hugging_face_variant_is_float16_with_the_head_tied(state, tmp_path):
    writers.save_hf(state, CONFIG, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["torch_dtype"] == "float16" and config["tie_word_embeddings"] is True
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        assert "lm_head.weight" not in f.keys()
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
